"""The client contract: ``connect()`` and ``Connection.run() -> Result``.

The CLI, the prompt and batch mode are thin layers over this module.  One
``Connection`` runs any number of commands, one at a time, over one of two
backends (client.backend): client.native for an rshell server, ssh.client
for ``ssh://`` targets.  Everything a user can tell apart is decided here,
once: ``run``/``stream``, ``check`` -> CommandFailed, the Result, the error
reason (the server's, else result.silent_failure over the bytes received,
whether kept or handed to callbacks), ``cwd`` bookkeeping and signals, and
what leaving a command early means: a stream closed or collected
unfinished, a callback that raised, a KeyboardInterrupt (the CLI's third
Ctrl-C) all stop the remote command (SIGTERM, SIGKILL after a grace) and
leave the connection ready for the next one (client.backend).

Must not import click, paramiko, cryptography (the backends load what they
need lazily) or the server side.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING

from rshell.client.backend import (
    STDOUT,
    Backend,
    Chunk,
    Finish,
    Pty,
    Request,
    Wakeup,
    check_env,
)
from rshell.client.hostkeys import HostKeyPolicy
from rshell.client.options import CONNECT_TIMEOUT, AskHost, ConnectOptions, Passphrase
from rshell.client.stdin import StdinSource, pump_for
from rshell.errors import CommandFailed, ConnectionFailed, RshellError, UsageError
from rshell.paths import config_file
from rshell.result import Result, silent_failure

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rshell.client.config import Config
    from rshell.client.copy import Paths
    from rshell.client.terminal import Terminal
    from rshell.result import Copied
    from rshell.transfer.send import Progress

Callback = Callable[[bytes | memoryview], object]
__all__ = ["AskHost", "Callback", "Connection", "Passphrase", "RunStream", "connect", "preload"]


def connect(
    target: str,
    *,
    port: int | None = None,
    identity: str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    known_hosts: str | os.PathLike[str] | None = None,
    strict_host_keys: bool = False,
    accept_new: bool = False,
    ask: AskHost | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    tls: bool = True,
    auth: bool = True,
    on_warning: Callable[[str], None] | None = None,
    config: Config | None = None,
) -> Connection:
    """Open an authenticated session to ``target`` (``host``, ``host:port``, ``[v6]:port``,
    or ``ssh://[user@]host[:port]`` for any sshd, keys and ~/.ssh/known_hosts as ssh's),
    or to an alias of ``$RSHELL_HOME/config.toml`` (``config``: another, already loaded).

    Uses the CLI's files: the identity (``-i``, else ``$RSHELL_HOME/id_ed25519``,
    else ``~/.ssh/id_*``) and ``$RSHELL_HOME/known_hosts``.  An unknown host
    key is refused with ``strict_host_keys``, offered to ``ask`` if given
    (unless ``accept_new``), and otherwise pinned with a notice on stderr; a
    changed one is always refused.  ``auth=False`` offers no key (for a
    ``--no-auth`` server); a server that asks for none while we offer one is
    reported through ``on_warning`` (default: stderr).
    """
    if config is not None or os.path.exists(config_file()):
        # Only then: the module costs a cold one-shot 4 ms (its dataclasses).
        from rshell.client.config import load, resolve

        resolved = resolve(target, config or load(), port=port,
                           identity=os.fspath(identity) if identity is not None else None)
        target, port, identity = resolved.target, resolved.port, resolved.identity
    options = ConnectOptions(
        port=port, identity=identity, passphrase=passphrase, known_hosts=known_hosts,
        strict_host_keys=strict_host_keys, accept_new=accept_new, ask=ask,
        connect_timeout=connect_timeout, tls=tls, auth=auth, on_warning=on_warning,
    )
    policy = HostKeyPolicy.of(options)
    backend: Backend
    if target.startswith("ssh://"):
        from rshell.ssh.client import open_ssh

        backend = open_ssh(target, options, policy)
    else:
        from rshell.client.handshake import open_native

        backend = open_native(target, options, policy)
    return Connection(backend)


#: What opening a connection imports on its way, per backend.
_NATIVE_MODULES = ("rshell.client.handshake", "rshell.client.native", "rshell.trust.keys",
                   "rshell.trust.known_hosts", "rshell.trust.tls", "rshell.client.screen")
_SSH_MODULES = ("rshell.ssh.client", "rshell.ssh.identity", "rshell.ssh.files")


def preload(*, native: bool = True, ssh: bool = False) -> None:
    """Import now, in this thread, what ``connect`` would import lazily: a
    fleet's threads then never import the same modules at once (each would
    wait on the import lock, and one could see a module another is still
    making)."""
    import importlib

    for name in (_NATIVE_MODULES if native else ()) + (_SSH_MODULES if ssh else ()):
        importlib.import_module(name)


class Connection:
    """An open session to one server; see ``run``.

    Attributes: ``host``, ``port``, ``address``, ``cwd`` (the session's
    directory as of the last command), ``home``, ``server`` and ``user`` (as
    the server announced them), ``host_fingerprint``.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._wake = Wakeup()
        self._running = False
        self.host, self.port, self.address = backend.host, backend.port, backend.address
        self.server, self.user = backend.server, backend.user
        self.home = self.cwd = backend.home

    @property
    def terminals(self) -> bool:
        """Whether the server can run commands on a terminal (``pty=True``,
        ``terminal()``); an rshell-server older than terminals cannot."""
        return self._backend.terminals

    @property
    def host_fingerprint(self) -> str | None:
        """The server's host key fingerprint, once proven (None without TLS)."""
        return self._backend.host_fingerprint

    @property
    def closed(self) -> bool:
        return self._backend.closed

    def close(self) -> None:
        """Close the connection; a running command on the server is terminated."""
        self._backend.close()
        self._wake.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_signal(self, signum: int) -> None:
        """Deliver a signal to the running command; safe from any thread or signal
        handler.  Ignored when no command is running."""
        self._wake.post(signum)

    def resize(self, cols: int, rows: int) -> None:
        """The running command's terminal is this size now (SIGWINCH there);
        safe from any thread or signal handler.  Ignored without a terminal."""
        self._wake.resize(cols, rows)

    def run(
        self,
        command: str,
        *,
        stdin: StdinSource = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = False,
        on_stdout: Callback | None = None,
        on_stderr: Callback | None = None,
        pty: bool = False,
        term: str | None = None,
        size: tuple[int, int] | None = None,
    ) -> Result:
        """Run one command to completion and return its Result.

        Output streamed to a callback is not kept in the Result (so gigabytes
        can pass through in constant memory); otherwise it is collected.
        Any exit status returns a Result; ``check=True`` raises CommandFailed
        when ``result.ok`` is false.  ``pty=True`` runs it on a terminal of
        type ``term`` (default: the local ``$TERM``, else ``xterm``) and
        ``size`` (cols, rows; default 80x24): output arrives merged, as
        stdout, with a terminal's line endings; an empty command is the
        account's login shell.
        """
        started = time.monotonic()
        out, err = bytearray(), bytearray()
        sinks = (None, on_stdout or out.extend, on_stderr or err.extend)
        seen = 0
        events = self._exchange(command, stdin, cwd, env, timeout,
                                terminal(term, size) if pty else None)
        try:
            while True:
                fd, data = next(events)
                seen += len(data)
                sinks[fd](data)  # type: ignore[misc]  # 1 and 2 are set
        except StopIteration as stop:
            finish: Finish = stop.value
        finally:
            events.close()  # left early (a callback raised): the command is stopped
        result = self._result(command, finish, bytes(out), bytes(err), seen, started)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def stream(
        self,
        command: str,
        *,
        stdin: StdinSource = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> RunStream:
        """Iterate over ``("stdout" | "stderr", bytes)`` chunks as they arrive;
        the ``result`` attribute is set once the iterator is exhausted.

        Also a context manager: leaving it, ``close()``, or the stream
        collected unfinished (``for ... in conn.stream(...)`` left by
        ``break`` or an exception) stops the remote command if it still runs
        (``result`` then stays None), and the connection runs the next
        command as usual.  A stream still held can be iterated on later."""
        return RunStream(self, command, self._exchange(command, stdin, cwd, env, timeout))

    def put(self, local: Paths, remote: str, *, recursive: bool = False,
            preserve: bool = False, progress: Progress | None = None) -> Copied:
        """Copy local files (one path or several; directories with
        ``recursive``) to ``remote`` (relative: to the home; with several
        sources, a directory).  ``preserve`` keeps modes and times;
        ``progress(path, done, size)`` is called as bytes go.  Nothing is
        half-written: each file is checked (SHA-256) and renamed into place.
        CopyFailed (with ``.copied``) if any file failed."""
        from rshell.client.copy import upload

        self._idle()
        return upload(self._backend, local, remote, recursive=recursive, preserve=preserve,
                      progress=progress)

    def get(self, remote: str | Sequence[str], local: str | os.PathLike[str], *,
            recursive: bool = False, preserve: bool = False,
            progress: Progress | None = None) -> Copied:
        """Copy remote files (one path or several) to ``local``, as ``put``
        does the other way; names from the server are checked, so nothing
        is written outside ``local``."""
        from rshell.client.copy import download

        self._idle()
        return download(self._backend, remote, local, recursive=recursive, preserve=preserve,
                        progress=progress)

    def _idle(self) -> None:
        """Refuse a command or a copy while another runs, or once closed."""
        if self._running:
            raise RshellError("another command is still running on this connection")
        if self._backend.closed:
            raise ConnectionFailed(f"connection to {self.address} is closed")

    # ---- written once for both backends --------------------------------------------

    def terminal(
        self,
        command: str = "",
        *,
        term: str | None = None,
        size: tuple[int, int] | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Terminal:
        """Start ``command`` (default: the login shell) on a remote terminal
        and return at once an interactive ``Terminal``: write, read, resize,
        close, wait -> Result.  ``term`` and ``size`` as for ``run``."""
        from rshell.client.terminal import Terminal

        return Terminal(self, command, terminal(term, size), cwd, env, timeout)

    def _exchange(
        self, command: str, stdin: StdinSource, cwd: str | None,
        env: Mapping[str, str] | None, timeout: float | None, pty: Pty | None = None,
    ) -> Generator[Chunk, None, Finish]:
        self._idle()
        request = Request(command, cwd, self.cwd, check_env(env), timeout, pump_for(stdin),
                          pty)
        self._wake.take()  # a signal posted between commands is for nobody
        self._running = True
        try:
            return (yield from self._backend.execute(request, self._wake))
        finally:
            self._running = False

    def _result(self, command: str, finish: Finish, out: bytes, err: bytes, seen: int,
                started: float) -> Result:
        """The one Result rule: the server's reason, else silent_failure over
        every byte that arrived (kept or not); the session's new directory."""
        self.cwd = finish.cwd or self.cwd
        duration = finish.duration
        return Result(
            command=command, exit_code=finish.exit_code, signal=finish.signal, stdout=out,
            stderr=err, host=self.address,
            error=finish.error or silent_failure(finish.exit_code, finish.signal, seen),
            duration=time.monotonic() - started if duration is None else duration,
        )


def terminal(term: str | None, size: tuple[int, int] | None) -> Pty:
    """The terminal a command asked for: the local ``$TERM`` unless told."""
    cols, rows = size or (80, 24)
    if not (isinstance(cols, int) and isinstance(rows, int) and 0 < cols < 65536
            and 0 < rows < 65536):
        raise UsageError(f"size must be (cols, rows) in 1..65535, not {size!r}")
    return Pty(term or os.environ.get("TERM") or "xterm", cols, rows)


class RunStream:
    """Iterator over one command's output; ``result`` once it is exhausted.
    ``close()`` (or leaving ``with``) stops the command if it still runs."""

    def __init__(
        self, conn: Connection, command: str, events: Generator[Chunk, None, Finish]
    ) -> None:
        self._conn = conn
        self._command = command
        self._events = events
        self._started = time.monotonic()
        self._over = False
        self.result: Result | None = None

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        seen = 0
        try:
            while not self._over:
                fd, data = next(self._events)
                seen += len(data)
                yield ("stdout" if fd == STDOUT else "stderr"), bytes(data)
        except StopIteration as stop:
            self._over = True
            self.result = self._conn._result(self._command, stop.value, b"", b"", seen,
                                             self._started)

    def close(self) -> None:
        """Stop the command if it still runs (bounded: SIGTERM, SIGKILL after a
        grace, its end awaited); the connection stays usable."""
        self._over = True
        self._events.close()

    def __enter__(self) -> RunStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Dropped unfinished: ``for ... in conn.stream(...)`` left by break or
        # an exception (its loop held the only reference).  A stream still
        # held may be iterated again, from where it was left.
        try:
            self.close()
        except Exception:  # noqa: BLE001  # at interpreter exit, say: nothing to do
            pass
