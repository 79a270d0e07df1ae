"""Starting and stopping the daemon process: flags to config, logging, signals.

Must not import click (cli.py parses the flags and calls ``run_server``).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rshell.errors import ConfigError, UsageError
from rshell.paths import DEFAULT_PORT, parse_hostport, rshell_home

if TYPE_CHECKING:
    from rshell.server.admission import Penalties
    from rshell.server.listener import Daemon
    from rshell.server.settings import Settings

log = logging.getLogger("rshell.server")


class _JsonFormatter(logging.Formatter):
    """One object per line: time, level, the text, and the line's facts as
    keys of their own (``fields``, exec/record.py), never overriding those three."""

    def format(self, record: logging.LogRecord) -> str:
        line = getattr(record, "fields", None) or {}
        return json.dumps({
            **line, "time": round(record.created, 3), "level": record.levelname.lower(),
            "message": record.getMessage(),
        }, default=str)


class _RawQueueHandler(logging.handlers.QueueHandler):
    """Enqueue the record as it is: formatting (the costly part) happens in
    the writer thread.  Our log arguments are immutable values, so nothing
    can change between the call and the write."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


#: How long the log writer lets records gather before one write (a burst of
#: commands then costs one wake-up and one syscall, not one each).
_LOG_COALESCE = 0.02


class _LogWriter(threading.Thread):
    """Formats and writes queued records in batches, off the sessions' threads."""

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord | None],
                 formatter: logging.Formatter) -> None:
        super().__init__(name="log writer", daemon=True)
        self.records = records
        self.formatter = formatter

    def run(self) -> None:
        get, get_now = self.records.get, self.records.get_nowait
        while True:
            first = get()
            if first is None:
                return
            time.sleep(_LOG_COALESCE)
            batch, done = [first], False
            while True:
                try:
                    record = get_now()
                except queue.Empty:
                    break
                if record is None:
                    done = True
                    break
                batch.append(record)
            text = "".join(self.formatter.format(r) + "\n" for r in batch)
            try:
                sys.stderr.write(text)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # stderr gone: the audit log, if any, still has the facts
            if done:
                return

    def stop(self) -> None:
        self.records.put(None)
        self.join(5)


def _setup_logging(fmt: str) -> Callable[[], None]:
    """Log through a queue: a session thread only enqueues its record, and a
    writer thread formats and writes records in batches, off the command's
    critical path.  Returns the function that flushes and stops the writer."""
    formatter: logging.Formatter = _JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s rshell-server %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    # Neither format shows the caller or process: not computing them for each
    # record is the logging HOWTO's "Optimization" advice, and a copy of many
    # small files logs one record per file.  (The thread's name stays: it
    # names the peer of paramiko's lines, ssh/_paramiko.py.)
    logging._srcfile = None
    logging.logProcesses = logging.logMultiprocessing = False
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    writer = _LogWriter(records, formatter)
    root = logging.getLogger("rshell")
    root.handlers[:] = [_RawQueueHandler(records)]
    root.setLevel(logging.INFO)
    root.propagate = False
    writer.start()
    return writer.stop


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _trusted(path: Path, what: str, strict: bool, *, private: bool = False) -> None:
    """StrictModes (trust/modes.py) for a file the server relies on: refuse
    to start on it, or, with --strict-modes=no, say loudly that it is used."""
    from rshell.trust import modes

    found = modes.problem(path, private=private)
    if not found:
        return
    if strict:
        raise ConfigError(f"refusing {what} {path}: {found} (fix it, or --strict-modes=no)")
    log.warning("%s %s is not safe: %s; used anyway (--strict-modes=no)", what, path, found)


def _make_private_dirs(path: Path) -> None:
    """mkdir -p, each new level 0700 whatever the umask (a 0775 parent made
    under umask 002 would fail the strict check, and deserve to)."""
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    for level in reversed(missing):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile; the strict check judges it


def _host_identity(state: Path, no_tls: bool, strict: bool) -> tuple[Any, Any, bytes]:
    """Load (first start: generate) the host key; build the TLS context from it."""
    from rshell.trust import keys

    _make_private_dirs(state)
    _trusted(state, "state directory", strict)
    path = state / "host_key"
    _trusted(path, "host key", strict, private=True)
    fresh = not path.exists()
    host_key = keys.load_host_key(path)
    fp = keys.fingerprint(host_key.public_key())
    if fresh:
        log.info("generated host key %s (%s)", path, fp)
    log.info("host key fingerprint %s", fp)
    if no_tls:
        return host_key, None, b""
    from rshell.trust import tls

    return host_key, tls.server_context(host_key, state), keys.public_blob(host_key.public_key())


