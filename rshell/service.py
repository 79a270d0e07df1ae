"""One server connection: handshake, authentication, commands, and their I/O.

A ``Session`` owns its socket (the only writer to it), its protocol state
machine and at most one running command.  One epoll loop multiplexes
the socket, the child's stdout, stderr and stdin pipes, the child's pidfd and
a wake-up eventfd, so stdin, signals and output all flow at once and nothing
blocks on a slow peer.  Output is read in chunks straight into frame buffers
and sent as it comes; when the client stops reading, the outgoing queue
passes its high-water mark, the session stops reading the child's pipes, and
the child blocks: memory stays bounded.

Must not import click or paramiko, and never the client side.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rshell import builtins, sweep
from rshell.errors import ConnectionFailed, LocalProtocolError, ProtocolError
from rshell.execution import Child, StartError
from rshell.protocol.frames import CHUNK_SIZE, HEADER_SIZE, BufferDecoder, pack_header_into
from rshell.protocol.messages import (
    Auth,
    Challenge,
    Error,
    Exit,
    Hello,
    Message,
    MessageType,
    Run,
    Signal,
    Stdin,
    StdinAck,
    StdinEof,
    Welcome,
)
from rshell.protocol.session import DEFAULT_STDIN_WINDOW, ServerProtocol, State
from rshell.protocol.signing import NONCE_SIZE
from rshell.transport import Stream

if TYPE_CHECKING:
    from rshell.audit import AuditLog
    from rshell.authkeys import AuthorizedKeys, Entry

log = logging.getLogger("rshell.server")

_READ, _WRITE = select.EPOLLIN, select.EPOLLOUT
#: A hang-up or error is news for whoever waits to read or to write.
_READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
#: Stop reading the child's output while this much is queued for the client.
HIGH_WATER = 4 * CHUNK_SIZE
#: Chunks read from one pipe per wake-up before looking at the others again.
_DRAIN_ROUNDS = 4
_DEFAULT_PIPE_SIZE = 65536
_SMALL_READ = _DEFAULT_PIPE_SIZE
#: Signals a client may deliver to its command.
ALLOWED_SIGNALS = frozenset({
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGKILL,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT, signal.SIGSTOP, signal.SIGTSTP,
    signal.SIGPIPE,  # the client's stdout went away (``rshell h -c yes | head``)
})


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


_SESSION_IDS = itertools.count(1)


class _Command:
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


class Session:
    """Serve one accepted connection until it ends; see the module docstring.

    Methods for the caller: ``serve()`` (blocks until the connection is over)
    and ``request_shutdown(grace)`` (thread-safe).
    """

    def __init__(
        self,
        stream: Stream,
        config: ServerConfig,
        deadline: float | None = None,
        on_authenticated: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.on_authenticated = on_authenticated
        self.peer = stream.peer
        self.config = config
        # Receive in place into one reusable buffer: no allocation per read.
        self.proto = ServerProtocol(decoder=BufferDecoder(frames=2))
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[int], None]] = {}
        self.cwd = config.home
        self.prev_cwd = self.cwd
        self.peer_ip = _peer_ip(stream)
        self.marker = f"{os.getpid()}:{next(_SESSION_IDS)}"
        self._groups: set[int] = set()  # process groups of this session's commands
        self.env = command_environment(config, self.peer, self.marker)
        self.audit = config.audit
        self.idle_deadline: float | None = None
        self.nonce = b""
        self.entry: Entry | None = None
        self.cmd: _Command | None = None
        self.commands = 0
        self.closing = False
        self.end_reason = ""
        self.shutdown_at: float | None = None
        self.handshake_deadline: float | None = (
            deadline if deadline is not None else time.monotonic() + config.auth_timeout
        )
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._masks: dict[int, int] = {}
        self._spare: bytearray | None = None
        self._lock = threading.Lock()

    # ---- public -------------------------------------------------------------

    def serve(self) -> None:
        log.info("connection from %s", self.peer)
        if self.audit:
            self.audit.event("connect", peer=self.peer)
        try:
            self._set(self.stream.fileno(), _READ, self._on_socket)
            self._set(self._wake, _READ, self._on_wake)
            while not self.closing:
                self._step()
        except LocalProtocolError as exc:
            if exc.code != "auth-failed":  # already logged, with the key
                log.warning("%s: protocol error: %s", self.peer, exc)
            self.end_reason = f"{exc.code}: {exc}"
            self._send_fatal(Error(exc.code, str(exc)))
        except ProtocolError as exc:
            log.warning("%s: %s", self.peer, exc)
            self.end_reason = str(exc)
        except ConnectionFailed as exc:
            self.end_reason = str(exc)
        except Exception:
            log.exception("%s: internal error", self.peer)
            self._send_fatal(Error("internal", "internal server error"))
        finally:
            self._cleanup()

    def request_shutdown(self, grace: float) -> None:
        with self._lock:
            if self.shutdown_at is None:
                self.shutdown_at = time.monotonic() + grace
        try:
            os.eventfd_write(self._wake, 1)
        except OSError:
            pass  # session already closed

    # ---- the loop -------------------------------------------------------------

    def _step(self) -> None:
        if self.stream.pending():
            self._on_socket(_READ)
        timeout = self._next_deadline()
        # epoll directly, not selectors: its per-event objects cost real time
        # at thousands of commands a second.
        for fd, events in self._epoll.poll(-1 if timeout is None else timeout):
            handler = self._handlers.get(fd)
            if handler is None:
                continue  # unregistered by an earlier handler in this batch
            mask = (_READ if events & _READABLE else 0) | (_WRITE if events & _WRITABLE else 0)
            handler(mask)
            if self.closing:
                return
        self._check_deadlines(time.monotonic())
        if self.cmd is not None:
            self._maybe_finish()
        self._sync_interest()

    def _set(self, fd: int, mask: int, handler: Callable[[int], None] | None) -> None:
        old = self._masks.get(fd, 0)
        if mask == old:
            return
        if not old:
            self._epoll.register(fd, mask)
        elif not mask:
            self._epoll.unregister(fd)
        else:
            self._epoll.modify(fd, mask)
        if mask and handler is not None:
            self._masks[fd] = mask
            self._handlers[fd] = handler
        else:
            self._masks.pop(fd, None)
            self._handlers.pop(fd, None)

    def _sync_interest(self) -> None:
        stream = self.stream
        self._set(stream.fileno(), _READ | (_WRITE if stream.queued else 0), self._on_socket)
        cmd = self.cmd
        if cmd is None:
            return
        child = cmd.child
        throttled = stream.queued >= HIGH_WATER
        if child.stdout is not None:
            self._set(child.stdout, 0 if throttled else _READ, self._on_stdout)
        if child.stderr is not None:
            self._set(child.stderr, 0 if throttled else _READ, self._on_stderr)
        if child.stdin is not None:
            self._set(child.stdin, _WRITE if cmd.stdin_queue else 0, self._on_stdin_writable)

    def _next_deadline(self) -> float | None:
        times = [self.handshake_deadline, self.shutdown_at]
        if self.cmd is None:
            times.append(self.idle_deadline)
        else:
            cmd = self.cmd
            times += [cmd.deadline, cmd.kill_at, cmd.linger_at]
        pending = [t for t in times if t is not None]
        if not pending:
            return None
        return max(0.0, min(pending) - time.monotonic())

    def _check_deadlines(self, now: float) -> None:
        if self.handshake_deadline is not None and now >= self.handshake_deadline:
            log.warning("%s: handshake not completed in %gs", self.peer, self.config.auth_timeout)
            raise LocalProtocolError("authentication timed out", "auth-timeout")
        if self.shutdown_at is not None and now >= self.shutdown_at and self.cmd is not None:
            self._stop_command("server shutting down")
        cmd = self.cmd
        if cmd is None:
            if self.idle_deadline is not None and now >= self.idle_deadline:
                raise LocalProtocolError(
                    f"idle for {self.config.idle_timeout:g} s without a command", "idle-timeout"
                )
            return
        if cmd.deadline is not None and now >= cmd.deadline:
            cmd.deadline = None
            self._stop_command(f"timed out after {cmd.timeout:g} s")
        if cmd.kill_at is not None and now >= cmd.kill_at:
            cmd.kill_at = None
            cmd.child.signal_group(signal.SIGKILL)
        if cmd.linger_at is not None and now >= cmd.linger_at:
            # The leader is gone; whatever still holds the pipes loses them.
            for fd in (cmd.child.stdout, cmd.child.stderr):
                if fd is not None:
                    self._close_output(fd)

    # ---- socket ------------------------------------------------------------------

    def _on_socket(self, mask: int) -> None:
        stream = self.stream
        if mask & _WRITE:
            stream.flush()
        if not mask & _READ:
            return
        proto = self.proto
        decoder = proto.decoder
        assert isinstance(decoder, BufferDecoder)
        n = stream.recv_into(decoder.writable())
        if n is None:
            raise ConnectionFailed("client disconnected")
        if not n:
            return
        decoder.commit(n)
        if self.idle_deadline is not None:
            self.idle_deadline = time.monotonic() + self.config.idle_timeout
        while not self.closing:
            msg = proto.next_event()
            if msg is None:
                break
            self._dispatch(msg)
        stream.flush()

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, Stdin):
            self._on_stdin_data(msg.data)
        elif isinstance(msg, Signal):
            if self.cmd is not None and msg.signum in ALLOWED_SIGNALS:
                self.cmd.child.signal_group(msg.signum)
        elif isinstance(msg, StdinEof):
            if self.cmd is not None:
                self.cmd.stdin_eof = True
                if not self.cmd.stdin_queue:
                    self._close_stdin()
        elif isinstance(msg, Run):
            self._start(msg)
        elif isinstance(msg, Hello):
            if self.config.authorized is None:
                self._greet()
            else:
                self.nonce = os.urandom(NONCE_SIZE)
                self._send(Challenge(self.nonce, self.config.server_name))
        elif isinstance(msg, Auth):
            self._authenticate(msg)
        else:
            raise LocalProtocolError(f"unexpected {type(msg).__name__}", "unexpected")

    def _authenticate(self, msg: Auth) -> None:
        """Check the key is authorized for this address and signed our challenge."""
        from rshell import auth

        assert self.config.authorized is not None
        verdict = auth.check(
            self.config.authorized, msg, self.nonce, self.config.host_key_blob, self.peer_ip
        )
        entry, fp = verdict.entry, verdict.fingerprint
        if entry is not None:
            self.entry = entry
            log.info("%s: authenticated with key %s %s", self.peer, fp, entry.comment)
            if self.audit:
                self.audit.event("auth", peer=self.peer, ok=True, key=fp, comment=entry.comment)
            self._greet()
            return
        log.warning("%s: authentication failed for key %s: %s", self.peer, fp, verdict.reason)
        if self.audit:
            self.audit.event("auth", peer=self.peer, ok=False, key=fp, reason=verdict.reason)
        time.sleep(self.config.auth_failure_delay)  # this session's thread only
        raise LocalProtocolError("authentication failed", "auth-failed")

    def _greet(self) -> None:
        self._send(Welcome(self.config.server_name, self.cwd, _user(), self.config.stdin_window))
        self.handshake_deadline = None
        if self.config.idle_timeout:
            self.idle_deadline = time.monotonic() + self.config.idle_timeout
        if self.on_authenticated is not None:
            self.on_authenticated()

    def _send(self, msg: Message) -> None:
        self.stream.write(self.proto.send(msg))
        self.stream.flush()

    def _send_fatal(self, msg: Error) -> None:
        try:
            self.stream.write(self.proto.send(msg))
            self.stream.sock.setblocking(True)
            self.stream.sock.settimeout(1.0)
            self.stream.flush()
        except (ConnectionFailed, OSError):
            pass

    def _on_wake(self, mask: int) -> None:
        try:
            os.eventfd_read(self._wake)
        except BlockingIOError:
            return
        if self.cmd is None:
            self._send_fatal(Error("shutdown", "server is shutting down"))
            self.closing = True

    # ---- commands ----------------------------------------------------------------

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
        self.cmd = _Command(child, run.command, timeout)
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

    def _count(self, cmd: _Command, kind: int, n: int) -> None:
        if kind == MessageType.STDOUT:
            cmd.out_bytes += n
        else:
            cmd.err_bytes += n
        if cmd.linger_at is not None:
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
        if cmd.kill_at is None and not cmd.child.exited:
            cmd.child.signal_group(signal.SIGTERM)
            cmd.kill_at = time.monotonic() + self.config.kill_grace

    def _maybe_finish(self) -> None:
        cmd = self.cmd
        assert cmd is not None
        child = cmd.child
        if child.stdout is not None or child.stderr is not None or not cmd.exit_seen:
            return
        if cmd.reason is not None:
            child.signal_group(signal.SIGKILL)  # stragglers of a stopped command
        for fd in (child.pidfd, child.stdin):
            if fd is not None:
                self._set(fd, 0, None)
        child.reap()
        duration = time.monotonic() - child.started
        error = cmd.reason or _silent_failure(child, cmd.out_bytes + cmd.err_bytes)
        self.cmd = None
        self._spare = None
        if self.idle_deadline is not None:  # idleness counts from the command's end
            self.idle_deadline = time.monotonic() + self.config.idle_timeout
        decoder = self.proto.decoder
        assert isinstance(decoder, BufferDecoder)
        decoder.release()
        self._send(Exit(child.exit_code, child.signal, error, self.cwd, round(duration, 6)))
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

    def _cleanup(self) -> None:
        cmd, self.cmd = self.cmd, None
        self.stream.close()  # first: the client learns at once that we are gone
        if cmd is not None:
            cmd.child.terminate(self.config.kill_grace)
            log.info("%s: command %r terminated: connection ended", self.peer, cmd.text)
        if self.commands:
            # Whatever a command daemonized out of its group goes with the session.
            escaped = sweep.kill_session(self.marker, self._groups)
            if escaped:
                log.warning("%s: killed %d process(es) that left their command's group: %s",
                            self.peer, len(escaped), escaped)
                if self.audit:
                    self.audit.event("sweep", peer=self.peer, pids=escaped)
        self._epoll.close()
        os.close(self._wake)
        log.info("%s: disconnected after %d command(s)%s", self.peer, self.commands,
                 f" ({self.end_reason})" if self.end_reason else "")
        if self.audit:
            self.audit.event("disconnect", peer=self.peer, commands=self.commands,
                             reason=self.end_reason or None)


#: Variables of the server's own environment that commands inherit, as sshd
#: passes its locale and time zone; everything else (the server's secrets, its
#: RSHELL_HOME, its OLDPWD) stays out.
_PASSED_ENV = frozenset({"PATH", "LANG", "LANGUAGE", "TZ"})
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def command_environment(config: ServerConfig, peer: str, marker: str) -> dict[str, str]:
    """A login-like environment: who, where, which shell, the locale; the client
    and the session marker (see sweep.py)."""
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith("LC_")}
    user = _user()
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(HOME=config.home, USER=user, LOGNAME=user, SHELL=config.shell,
               RSHELL_CLIENT=peer)
    env[sweep.MARKER] = marker
    return env


def _silent_failure(child: Child, output: int) -> str | None:
    """The ``command error`` reason for a command that failed without a word."""
    if child.exit_code == 127:
        return "command not found"
    if child.exit_code == 126:
        return "command cannot be executed"
    if output:
        return None
    if child.signal:
        return f"killed by {_signame(child.signal)} with no output"
    if child.exit_code:
        return f"exit status {child.exit_code} with no output"
    return None


def _os_bytes(text: str) -> bytes:
    """Text that came from the client's bytes (``surrogateescape``), as those bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no byte stands for
        return text.encode("utf-8", "backslashreplace")


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _peer_ip(stream: Stream) -> str:
    try:
        return str(stream.sock.getpeername()[0])
    except (OSError, IndexError):
        return ""


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
