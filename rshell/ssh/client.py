"""The SSH backend (client.backend.Backend) for ``ssh://[user@]host[:port]``:
any sshd, through paramiko, with ~/.ssh keys and ~/.ssh/known_hosts.

Only I/O lives here; ``Connection`` (client.api) makes the Result, the
error reason and the ``cd`` bookkeeping, and client.hostkeys decides host
keys.  Each command is one session channel, driven by one loop that polls
the channel's descriptor, the stdin source and the connection's wake-up
pipe (signals, and paramiko's notes that the send window opened or the
exit status came).  Output is read off the channel only as the consumer
takes it, so SSH's flow control holds: paramiko buffers at most one
channel window (2 MiB) per stream, whatever the command writes.

sshd keeps no session, so the backend keeps one for it: each command starts
with the session's variables, ``cd`` into its directory and ``export``s of
``env``.  A lone ``cd [DIR]`` is resolved by the remote shell and the
directory remembered; a lone ``export``/``unset`` (shellwords.lone_assignment,
the engine's rule) runs in the remote shell after the session's variables,
and the values it leaves are remembered, evaluated once as natively (so
``export PATH=$PATH:/x`` twice gives ``/x`` twice, not a fresh evaluation
per command).

A deadline (``timeout``) sends an RFC 4254 ``signal`` request (TERM), waits
``STOP_GRACE``, sends KILL and closes the channel, and reports what the
native server reports: signal TERM, ``timed out after N s``.  A command
left early (client.backend) is stopped the same way, its output read
away; the connection stays usable.  What remains is sshd's:
OpenSSH honours ``signal`` only in privilege-separated sessions (never for
a root login: "session signalling requires privilege separation") and not
for forced commands; closing the channel closes the command's pipes, so a
command that writes or reads there ends (SIGPIPE, EOF), but one that does
neither (``sleep``) runs on.  ``ssh`` itself leaves it running too.

On a terminal (``Request.pty``) the channel asks sshd for a ``pty-req``
(TERM and size) before its ``exec``; an empty command is ``shell``, the
account's login shell as ``ssh -t host`` starts it.  sshd sends the
terminal's output, merged, as channel data (STDOUT).  Window changes are
``window-change`` requests.  The session's prefix (variables, ``cd``,
``env``) goes before a command as usual, but a login shell takes none:
it starts in the login directory with the login environment, and an
explicit ``cwd`` or ``env`` for it is refused (UsageError) rather than
dropped.  A lone ``cd``/``export``/``unset`` runs without a terminal, as
the engine answers them without one.  The end of stdin is the terminal's
EOF character (``EOF_CHAR``), not a channel EOF: sshd turns a channel EOF
on a pty into nothing (it closes its copy of the master; ``ssh -tt host
cat < file`` never ends), while rshell's own listener turns it into the
EOF character, so sending both would end input twice there.  ``SIGHUP``
for a terminal hangs it up (the channel closed: sshd closes the pty, the
kernel signals the session), as sshd may refuse the ``signal`` request
and a hang-up is what SIGHUP means to a terminal.  A refused ``pty-req``
is a refusal (126), as natively, not a command run without a terminal
(``ssh -t`` runs it anyway).  ``~.`` (ConnectionClosed from the keyboard)
closes the whole connection, as ssh's does.

Must not import click, rshell.server or rshell.exec; paramiko's private
API only through ssh._paramiko.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import signal
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import paramiko

from rshell.client.backend import (
    STDERR,
    STDOUT,
    STOP_GRACE,
    Chunk,
    Finish,
    Pty,
    Request,
    Wakeup,
)
from rshell.client.hostkeys import HostKeyPolicy
from rshell.client.options import ConnectOptions, debug, host_and_port
from rshell.client.stdin import Pump
from rshell.errors import (
    AuthenticationFailed,
    ConnectionClosed,
    ConnectionFailed,
    HostKeyError,
    RshellError,
    UsageError,
)
from rshell.paths import format_hostport
from rshell.result import timed_out
from rshell.shellwords import lone_assignment, lone_cd, reserved
from rshell.ssh import _paramiko as door
from rshell.ssh.identity import Keys, Pinning, destination, fingerprint

if TYPE_CHECKING:
    from rshell.client.backend import Tally
    from rshell.transfer.receive import Receiver
    from rshell.transfer.send import Sender

_CHUNK = 64 * 1024
#: stdin chunks sent per turn of the loop before output is looked at again.
_FEED_TURN = 8
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: What the end of stdin becomes on a terminal: VEOF as a fresh pty has it
#: (the engine reads the live VEOF off its master; a client cannot).
EOF_CHAR = b"\x04"


class _Refused(Exception):  # noqa: N818  # a refusal carried to execute's Finish
    """The server refused what the command needs (a terminal)."""


def parse_ssh_target(target: str, port: int | None) -> tuple[str, str, int]:
    """``ssh://[user@]host[:port]`` -> (user, host, port), as written (no
    ~/.ssh/config: ``open_ssh`` applies it), the defaults filled in."""
    import getpass

    user, host, written = _written(target, port)
    return user or getpass.getuser(), host, written or 22


def _written(target: str, port: int | None) -> tuple[str | None, str, int | None]:
    """What the user said: ``user@`` (or None), the host, ``:port`` or ``-p`` (or None)."""
    rest = target[len("ssh://"):].rstrip("/")
    user, _, hostport = rest.rpartition("@")
    host, parsed = host_and_port(hostport, port, 0)
    return user or None, host, parsed or None


def open_ssh(target: str, options: ConnectOptions, policy: HostKeyPolicy) -> SshBackend:
    """Log in to the sshd at ``target`` (~/.ssh/config applied, as ssh does:
    identity.destination) and learn the session's directory."""
    door.silence_logging()  # a failed negotiation is one line from us, no traceback
    user, alias, port = _written(target, options.port)
    to = destination(user, alias, port)
    if (to.host, to.port) != (alias, port or 22):
        debug(1, "~/.ssh/config: %s is %s port %d", alias, to.host, to.port)
        target = f"{target} ({to.user}@{format_hostport(to.host, to.port)})"  # for errors
    backend = SshBackend(to.user, to.host, to.port, options.connect_timeout)
    if to.unfollowed:
        warn = options.on_warning or _stderr_warning
        warn(f"{target}: ~/.ssh/config's {' and '.join(to.unfollowed)} is not supported "
             f"by rshell; connecting directly")
    try:
        backend._login(target, options, policy, to.identity_files)
        backend.home = backend._probe_home()
    except BaseException:
        backend.close()
        raise
    return backend


