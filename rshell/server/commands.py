"""Running commands for a session: start, stream output, feed stdin, finish.

``CommandRunner`` is the half of ``service.Session`` that deals with the one
running command (a mixin, in socketserver's manner): it starts the child,
reads its pipes into frames while the client keeps up, feeds it stdin within
the window, enforces the time and output limits, and reaps it and reports
its Exit once output reached EOF.  The session half (socket, protocol,
authentication, the loop) is in service.py.

Must not import click or paramiko, and never the client side.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rshell.errors import LocalProtocolError
from rshell.exec import cd as builtins
from rshell.exec import sweep
from rshell.exec.child import Child, StartError
from rshell.protocol.frames import CHUNK_SIZE, HEADER_SIZE, pack_header_into
from rshell.protocol.messages import Error, Exit, Message, MessageType, Run, StdinAck
from rshell.protocol.states import DEFAULT_STDIN_WINDOW, ServerProtocol, State
from rshell.result import silent_failure
from rshell.transport import Stream

if TYPE_CHECKING:
    from rshell.exec.sweep import Sweeper
    from rshell.server.audit import AuditLog
    from rshell.trust.authorized_keys import AuthorizedKeys, Entry

log = logging.getLogger("rshell.server")

_READ, _WRITE = select.EPOLLIN, select.EPOLLOUT
#: Stop reading the child's output while this much is queued for the client.
HIGH_WATER = 4 * CHUNK_SIZE
#: Chunks read from one pipe per wake-up before looking at the others again.
_DRAIN_ROUNDS = 4
_DEFAULT_PIPE_SIZE = 65536
_SMALL_READ = _DEFAULT_PIPE_SIZE


@dataclass
class ServerConfig:
    """Settings every session of one server shares."""

    shell: str = "/bin/sh"
    timeout: float = 0.0  # default per-command limit; 0 = none
    max_output: int = 0  # bytes per command; 0 = none
    auth_timeout: float = 10.0
    kill_grace: float = 1.0  # SIGTERM -> SIGKILL
    linger: float = 0.25  # how long to drain pipes held open after the leader exits
    stdin_window: int = DEFAULT_STDIN_WINDOW
    server_name: str = "rshell/0.1.0"
    home: str = field(default_factory=lambda: os.path.expanduser("~"))
    #: None means --no-auth: every connection is welcomed without a key.
    authorized: AuthorizedKeys | None = None
    #: The host key (SSH wire format) clients bind their signatures to; b"" without TLS.
    host_key_blob: bytes = b""
    #: Seconds a failed authentication waits before it is answered.
    auth_failure_delay: float = 1.0
    #: Seconds without any frame, between commands, before the session is closed (0: never).
    idle_timeout: float = 3600.0
    #: Commands one connection may run before it must reconnect.
    max_commands: int = 1_000_000
    audit: AuditLog | None = None
    #: Sweeps escaped processes for every session in one thread (None: each
    #: session sweeps for itself as it ends).
    sweeper: Sweeper | None = None


SESSION_IDS = itertools.count(1)


class RunningCommand:
    """Book-keeping for the one running command."""

    __slots__ = (
        "child", "text", "deadline", "kill_at", "linger_at", "reason", "out_bytes",
        "err_bytes", "stdin_queue", "stdin_eof", "unacked", "timeout", "exit_seen", "big",
    )

    def __init__(self, child: Child, text: str, timeout: float) -> None:
        self.child = child
        self.text = text
        self.timeout = timeout
        self.deadline = child.started + timeout if timeout else None
        self.kill_at: float | None = None
        self.linger_at: float | None = None
        self.reason: str | None = None
        self.out_bytes = 0
        self.err_bytes = 0
        self.stdin_queue: deque[memoryview] = deque()
        self.stdin_eof = False
        self.unacked = 0
        self.exit_seen = False  # the pidfd fired: only then is waitid worth a call
        self.big = False  # it filled a pipe: read it in big chunks


class CommandRunner:
    """The command half of a Session; see the module docstring."""

    # Provided by Session (declared for the type checker).
    stream: Stream
    config: ServerConfig
    proto: ServerProtocol
    peer: str
    cmd: RunningCommand | None
    cwd: str
    prev_cwd: str
    env: dict[str, str]
    entry: Entry | None
    commands: int
    closing: bool
    shutdown_at: float | None
    idle_deadline: float | None
    audit: AuditLog | None
    _spare: bytearray | None
    _groups: set[int]

    if TYPE_CHECKING:
        def _set(self, fd: int, mask: int, handler: Callable[[int], None] | None) -> None: ...
        def _send(self, msg: Message) -> None: ...
        def _send_fatal(self, msg: Error) -> None: ...

    def _start(self, run: Run) -> None:
        self.commands += 1
        if self.commands > self.config.max_commands:
            raise LocalProtocolError(
                f"more than {self.config.max_commands} commands on one connection; reconnect",
                "limit",
            )
        if self.shutdown_at is not None:
            self._finish_early(run, Exit(None, error="server shutting down", cwd=self.cwd))
            return
        entry = self.entry
        forced = entry.command if entry is not None else None
        refusal = None
        if entry is not None and entry.restrict and run.env:
            refusal = "environment not permitted for this key (restrict)"
        elif forced is not None and (run.env or run.cwd):
            # The client must not steer a forced command (PATH, LD_PRELOAD, ./script).
            refusal = "environment and cwd not permitted with a forced command"
        if refusal is not None:
            self._finish_early(run, Exit(126, error=f"refused: {refusal}", cwd=self.cwd))
            return
        builtin = None if forced is not None else self._builtin(run)
        if builtin is not None:
            self._finish_early(run, builtin)
            return
        cwd = os.path.join(self.cwd, run.cwd) if run.cwd else self.cwd
        env = self.env if run.env is None else dict(self.env, **run.env)
        command = run.command
        if forced is not None:
            env = dict(env, RSHELL_ORIGINAL_COMMAND=run.command)
            command = forced
        limits = [t for t in (self.config.timeout, run.timeout) if t]
        timeout = min(limits) if limits else 0.0
        try:
            child = Child(command, shell=self.config.shell, cwd=cwd, env=env, stdin=run.stdin)
        except StartError as exc:
            self._finish_early(run, Exit(127, error=str(exc), cwd=self.cwd))
            return
        self.cmd = RunningCommand(child, run.command, timeout)
        self._groups.add(child.pid)
        self._set(child.pidfd, _READ, self._on_exit)
        if self.audit:
            self.audit.event("command-start", peer=self.peer, command=run.command, cwd=cwd,
                             pid=child.pid, forced=forced is not None)

    def _finish_early(self, run: Run, exit: Exit) -> None:
        """Answer a command that never became a process (refused, builtin, failed)."""
        self._send(exit)
        log.info(
            "%s: command %r exit=%s error=%s", self.peer, run.command, exit.exit_code, exit.error
        )
        if self.audit:
            self.audit.event("command-end", peer=self.peer, command=run.command,
                             exit_code=exit.exit_code, signal=None, error=exit.error,
                             stdout_bytes=0, stderr_bytes=0, duration=0.0)

    def _builtin(self, run: Run) -> Exit | None:
        """``cd [DIR]`` changes the session's directory; anything else is not ours."""
        if not builtins.might_be_cd(run.command):
            return None  # the common case, before the environment is copied
        env = dict(self.env, PWD=self.cwd, OLDPWD=self.prev_cwd)
        result = builtins.cd(run.command, self.cwd, self.prev_cwd, self.config.home, env)
        if result is None:
            return None
        self.cwd, self.prev_cwd = result.cwd, result.previous
        if result.stderr:
            self._send_data(MessageType.STDERR, _os_bytes(result.stderr))
        return Exit(result.exit_code, cwd=self.cwd)

    def _send_data(self, kind: int, data: bytes) -> None:
        frame = bytearray(HEADER_SIZE + len(data))
        pack_header_into(frame, 0, len(data), kind)
        frame[HEADER_SIZE:] = data
        self.stream.write(frame)

    def _on_stdout(self, mask: int) -> None:
        assert self.cmd is not None and self.cmd.child.stdout is not None
        self._read_output(self.cmd.child.stdout, MessageType.STDOUT)

    def _on_stderr(self, mask: int) -> None:
        assert self.cmd is not None and self.cmd.child.stderr is not None
        self._read_output(self.cmd.child.stderr, MessageType.STDERR)

    def _read_output(self, fd: int, kind: int) -> None:
        """Move what the pipe holds to the client, a few chunks per wake-up."""
        stream = self.stream
        for _ in range(_DRAIN_ROUNDS):
            if stream.queued >= HIGH_WATER:
                return
            moved = self._pull(fd, kind)
            cmd = self.cmd
            if moved < CHUNK_SIZE or cmd is None or fd not in (cmd.child.stdout, cmd.child.stderr):
                return  # drained, or the pipe was closed (EOF, output limit)

    def _pull(self, fd: int, kind: int) -> int:
        """One chunk from ``fd``: bytes framed (0: none now or EOF)."""
        cmd = self.cmd
        assert cmd is not None
        limit = self.config.max_output
        # Small first: most commands print little, and an idle session should
        # hold no megabyte; a pipe that fills gets the big buffer from then on.
        buf = self._spare or bytearray(HEADER_SIZE + (CHUNK_SIZE if cmd.big else _SMALL_READ))
        self._spare = None
        view = memoryview(buf)
        try:
            n = os.readv(fd, [view[HEADER_SIZE:]])
        except BlockingIOError:
            self._spare = buf
            return 0
        if n == 0:
            self._spare = buf
            self._close_output(fd)
            return 0
        got = n
        if n == _DEFAULT_PIPE_SIZE and not cmd.big:
            Child.widen(fd)
            cmd.big = True
            self._spare = None
            got = CHUNK_SIZE  # keep draining
        total = cmd.out_bytes + cmd.err_bytes + n
        if limit and total > limit:
            n -= total - limit
            self._stop_command("output limit exceeded")
            for other in (cmd.child.stdout, cmd.child.stderr):
                if other is not None:
                    self._close_output(other)
        if n <= 0:
            return 0
        self._count(cmd, kind, n)
        pack_header_into(buf, 0, n, kind)
        self.stream.write(view[: HEADER_SIZE + n])
        if self.stream.flush() and (len(buf) > HEADER_SIZE + _SMALL_READ) == cmd.big:
            self._spare = buf  # the kernel has it all: reuse the buffer
        return got

    def _count(self, cmd: RunningCommand, kind: int, n: int) -> None:
        if kind == MessageType.STDOUT:
            cmd.out_bytes += n
        else:
            cmd.err_bytes += n
        if cmd.linger_at is not None and cmd.reason is None:  # a stopped one gets no more
            cmd.linger_at = time.monotonic() + self.config.linger

    def _close_output(self, fd: int) -> None:
        self._set(fd, 0, None)
        assert self.cmd is not None
        self.cmd.child.close_output(fd)

    def _on_stdin_data(self, data: bytes | memoryview) -> None:
        cmd = self.cmd
        if cmd is None or cmd.child.stdin is None:
            if cmd is not None and self.proto.state is State.RUNNING:
                self._send(StdinAck(len(data)))  # nobody reads it: don't stall the sender
            return
        queue = cmd.stdin_queue
        queue.append(memoryview(data))
        self._on_stdin_writable(_WRITE)
        if queue and not isinstance(queue[-1].obj, bytes):
            # What the pipe did not take must outlive the receive buffer it is in.
            queue[-1] = memoryview(bytes(queue[-1]))

    def _on_stdin_writable(self, mask: int) -> None:
        cmd = self.cmd
        assert cmd is not None
        queue = cmd.stdin_queue
        child = cmd.child
        written = 0
        while queue and child.stdin is not None:
            n = child.write_stdin(queue[0])
            if n < 0:  # the command closed its stdin: drop the rest, but ack it
                written += sum(len(v) for v in queue)
                queue.clear()
                self._close_stdin()
                break
            written += n
            if n < len(queue[0]):
                queue[0] = queue[0][n:]
                break
            queue.popleft()
        if not queue and cmd.stdin_eof:
            self._close_stdin()
        cmd.unacked += written
        if cmd.unacked and (not queue or cmd.unacked >= self.config.stdin_window // 4):
            self._send(StdinAck(cmd.unacked))
            cmd.unacked = 0

    def _close_stdin(self) -> None:
        """Unregister before closing: a closed fd's number is soon reused."""
        assert self.cmd is not None
        child = self.cmd.child
        if child.stdin is not None:
            self._set(child.stdin, 0, None)
            child.close_stdin()

    def _on_exit(self, mask: int) -> None:
        cmd = self.cmd
        assert cmd is not None
        self._set(cmd.child.pidfd, 0, None)
        cmd.exit_seen = cmd.child.exited
        if cmd.exit_seen and (cmd.child.stdout is not None or cmd.child.stderr is not None):
            cmd.linger_at = time.monotonic() + self.config.linger

    def _stop_command(self, reason: str) -> None:
        """Begin ending the command: SIGTERM now, SIGKILL after the grace."""
        cmd = self.cmd
        assert cmd is not None
        if cmd.reason is None:
            cmd.reason = reason
        # Even when the leader has exited: what is left of its group (a
        # background job still writing) must stop too.  Safe until the reap,
        # since the zombie leader keeps the group id from being reused.
        if cmd.kill_at is None:
            cmd.child.signal_group(signal.SIGTERM)
            cmd.kill_at = time.monotonic() + self.config.kill_grace

    def _maybe_finish(self) -> None:
        cmd = self.cmd
        assert cmd is not None
        child = cmd.child
        if child.stdout is not None or child.stderr is not None or not cmd.exit_seen:
            return
        # PROTOCOL.md 7.6: a stopped command's stragglers are killed and the
        # leader reaped before Exit is sent, so the client never hears "over"
        # while any of it still runs.
        if cmd.reason is not None:
            child.signal_group(signal.SIGKILL)
        for fd in (child.pidfd, child.stdin):
            if fd is not None:
                self._set(fd, 0, None)
        child.reap()
        duration = time.monotonic() - child.started
        error = cmd.reason or silent_failure(
            child.exit_code, child.signal, cmd.out_bytes + cmd.err_bytes)
        self.cmd = None
        self._spare = None  # an idle session holds no read buffer
        if self.idle_deadline is not None:  # idleness counts from the command's end
            self.idle_deadline = time.monotonic() + self.config.idle_timeout
        self.proto.decoder.release()
        try:
            self._send(Exit(child.exit_code, child.signal, error, self.cwd, round(duration, 6)))
        finally:  # recorded even when the client is gone before it hears the end
            log.info(
                "%s: command %r exit=%s signal=%s error=%s duration=%.3fs stdout=%d stderr=%d",
                self.peer, cmd.text, child.exit_code, child.signal, error, duration,
                cmd.out_bytes, cmd.err_bytes,
            )
            if self.audit:
                self.audit.event("command-end", peer=self.peer, command=cmd.text,
                                 exit_code=child.exit_code, signal=child.signal, error=error,
                                 stdout_bytes=cmd.out_bytes, stderr_bytes=cmd.err_bytes,
                                 duration=round(duration, 6))
        if self.shutdown_at is not None:
            self._send_fatal(Error("shutdown", "server is shutting down"))
            self.closing = True


#: Variables of the server's own environment that commands inherit, as sshd
#: passes its locale and time zone; everything else (the server's secrets, its
#: RSHELL_HOME, its OLDPWD) stays out.
_PASSED_ENV = frozenset({"PATH", "LANG", "LANGUAGE", "TZ"})
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def command_environment(config: ServerConfig, peer: str, marker: str) -> dict[str, str]:
    """A login-like environment: who, where, which shell, the locale; the client
    and the session marker (see sweep.py)."""
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith("LC_")}
    user = login_name()
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(HOME=config.home, USER=user, LOGNAME=user, SHELL=config.shell,
               RSHELL_CLIENT=peer)
    env[sweep.MARKER] = marker
    return env


def _os_bytes(text: str) -> bytes:
    """Text that came from the client's bytes (``surrogateescape``), as those bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no byte stands for
        return text.encode("utf-8", "backslashreplace")


def login_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
