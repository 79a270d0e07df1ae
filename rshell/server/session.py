"""One native connection: handshake, authentication, then commands on the engine.

A ``Session`` is a driver over ``exec``: it owns its socket (the only writer
to it) and its protocol state machine, turns Run/Stdin/Signal frames into
calls on the one running ``exec.command.Command``, and frames that command's
output in place (``FrameSink``).  Everything a command is (policy, limits,
stopping, the outcome and its record) is the engine's; the SSH listener
drives the same engine over a channel.

Must not import click, paramiko, or the client side.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from rshell.errors import ConnectionFailed, LocalProtocolError, ProtocolError
from rshell.exec.child import StartError
from rshell.exec.command import HIGH_WATER, STDOUT, Command
from rshell.exec.environment import login_name
from rshell.exec.loop import READ, WRITE, Loop
from rshell.exec.policy import Answer, Login, Request, decide
from rshell.exec.record import Outcome, Recorder
from rshell.exec.terminal import Pty
from rshell.protocol.files import Done, Entry, EntryEnd, FileData, Get, Put
from rshell.protocol.frames import HEADER_SIZE, BufferDecoder, pack_header_into
from rshell.protocol.messages import (
    FEATURES,
    Auth,
    Challenge,
    Closed,
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
    WindowChange,
)
from rshell.protocol.signing import NONCE_SIZE
from rshell.protocol.states import ServerProtocol, State
from rshell.server.files import Download, Upload, refused
from rshell.server.settings import Settings, new_marker
from rshell.transport import READ_ON, READS, Stream, peer_ip

log = logging.getLogger("rshell.server")
_STDOUT, _STDERR = int(MessageType.STDOUT), int(MessageType.STDERR)


class FrameSink:
    """Command output framed in place: the engine leaves the header's room."""

    __slots__ = ("stream",)
    headroom = HEADER_SIZE

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    @property
    def queued(self) -> int:
        return self.stream.queued

    def output(self, kind: int, buf: bytearray, n: int) -> bool:
        pack_header_into(buf, 0, n, _STDOUT if kind == STDOUT else _STDERR)
        self.stream.write(memoryview(buf)[: HEADER_SIZE + n])
        return self.stream.flush()