class SshBackend:
    """One SSH connection; every command gets its own session channel."""

    def __init__(self, user: str, host: str, port: int, connect_timeout: float) -> None:
        self.user, self.host, self.port = user, host, port
        self.address = f"ssh://{user}@{format_hostport(host, port)}"
        self.server = self.home = ""
        self.host_fingerprint: str | None = None
        self._connect_timeout = connect_timeout
        self._client: Any = None
        self._transport: Any = None
        self._previous = ""  # the directory before the last cd, for ``cd -``
        #: The session's lone export/unset: a value, or None for unset.
        self._variables: dict[str, str | None] = {}

    @property
    def terminals(self) -> bool:
        return True  # any sshd may still refuse one, for a key (no-pty): a refusal then

    @property
    def closed(self) -> bool:
        return self._transport is None or not self._transport.is_active()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # ---- files (ssh.files: SFTP) ----------------------------------------------------------

    def put(self, sender: Sender, remote: str, *, recursive: bool, preserve: bool,
            many: bool) -> Tally:
        from rshell.ssh import files

        return files.put(self._client, sender, remote, preserve=preserve, many=many)

    def get(self, paths: list[str], receiver: Receiver, *, recursive: bool,
            preserve: bool) -> Tally:
        from rshell.ssh import files

        return files.get(self._client, paths, receiver, recursive=recursive,
                         preserve=preserve)

    # ---- opening -----------------------------------------------------------------------

    def _login(self, target: str, options: ConnectOptions, policy: HostKeyPolicy,
               files: tuple[str, ...]) -> None:
        known = os.path.expanduser(options.known_hosts or "~/.ssh/known_hosts")
        client = self._client = paramiko.SSHClient()
        if os.path.exists(known):
            try:
                client.load_host_keys(known)
            except (OSError, paramiko.SSHException) as exc:
                raise HostKeyError(f"cannot read {known}: {exc}") from None
        pinning = Pinning(self, policy, known)
        client.set_missing_host_key_policy(pinning)
        keys = Keys(self, options, pinning, files)
        debug(1, "connecting to %s port %d as %s", self.host, self.port, self.user)
        timeout = options.connect_timeout
        try:
            client.connect(self.host, self.port, username=self.user, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, auth_strategy=keys)
        except paramiko.BadHostKeyException as exc:
            self.host_fingerprint = fingerprint(exc.key)
            policy.decide(exc.hostname, self.host_fingerprint, fingerprint(exc.expected_key),
                          known)  # a changed key: refused there, loudly
            raise HostKeyError(f"host key for {exc.hostname} changed") from None
        except paramiko.AuthenticationException as exc:
            raise AuthenticationFailed(f"{target}: {keys.refusal() or exc}") from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            # paramiko's own words are "[Errno None] Unable to connect to port N": say
            # why, as the native backend does ("Connection refused").
            why = sorted({e.strerror or str(e) for e in exc.errors.values()})
            raise ConnectionFailed(f"{target}: {', '.join(why) or exc}") from None
        except door.FAILURES as exc:
            raise ConnectionFailed(f"{target}: {exc}") from None
        finally:
            keys.close()
        transport = self._transport = client.get_transport()
        self.server = transport.remote_version
        self.host_fingerprint = fingerprint(transport.get_remote_server_key())
        door.hear_exit_signals(transport)
        door.rekey_as_openssh(transport)
        debug(1, "authenticated to %s in %.1f ms", self.address,
              (time.monotonic() - keys.started) * 1000)

    def _probe_home(self) -> str:
        """The login directory: the session starts there, as sshd's commands do."""
        wake = Wakeup()
        try:
            run = self._start("pwd", None, self._connect_timeout, wake)
            out = b"".join(bytes(data) for fd, data in _drain(run.chunks()) if fd == STDOUT)
        finally:
            wake.close()
        return out.decode(errors="surrogateescape").strip()

    # ---- commands ------------------------------------------------------------------

    def execute(self, request: Request, wake: Wakeup) -> Generator[Chunk, None, Finish]:
        where = request.session_cwd
        if request.cwd:
            where = os.path.join(where, request.cwd)  # an absolute cwd wins
        lines = [f"export {k}={shlex.quote(v)}" if v is not None else f"unset {k}"
                 for k, v in self._variables.items()]
        lines += [f"cd -- {shlex.quote(where)} || exit 1"] if where else []
        lines += [f"export {k}={shlex.quote(v)}" for k, v in (request.env or {}).items()]
        names = _assigned(request.command)
        if names is not None:
            refusal = reserved(names)
            if refusal is not None:  # as the engine answers it, without running anything
                return Finish(126, error=f"refused: {refusal}")
            return (yield from self._assign(request, lines, names, wake))
        target = _cd_target(request.command) if request.session_cwd else None
        if target is None:
            return (yield from self._command(request, lines, wake))
        # ``cd [DIR]``: the remote shell resolves it (``$VAR``, ``~``, ``-``).
        lines += [f"OLDPWD={shlex.quote(self._previous or where)}",
                  f"cd {target} >/dev/null || exit 1", "pwd"]  # 1 as natively (dash says 2)
        run = self._start("; ".join(lines), request.stdin, request.timeout, wake)
        found = bytearray()
        finish = yield from _keep_stdout(run.chunks(), found)
        if finish.exit_code != 0:
            return finish
        self._previous = request.session_cwd
        cwd = bytes(found).decode(errors="surrogateescape").rstrip("\n")
        return Finish(0, None, finish.error, cwd or None, finish.duration)

    def _assign(self, request: Request, lines: list[str], names: list[str],
                wake: Wakeup) -> Generator[Chunk, None, Finish]:
        """A lone export/unset: the remote shell runs it (and says what is wrong);
        then each name's value, if it has one, comes back on stdout to keep."""
        unset = request.command.strip().startswith("unset")
        report = [] if unset else [
            f'if [ -n "${{{n}+x}}" ]; then printf "%s=%s\\000" {n} "${n}"; fi' for n in names]
        run = self._start("; ".join([*lines, f"{request.command} || exit", *report]),
                          request.stdin, request.timeout, wake)
        found = bytearray()
        finish = yield from _keep_stdout(run.chunks(), found)
        if finish.exit_code == 0:
            if unset:
                self._variables.update(dict.fromkeys(names))
            for item in bytes(found).split(b"\0")[:-1]:
                name, _, value = item.decode(errors="surrogateescape").partition("=")
                if name in names:  # only what was asked for goes into later commands
                    self._variables[name] = value
        return finish

    def _command(self, request: Request, lines: list[str],
                 wake: Wakeup) -> Generator[Chunk, None, Finish]:
        """The command after the session's prefix; on a terminal if asked, where
        an empty one is the login shell (which takes no prefix)."""
        pty = request.pty
        script: str | None = "; ".join([*lines, request.command])
        if pty is not None and not request.command:
            if request.cwd or request.env:
                if request.stdin is not None:
                    request.stdin.close()
                raise UsageError(f"{self.address}: sshd starts the login shell in the login "
                                 "directory with the login environment; give a command to "
                                 "set cwd or env")
            script = None
        try:
            run = self._start(script, request.stdin, request.timeout, wake, pty)
        except _Refused as refused:
            if request.stdin is not None:
                request.stdin.close()
            return Finish(126, error=f"refused: {refused}")
        return (yield from run.chunks())

    def _start(self, command: str | None, stdin: Pump | None, timeout: float | None,
               wake: Wakeup, pty: Pty | None = None) -> _Exec:
        """``command`` on a new channel (None: the login shell), on a terminal
        if ``pty``; _Refused if sshd will not give it one."""
        if self.closed:
            raise ConnectionClosed(f"connection to {self.address} closed by the server")
        try:
            channel = self._transport.open_session(timeout=self._connect_timeout)
        except door.FAILURES as exc:
            raise ConnectionFailed(f"{self.address}: cannot open a session: {exc}") from None
        door.watch_channel(channel, wake.notify)  # the send window opened, or it closed
        door.watch_exit(channel, wake.notify)  # the exit status came
        if pty is not None:
            try:
                channel.get_pty(term=pty.term, width=pty.cols, height=pty.rows)
            except door.FAILURES:
                _release(channel)
                if self.closed:
                    raise ConnectionClosed(
                        f"connection to {self.address} closed by the server") from None
                raise _Refused("the server would not allocate a terminal "
                               "(PTY allocation request failed)") from None
        try:
            if command is None:
                channel.invoke_shell()
            else:
                channel.exec_command(command)
        except door.FAILURES as exc:
            _release(channel)
            raise ConnectionFailed(f"{self.address}: command refused: {exc}") from None
        return _Exec(self, channel, stdin, timeout, wake, pty is not None)