def _provision_authorized_keys(path: Path) -> None:
    """First start: authorize the current user's rshell key, and nobody else's."""
    import os

    from rshell.errors import KeyFileError
    from rshell.trust import keys

    identity = rshell_home() / "id_ed25519"
    if not identity.exists():
        try:
            keys.write_key_pair(identity, keys.generate("ed25519"), keys.default_comment())
            log.info("generated your rshell key pair %s", identity)
        except KeyFileError:
            if not identity.exists():
                raise  # not a twin server's first start that made it meanwhile
    try:
        line = Path(f"{identity}.pub").read_text().strip()
    except FileNotFoundError:  # its maker has not written it yet (or it was removed)
        line = keys.public_line(keys.load_identity(identity).key.public_key(), "")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # a twin server's first start made it meanwhile
    with os.fdopen(fd, "w") as f:
        f.write(line + "\n")
    log.info("created %s holding %s: `rshell localhost` works for this user, and nobody else",
             path, f"{identity}.pub")


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _ssh_listeners(addresses: list[tuple[str, int]], host_key: Path, daemon: Daemon) -> None:
    """The --ssh-bind listeners (paramiko is imported only when asked for)."""
    if not addresses:
        return
    from rshell.ssh.server import SshServer

    try:
        for address in addresses:
            daemon.add(SshServer(address, daemon, str(host_key)))
    except OSError as exc:
        raise UsageError(f"cannot listen for ssh: {exc.strerror or exc}") from None


def _settle_process(home: str) -> None:
    """Work from the home directory sessions start in, so that their commands
    take execution's posix_spawn fast path; and make every inherited
    descriptor close-on-exec, since posix_spawn (unlike Popen) closes none."""
    try:
        os.chdir(home)
    except OSError as exc:
        log.warning("cannot enter %s (%s); commands start there via the slower path",
                    home, exc.strerror)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the directory listing's own descriptor, already closed


def run_server(*, log_format: str, **options: Any) -> int:
    """Run until SIGTERM, SIGINT or SIGHUP; return 0 after a clean shutdown.

    ``options`` are the rshell-server flags (cli.server_command), by name.
    """
    stop_logging = _setup_logging(log_format)
    try:
        return _serve(**options)
    finally:
        stop_logging()


def _serve(
    *, binds: tuple[str, ...], ssh_binds: tuple[str, ...], no_auth: bool,
    allow_unauthenticated_remote: bool, max_connections: int, max_unauthenticated: int,
    per_source_penalties: str, penalty_max: float, shutdown_grace: float, **flags: Any,
) -> int:
    from rshell.exec import sweep
    from rshell.server.listener import Daemon

    addresses = [parse_hostport(b, DEFAULT_PORT, listen=True)
                 for b in binds or (() if ssh_binds else ("127.0.0.1",))]
    ssh_addresses = [parse_hostport(b, 22, listen=True) for b in ssh_binds]
    if no_auth and not allow_unauthenticated_remote:
        remote = [h for h, _ in addresses + ssh_addresses if not _is_loopback(h)]
        if remote:
            raise UsageError(
                f"--no-auth on non-loopback address {remote[0]} refused; add "
                "--allow-unauthenticated-remote if you really mean it"
            )
    settings, tls_context, state = _settings(no_auth=no_auth, **flags)
    _settle_process(settings.home)
    try:
        daemon = Daemon(addresses, settings, tls_context, max_connections=max_connections,
                        max_unauthenticated=max_unauthenticated,
                        penalties=_penalties(per_source_penalties, penalty_max))
    except OSError as exc:
        raise UsageError(f"cannot listen: {exc.strerror or exc}") from None
    wake = _catch_stop_signals()
    _ssh_listeners(ssh_addresses, state / "host_key", daemon)
    registry = str(state / "servers")  # the server processes started on this state
    orphans = sweep.kill_orphans(registry)
    if orphans:
        log.warning("killed %d process(es) left by a server that died: %s", len(orphans), orphans)
    daemon.start()
    for srv in daemon.listeners:
        log.info("%slistening on %s", "ssh " if srv.kind == "ssh" else "", srv.address)
    if settings.audit:
        settings.audit.event("server-start", addresses=daemon.addresses, pid=os.getpid(),
                             orphans_killed=orphans)
    received: list[int] = []
    while not any(s in _STOP_SIGNALS for s in received):
        received += os.read(wake, 64)
    _stop(daemon, settings, signal.Signals(received[-1]).name, shutdown_grace)
    sweep.unregister(registry)  # a clean stop leaves nothing for the next start to sweep
    return 0


def _penalties(per_source_penalties: str, penalty_max: float) -> Penalties | None:
    """The --per-source-penalties and --penalty-max flags as Admission takes them."""
    from rshell.server.admission import Penalties

    if per_source_penalties == "yes":
        return Penalties(max=penalty_max)
    log.warning("PER-SOURCE PENALTIES DISABLED (--per-source-penalties no): a source that "
                "keeps abandoning handshakes can crowd real users out")
    return None