class Session(Loop):
    """Serve one accepted connection until it ends; see the module docstring.

    Methods for the caller: ``serve()`` (blocks until the connection is over)
    and ``request_shutdown(grace)`` (thread-safe).
    """

    def __init__(
        self, stream: Stream, settings: Settings, deadline: float | None = None,
        on_authenticated: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.stream, self.settings, self.peer = stream, settings, stream.peer
        self.on_authenticated = on_authenticated
        # Receive in place into one reusable buffer: no allocation per read.
        self.proto = ServerProtocol(decoder=BufferDecoder(frames=2))
        self.sink = FrameSink(stream)
        marker = new_marker()
        self.login = Login(settings.home, settings.limits.shell, self.peer, marker,
                           settings.authorized_keys_file)
        self.ws = self.login.workspace()
        self.record = Recorder(self.peer, "rshell", marker, settings.audit)
        self.cmd: Command | None = None
        self.unacked = 0
        self.nonce = b""
        self.end_reason = ""
        self.idle_deadline: float | None = None
        self.shutdown_at: float | None = None
        self.handshake_deadline: float | None = (
            deadline if deadline is not None else time.monotonic() + settings.auth_timeout
        )
        #: The file transfer under way (server/files.py), if any.
        self.xfer: Upload | Download | None = None
        self._lock = threading.Lock()

    # ---- public -------------------------------------------------------------

    def serve(self) -> None:
        self.record.connected()
        try:
            self.set(self.stream.fileno(), READ, self._on_socket)
            self.set(self.wake_fd, READ, self._on_wake)
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
            self.login.stopping = True  # new commands are answered, not run
        self.wake()

    # ---- the loop -------------------------------------------------------------

    def _step(self) -> None:
        if self.stream.pending():
            self._on_socket(READ)
        self.poll(self._timeout())
        if self.closing:
            return
        now = time.monotonic()
        if self.handshake_deadline is not None and now >= self.handshake_deadline:
            log.warning("%s: handshake not completed in %gs", self.peer,
                        self.settings.auth_timeout)
            raise LocalProtocolError("authentication timed out", "auth-timeout")
        xfer = self.xfer
        if xfer is not None:
            if self.shutdown_at is not None and now >= self.shutdown_at:
                self._end_transfer("server shutting down")
            elif isinstance(xfer, Download) and self.stream.queued < HIGH_WATER \
                    and xfer.pump():
                self._end_transfer(None)
        cmd = self.cmd
        if cmd is None:
            if self.xfer is None and self.idle_deadline is not None \
                    and now >= self.idle_deadline:
                raise LocalProtocolError(
                    f"idle for {self.settings.idle_timeout:g} s without a command",
                    "idle-timeout")
        else:
            if self.shutdown_at is not None and now >= self.shutdown_at:
                cmd.stop("server shutting down")
            cmd.check(now)
            outcome = cmd.finish()
            if outcome is not None:
                self._finished(outcome)
                cmd = None
        stream = self.stream
        self.set(stream.fileno(), READ | (WRITE if stream.queued else 0), self._on_socket)
        if cmd is not None:
            cmd.sync()

    def _timeout(self) -> float | None:
        times = [self.handshake_deadline]
        cmd = self.cmd
        if cmd is None:
            # A download is not idleness: its client sends nothing while it reads.
            times += [self.shutdown_at, self.idle_deadline if self.xfer is None else None]
        else:
            # Once the shutdown has stopped the command, kill_at takes over: a
            # past shutdown_at would make every poll return at once (a busy loop).
            times += [cmd.next_deadline(), None if cmd.stopping else self.shutdown_at]
        pending = [t for t in times if t is not None]
        return max(0.0, min(pending) - time.monotonic()) if pending else None

    # ---- socket ------------------------------------------------------------------

    def _on_socket(self, mask: int) -> None:
        stream = self.stream
        if mask & WRITE:
            stream.flush()
        if not mask & READ:
            return
        proto = self.proto
        decoder = proto.decoder
        reads = 0
        while True:
            n = stream.recv_into(decoder.writable())
            if n is None:  # EOF is an input: what came before it still counts
                proto.receive_eof()
            elif not n:
                break
            else:
                decoder.commit(n)
            reads += 1
            while not self.closing:
                msg = proto.next_event()
                if msg is None:
                    break
                if isinstance(msg, Closed):
                    raise ConnectionFailed("client disconnected")
                self._dispatch(msg)
            if n is None or n < READ_ON or self.closing or reads >= READS:
                break
        if not reads:
            return
        if self.idle_deadline is not None:
            self.idle_deadline = time.monotonic() + self.settings.idle_timeout
        stream.flush()

    def _dispatch(self, msg: Message) -> None:
        cmd = self.cmd
        if isinstance(msg, Stdin):
            if cmd is not None:
                cmd.feed(msg.data)
        elif isinstance(msg, Signal):
            if cmd is not None:
                cmd.signal(msg.signum)
        elif isinstance(msg, StdinEof):
            if cmd is not None:
                cmd.end_stdin()
        elif isinstance(msg, WindowChange):
            if cmd is not None:
                cmd.resize(msg.cols, msg.rows)
        elif isinstance(msg, (FileData, Entry, EntryEnd, Done)):
            xfer = self.xfer
            if isinstance(xfer, Upload) and xfer.on_message(msg):
                self._end_transfer(None)
            # else: entries in flight after an early TransferEnd, dropped
        elif isinstance(msg, Run):
            self._start(msg)
        elif isinstance(msg, Put):
            self._put(msg)
        elif isinstance(msg, Get):
            self._get(msg)
        elif isinstance(msg, Hello):
            if self.settings.authorized is None:
                self._greet()
            else:
                self.nonce = os.urandom(NONCE_SIZE)
                self._send(Challenge(self.nonce, self.settings.server_name))
        elif isinstance(msg, Auth):
            self._authenticate(msg)
        else:
            raise LocalProtocolError(f"unexpected {type(msg).__name__}", "unexpected")

    # ---- commands ------------------------------------------------------------------

    def _start(self, run: Run) -> None:
        pty = None if run.pty is None else Pty(run.pty.term, run.pty.cols, run.pty.rows)
        request = Request(run.command, run.cwd, run.env, run.timeout, run.stdin, pty)
        plan = decide(request, self.ws, self.settings.limits)
        if isinstance(plan, Answer):
            if plan.stderr:
                self._send_data(MessageType.STDERR, plan.stderr)
            self._finished(plan.outcome)
            return
        try:
            cmd = Command(plan, self, self.sink, self.settings.limits, self._consumed)
        except StartError as exc:
            self._finished(Outcome(run.command, 127, None, str(exc)))
            return
        self.cmd = cmd
        self.login.groups.add(cmd.child.pid)
        self.record.started(run.command, plan.cwd, cmd.child.pid, plan.forced,
                            recording=cmd.recording)

    # ---- file transfers (server/files.py) -------------------------------------------

    def _put(self, put: Put) -> None:
        if not refused(self.login, self.record, self._send, "upload", put.path):
            upload = Upload(put, self.login, self.record, self._send)
            if upload.start():
                self.xfer = upload

    def _get(self, get: Get) -> None:
        if not refused(self.login, self.record, self._send, "download", " ".join(get.paths)):
            self.xfer = Download(get, self.login, self.record, self._send, self.stream)

    def _end_transfer(self, reason: str | None) -> None:
        """The transfer is over (TransferEnd sent), or is ended now for ``reason``."""
        xfer, self.xfer = self.xfer, None
        if xfer is not None and reason is not None:
            xfer.abort(reason)
        if self.idle_deadline is not None:
            self.idle_deadline = time.monotonic() + self.settings.idle_timeout
        self.proto.decoder.release()
        if self.shutdown_at is not None:
            self._shut()

    def _consumed(self, n: int) -> None:
        """Stdin the command took: acked once a quarter of the window is owed,
        so the client's window refills in few frames.  Never sooner: what is
        owed below that leaves the client three quarters of its credit, so
        it cannot stall, and an ack per keystroke on a terminal was a frame,
        a send and a client wake-up in the way of every echo."""
        if self.proto.state is not State.RUNNING:
            return
        self.unacked += n
        if self.unacked >= self.settings.stdin_window // 4:
            self._send(StdinAck(self.unacked))
            self.unacked = 0

    def _finished(self, outcome: Outcome) -> None:
        """Report the end (Exit, log, audit) of whatever the last Run became."""
        self.cmd = None
        self.unacked = 0
        if self.idle_deadline is not None:  # idleness counts from the command's end
            self.idle_deadline = time.monotonic() + self.settings.idle_timeout
        self.proto.decoder.release()  # an idle session holds no read buffer
        try:
            self._send(Exit(outcome.exit_code, outcome.signal, outcome.error, self.ws.cwd,
                            outcome.duration))
        finally:  # recorded even when the client is gone before it hears the end
            self.record.finished(outcome)
        if self.shutdown_at is not None:
            self._shut()

    def _send_data(self, kind: int, data: bytes) -> None:
        frame = bytearray(HEADER_SIZE + len(data))
        pack_header_into(frame, 0, len(data), kind)
        frame[HEADER_SIZE:] = data
        self.stream.write(frame)

    # ---- handshake -------------------------------------------------------------------

    def _authenticate(self, msg: Auth) -> None:
        authorizer = self.settings.authorizer
        assert authorizer is not None  # Challenge is sent only when keys are asked for
        verdict = authorizer.verify(msg, self.nonce, peer_ip(self.stream.sock))
        grant = authorizer.report(verdict, self.record)
        if grant is None:
            raise LocalProtocolError("authentication failed", "auth-failed")
        self.login.admit(grant)
        self._greet()

    def _greet(self) -> None:
        settings = self.settings
        self._send(Welcome(settings.server_name, self.ws.cwd, login_name(),
                           settings.stdin_window, FEATURES))
        self.handshake_deadline = None
        if settings.idle_timeout:
            self.idle_deadline = time.monotonic() + settings.idle_timeout
        if self.on_authenticated is not None:
            self.on_authenticated()

    def _send(self, msg: Message, flush: bool = True) -> None:
        self.stream.write(self.proto.send(msg))
        if flush:
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
        if not self.drain_wake():
            return
        if self.cmd is None and self.xfer is None:
            self._shut()

    def _shut(self) -> None:
        self.end_reason = "shutdown: server is shutting down"
        self._send_fatal(Error("shutdown", "server is shutting down"))
        self.closing = True

    def _cleanup(self) -> None:
        xfer, self.xfer = self.xfer, None
        if xfer is not None:  # the connection went mid-transfer: nothing half-written stays
            xfer.close()
        cmd, self.cmd = self.cmd, None
        self.stream.close()  # first: the client learns at once that we are gone
        if cmd is not None:
            self.record.finished(cmd.abandon())
        end_login(self.login, self.settings, self.record)
        self.close()
        self.record.disconnected(self.login.commands, self.end_reason)


def end_login(login: Login, settings: Settings, record: Recorder) -> None:
    """Whatever a connection's commands daemonized out of their groups goes
    with the connection (exec/sweep.py), in the shared sweeper if there is one."""
    if not login.commands:
        return
    if settings.sweeper is not None:
        settings.sweeper.submit(login.marker, login.groups, record.swept)
    else:
        from rshell.exec import sweep

        record.swept(sweep.kill_session(login.marker, login.groups))


__all__ = ["FrameSink", "Session", "end_login"]