class _Exec:
    """One command on one channel: the loop, its deadline, its stdin."""

    def __init__(self, backend: SshBackend, channel: Any, stdin: Pump | None,
                 timeout: float | None, wake: Wakeup, pty: bool = False) -> None:
        self.backend, self.channel, self.pump, self.wake = backend, channel, stdin, wake
        self.pty = pty  # on a terminal
        self.hung_up = False  # its terminal hung up by us (SIGHUP)
        self.pending: memoryview | None = None  # stdin read, not yet sent
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout if timeout else None
        self.stop_at: float | None = None  # the end of the grace, once stopping
        self.error: str | None = None
        self.poller = select.poll()
        self.watched: set[int] = set()

    def chunks(self) -> Generator[Chunk, None, Finish]:
        try:
            while True:
                step = self._step()
                if isinstance(step, Finish):
                    return step
                if step is not None:
                    yield step
                elif self.wake.deadline is not None and time.monotonic() >= self.wake.deadline:
                    yield STDOUT, b""  # the consumer's turn (client.terminal)
        except RshellError:
            # The connection is in doubt (it broke), or the user cut it (``~.``
            # from the keyboard, as ssh's escape ends the whole connection).
            self.backend.close()
            raise
        except BaseException:  # left early: GeneratorExit, KeyboardInterrupt, ...
            self._stop()
            raise
        finally:
            _release(self.channel)
            if self.pump is not None:
                self.pump.close()

    def _step(self) -> Chunk | Finish | None:
        """A chunk of output, the end, or None (the loop waited for something)."""
        channel = self.channel
        self._deliver()
        try:
            if channel.recv_ready():
                return STDOUT, channel.recv(_CHUNK)
            if channel.recv_stderr_ready():
                return STDERR, channel.recv_stderr(_CHUNK)
            drained = channel.eof_received or channel.closed
            if drained and (channel.exit_status_ready() or self.hung_up):
                return self._finish()
            if self.stop_at is not None and time.monotonic() >= self.stop_at:
                self._signal(signal.SIGKILL)  # the grace is over (closing follows)
                return self._finish()
            more = self._feed()
            self._wait(drained, more or self.hung_up)
            return None
        except door.FAILURES as exc:  # the transport broke under us
            raise ConnectionFailed(f"{self.backend.address}: {exc}") from None

    def _stop(self) -> None:
        """The consumer left: stop the command as a deadline does (TERM, the
        grace, KILL; the channel closed after), its output read away.  The
        connection stays usable: every command has a channel of its own."""
        if self.pump is not None:
            self.pump.close()
        self.pump = self.pending = None
        self.deadline = None
        try:
            if self.stop_at is None:
                self._signal(signal.SIGTERM)
                self.stop_at = time.monotonic() + STOP_GRACE
            while not isinstance(self._step(), Finish):
                pass
        except Exception:  # noqa: BLE001  # the channel is closed next, whatever broke
            pass

    def _feed(self) -> bool:
        """Send stdin as the window allows; True if more could go right now."""
        channel = self.channel
        for _ in range(_FEED_TURN):
            if self.pending is None:
                if self.pump is None:
                    return False
                data = self.pump.read(_CHUNK)
                if data is None:
                    self.pump.close()
                    self.pump = None
                    if not self.pty:
                        _quietly(channel.shutdown_write)
                        return False
                    data = EOF_CHAR  # a terminal is not half-closed (see the docstring)
                if not data:
                    return False  # nothing yet: the loop watches the pump's fd
                # A resize or signal posted before these keys were written goes
                # out before them, as the remote terminal must see them.
                if self.wake.pending:
                    self._deliver()
                self.pending = memoryview(data)
            if channel.closed or not channel.send_ready():
                return False  # the window is shut: watch_channel wakes us when it opens
            try:
                sent = channel.send(self.pending)
            except door.FAILURES:
                sent = 0
            if not sent:  # the channel is gone, or the command closed its stdin
                self.pending, self.pump = None, None
                return False
            self.pending = self.pending[sent:] or None
        return True

    def _wait(self, drained: bool, more: bool) -> None:
        """Poll what can make progress; act on signals and the deadline."""
        want = {self.wake.fd}
        if not drained:
            want.add(self.channel.fileno())
        pump_fd = self.pump.fd if self.pump is not None else None
        if pump_fd is not None and self.pending is None:
            want.add(pump_fd)
        for fd in self.watched - want:
            self.poller.unregister(fd)
        for fd in want - self.watched:
            self.poller.register(fd, select.POLLIN)
        self.watched = want
        now = time.monotonic()
        ends = [t for t in (self.deadline, self.stop_at, self.wake.deadline) if t is not None]
        wait = 0.0 if more else (max(0.0, min(ends) - now) if ends else None)
        self.poller.poll(None if wait is None else wait * 1000)  # the next step delivers
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.deadline = None
            self.error = timed_out(self.timeout or 0.0)  # a deadline means a timeout
            self._signal(signal.SIGTERM)
            self.stop_at = time.monotonic() + STOP_GRACE

    def _deliver(self) -> None:
        """The signals and the window size posted to the wake-up."""
        for signum in self.wake.take():
            if signum == signal.SIGHUP and self.pty:
                self.hung_up = True  # the terminal goes: sshd closes the pty
                _release(self.channel)
            else:
                self._signal(signum)
        size = self.wake.take_size()
        if size is not None and self.pty and not self.channel.closed:
            _quietly(self.channel.resize_pty, *size)

    def _signal(self, signum: int) -> None:
        """RFC 4254 6.9; sshd may refuse it (see the module's docstring)."""
        name = door.SIGNAL_NAMES.get(signum)
        if name is not None and not self.channel.closed:
            _quietly(door.channel_request, self.channel, "signal", name)

    def _finish(self) -> Finish:
        channel = self.channel
        code = channel.exit_status if channel.exit_status_ready() else -1
        signum = door.exit_signal(channel)
        if code >= 0:
            return Finish(code, None, self.error)
        if signum is not None:
            return Finish(None, signum, self.error)
        if self.hung_up:  # its end is unknown: what hanging up a terminal does
            return Finish(None, signal.SIGHUP, self.error)
        if self.error is not None:  # stopped by our deadline; how it ended is unknown
            return Finish(None, signal.SIGTERM, self.error)
        if self.backend.closed:
            raise ConnectionClosed(f"connection to {self.backend.address} closed by the server")
        return Finish(None, None, "the server closed the channel without an exit status")


