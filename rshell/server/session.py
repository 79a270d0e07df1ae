"""One server connection: handshake, authentication, the loop; commands via CommandRunner.

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

import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rshell.errors import ConnectionFailed, LocalProtocolError, ProtocolError
from rshell.exec import sweep
from rshell.protocol.frames import BufferDecoder
from rshell.protocol.messages import (
    Auth,
    Challenge,
    Error,
    Hello,
    Message,
    Run,
    Signal,
    Stdin,
    StdinEof,
    Welcome,
)
from rshell.protocol.signing import NONCE_SIZE
from rshell.protocol.states import ServerProtocol
from rshell.server.commands import (
    HIGH_WATER,
    SESSION_IDS,
    CommandRunner,
    RunningCommand,
    ServerConfig,
    command_environment,
    login_name,
)
from rshell.transport import Stream

if TYPE_CHECKING:
    from rshell.trust.authorized_keys import Entry

log = logging.getLogger("rshell.server")

_READ, _WRITE = select.EPOLLIN, select.EPOLLOUT
#: A hang-up or error is news for whoever waits to read or to write.
_READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
#: Signals a client may deliver to its command.
ALLOWED_SIGNALS = frozenset({
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGKILL,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT, signal.SIGSTOP, signal.SIGTSTP,
    signal.SIGPIPE,  # the client's stdout went away (``rshell h -c yes | head``)
})


class Session(CommandRunner):
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
        self.marker = f"{os.getpid()}:{next(SESSION_IDS)}"
        self._groups: set[int] = set()  # process groups of this session's commands
        self.env = command_environment(config, self.peer, self.marker)
        self.audit = config.audit
        self.idle_deadline: float | None = None
        self.nonce = b""
        self.entry: Entry | None = None
        self.cmd: RunningCommand | None = None
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
        times = [self.handshake_deadline]
        if self.cmd is None:
            times += [self.shutdown_at, self.idle_deadline]
        else:
            cmd = self.cmd
            # Once the shutdown has stopped the command, kill_at takes over: a
            # past shutdown_at would make every poll return at once (a busy loop).
            times += [cmd.deadline, cmd.kill_at, cmd.linger_at,
                      self.shutdown_at if cmd.reason is None else None]
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
            if cmd.exit_seen:  # the leader is gone: whatever holds its pipes loses them
                cmd.linger_at = now
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
        from rshell.server import auth

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
        config = self.config
        self._send(Welcome(config.server_name, self.cwd, login_name(), config.stdin_window))
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

    def _swept(self, escaped: list[int]) -> None:
        if escaped:
            log.warning("%s: killed %d process(es) that left their command's group: %s",
                        self.peer, len(escaped), escaped)
            if self.audit:
                self.audit.event("sweep", peer=self.peer, session=self.marker, pids=escaped)

    def _cleanup(self) -> None:
        cmd, self.cmd = self.cmd, None
        self.stream.close()  # first: the client learns at once that we are gone
        if cmd is not None:
            cmd.child.terminate(self.config.kill_grace)
            log.info("%s: command %r terminated: connection ended", self.peer, cmd.text)
        if self.commands:
            # Whatever a command daemonized out of its group goes with the session.
            if self.config.sweeper is not None:
                self.config.sweeper.submit(self.marker, self._groups, self._swept)
            else:
                self._swept(sweep.kill_session(self.marker, self._groups))
        self._epoll.close()
        os.close(self._wake)
        log.info("%s: disconnected after %d command(s)%s", self.peer, self.commands,
                 f" ({self.end_reason})" if self.end_reason else "")
        if self.audit:
            self.audit.event("disconnect", peer=self.peer, commands=self.commands,
                             reason=self.end_reason or None)


def _peer_ip(stream: Stream) -> str:
    try:
        return str(stream.sock.getpeername()[0])
    except (OSError, IndexError):
        return ""


__all__ = ["ALLOWED_SIGNALS", "ServerConfig", "Session"]