def _settings(
    *, state_dir: str | None, authorized_keys: str | None, no_tls: bool, no_auth: bool,
    timeout: float, max_output: int, auth_timeout: float, shell: str, audit_log: str | None,
    idle_timeout: float, max_commands: int, max_sessions: int, strict_modes: str = "yes",
    home: str | None = None, record_dir: str | None = None, record_input: bool = False,
) -> tuple[Settings, Any, Path]:
    """The flags as frozen Settings (first start: keys provisioned), the TLS
    context, and the state directory."""
    from rshell.exec import sweep
    from rshell.exec.environment import login_home
    from rshell.exec.policy import Limits
    from rshell.server.settings import Settings

    if not Path(shell).is_file():
        raise UsageError(f"--shell {shell}: no such file")
    if home is not None and not Path(home).is_dir():
        raise UsageError(f"--home {home}: no such directory")
    if record_input and record_dir is None:
        raise UsageError("--record-input needs --record-dir")
    strict = strict_modes == "yes"
    if not strict:
        log.warning("STRICT MODES DISABLED (--strict-modes=no): files other accounts can "
                    "write (authorized_keys, host key, state, audit log) are trusted")
    state = (Path(state_dir) if state_dir else rshell_home() / "server").absolute()
    _, tls_context, host_blob = _host_identity(state, no_tls, strict)
    authorized = None
    if not no_auth:
        from rshell.trust.authorized_keys import AuthorizedKeys

        path = Path(os.path.abspath(authorized_keys)) if authorized_keys \
            else state / "authorized_keys"
        if authorized_keys is None and not path.exists():
            _provision_authorized_keys(path)
        _trusted(path, "authorized_keys", strict)
        authorized = AuthorizedKeys(path, strict=strict)
        log.info("authorized keys: %s", path)
    audit = None
    if audit_log is not None:
        from rshell.server.audit import AuditLog

        _trusted(Path(os.path.abspath(audit_log)), "audit log", strict)
        audit = AuditLog(os.path.abspath(audit_log))
    records = _record_dir(record_dir, record_input, strict)
    if no_tls:
        log.warning("TLS DISABLED (--no-tls): traffic, commands and output travel in clear")
    if no_auth:
        log.warning("AUTHENTICATION DISABLED (--no-auth): anyone who connects runs commands")
    settings = Settings(
        limits=Limits(shell=os.path.abspath(shell), timeout=timeout, max_output=max_output,
                      max_commands=max_commands, record_dir=records,
                      record_input=record_input),
        auth_timeout=auth_timeout, authorized=authorized, host_key_blob=host_blob,
        idle_timeout=idle_timeout, audit=audit, sweeper=sweep.Sweeper(),
        home=os.path.abspath(home) if home is not None else login_home(),
        max_sessions=max_sessions,
    )
    return settings, tls_context, state


def _record_dir(record_dir: str | None, record_input: bool, strict: bool) -> str | None:
    """--record-dir: made 0700 if missing, and judged as the state directory
    is (StrictModes): recordings hold whatever terminals showed."""
    if record_dir is None:
        return None
    path = Path(os.path.abspath(record_dir))
    _make_private_dirs(path)
    if not path.is_dir():
        raise UsageError(f"--record-dir {path}: not a directory")
    _trusted(path, "record directory", strict)
    log.info("recording terminal sessions in %s", path)
    if record_input:
        log.warning("RECORDING INPUT (--record-input): what clients type, passwords typed at "
                    "prompts included, is written to the recordings")
    return str(path)


def _catch_stop_signals() -> int:
    """SIGTERM, SIGINT, SIGHUP as bytes on a pipe the main thread reads.

    The kernel may deliver SIGTERM to any thread; the interpreter then runs
    the Python handler only when the main thread next executes bytecode.
    The C-level handler, though, writes the signal number to the wake-up fd
    whichever thread caught it, so the main thread blocks reading that fd.
    (A lock, e.g. Event.set, in a handler could also deadlock the main thread.)
    """
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        pass  # the wake-up fd carries it; this only replaces the default action

    # SIGHUP too (a closed terminal, a dropped login): a graceful stop, never
    # the default death that would leave running commands orphaned.
    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    # An ignored SIGCHLD (inherited from whoever started us) would make the
    # kernel reap commands itself, and waitid on them fail: take the default.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    return wake_r


def _stop(daemon: Daemon, settings: Settings, name: str, grace: float) -> None:
    """The graceful stop: every connection's commands get ``grace``, then the
    sweeps, then what still carries our marker."""
    from rshell.exec import sweep

    daemon.close_doors()  # first: from here on, a connect is refused
    log.info("%s received: shutting down (grace %gs, %d session(s))",
             name, grace, daemon.session_count)
    started = time.monotonic()
    daemon.stop(grace)
    try:
        if settings.sweeper is not None:
            settings.sweeper.close()  # the last sessions' sweeps, before the audit log closes
        leftovers = sweep.kill_own()
        if leftovers:
            log.warning("killed %d process(es) left by sessions that outlived the stop: %s",
                        len(leftovers), leftovers)
        log.info("stopped in %.2fs", time.monotonic() - started)
    finally:
        if settings.audit:
            settings.audit.event("server-stop", signal=name)
            settings.audit.close()


__all__: list[Any] = ["run_server"]