def _cd_target(command: str) -> str | None:
    """The word after a lone ``cd [DIR]`` as typed (``"$HOME"`` for none), else None."""
    argv = lone_cd(command)
    if argv is None:
        return None
    return command.strip()[2:].strip() if len(argv) == 2 else '"$HOME"'


def _assigned(command: str) -> list[str] | None:
    """The names a lone export/unset assigns; None when it is not one, or names
    one the shell would refuse (it then runs as a command, and fails there)."""
    argv = lone_assignment(command)
    if argv is None:
        return None
    names = [word.partition("=")[0] for word in argv[1:]]
    return names if all(_NAME.match(n) for n in names) else None


def _keep_stdout(chunks: Generator[Chunk, None, Finish],
                 into: bytearray) -> Generator[Chunk, None, Finish]:
    """Pass stderr on; keep stdout (cd's ``pwd``) for ourselves."""
    try:
        while True:
            try:
                fd, data = next(chunks)
            except StopIteration as stop:
                finish: Finish = stop.value
                return finish
            if fd == STDOUT:
                into += data
            else:
                yield fd, data
    finally:
        chunks.close()  # left early: the command is stopped


def _drain(chunks: Generator[Chunk, None, Finish]) -> list[tuple[int, bytes]]:
    return [(fd, bytes(data)) for fd, data in chunks]


def _stderr_warning(message: str) -> None:
    """on_warning's default, as the native backend's (client.handshake)."""
    import sys

    from rshell.client.screen import visible

    sys.stderr.write(f"rshell: WARNING: {visible(message)}\n")


def _release(channel: Any) -> None:
    door.unwatch_channel(channel)
    door.unwatch_exit(channel)
    _quietly(channel.close)


def _quietly(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except door.FAILURES:
        pass
