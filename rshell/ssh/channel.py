"""One SSH session channel (exec, a terminal, the line session) over the engine.

``ChannelDriver`` is an ``exec.loop.Loop`` over the channel's event pipe
(readable on data, EOF or close from the client) and its wake-up eventfd
(poked by paramiko when the send window opens or the channel closes, by a
``signal`` or ``window-change`` request and by a stop).  It builds the same
``Request`` as the native session, calls the same ``decide``, runs the same
``Command`` with a ``ChannelSink`` and reports the same ``Outcome``; only
the wire differs.

On a terminal (the channel's granted ``pty-req``, ssh/server.py) the
command is the same ``Command`` on a pty: its output, merged, goes out as
channel data (stdout, as sshd sends it); the client's EOF becomes the
terminal's EOF character (``Command.end_stdin``); a window change becomes
``Command.resize``; the client gone is the same abandon as for any command
(SIGHUP to the terminal's session, then the group's termination).

Must not import click or the client side.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

import paramiko

from rshell.errors import ConnectionFailed, LocalProtocolError
from rshell.exec.command import STDERR, STDOUT, Command
from rshell.exec.loop import READ, Loop
from rshell.exec.policy import Answer, Launch, Request, Workspace, decide
from rshell.exec.record import Outcome
from rshell.exec.terminal import Pty
from rshell.protocol.frames import MAX_PAYLOAD
from rshell.shellwords import CommandReader
from rshell.ssh._paramiko import FAILURES, send_exit, unwatch_channel, watch_channel

if TYPE_CHECKING:
    from rshell.exec.policy import Login
    from rshell.exec.record import Recorder
    from rshell.server.settings import Settings


class Connection(Protocol):
    """What a channel needs of its SSH connection (ssh.server.SshConnection)."""

    peer: str
    settings: Settings
    login: Login
    record: Recorder

    def end(self, reason: str) -> None: ...

    def release(self, chanid: int) -> None: ...

log = logging.getLogger("rshell.server")

_CHUNK = 64 * 1024
#: Channel data taken for a command's stdin beyond what its pipe holds.
_STDIN_AHEAD = 1 << 20
#: Stdout held within one loop turn, at most (paramiko's largest packet).
_HOLD = 32 * 1024
#: A line of the line session: as long as a native frame may be.
MAX_LINE = MAX_PAYLOAD


class ChannelSink:
    """Command output to an SSH channel, as far as its window allows now; the
    rest waits (bounded by the engine's HIGH_WATER) for a window-adjust.

    Small stdout chunks of one loop turn (a terminal's reads are at most
    4 KiB each) are held and sent together when the turn ends (``flush``,
    from ChannelDriver.poll): one paramiko packet of up to _HOLD bytes
    instead of one per read, each of which costs paramiko's Python."""

    headroom = 0

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.pending: deque[tuple[int, bytes]] = deque()
        self.held = bytearray()  # this turn's small stdout, not yet sent
        self.queued = 0

    def output(self, kind: int, buf: bytearray, n: int) -> bool:
        view = memoryview(buf)[:n]
        if kind == STDOUT and len(self.held) + n <= _HOLD:
            self.held += view
            self.queued += n
            return True
        self._release()  # what was held goes first, in order
        sent = self._send(kind, view) if not self.pending else 0
        if sent < n:
            self.pending.append((kind, bytes(view[sent:])))
            self.queued += n - sent
        return True  # paramiko copied what it sent; the rest was copied here

    def _release(self) -> None:
        """What was held joins the channel's queue, sent as far as the window allows."""
        if not self.held:
            return
        data, self.held = bytes(self.held), bytearray()
        sent = self._send(STDOUT, memoryview(data)) if not self.pending else 0
        self.queued -= sent
        if sent < len(data):
            self.pending.append((STDOUT, data[sent:]))

    def flush(self) -> None:
        self._release()
        while self.pending:
            kind, data = self.pending[0]
            sent = self._send(kind, memoryview(data))
            self.queued -= sent
            if sent < len(data):
                self.pending[0] = (kind, data[sent:])
                return
            self.pending.popleft()

    def _send(self, kind: int, view: memoryview) -> int:
        send = self.channel.send if kind == STDOUT else self.channel.send_stderr
        sent = 0
        try:
            while sent < len(view):
                n = send(view[sent:])
                if n == 0:  # EOF sent or closed: the client is gone
                    raise ConnectionFailed("channel closed")
                sent += n
        except TimeoutError:
            pass  # the window is shut: wait for the peer to open it
        except FAILURES as exc:
            raise ConnectionFailed(f"channel closed: {exc}") from None
        return sent


class ChannelDriver(Loop):
    """One exec or shell channel over the engine, in its own thread."""

    def __init__(self, conn: Connection, channel: paramiko.Channel) -> None:
        super().__init__()
        self.conn, self.channel = conn, channel
        self.limits = conn.settings.limits
        self.sink = ChannelSink(channel)
        self.cmd: Command | None = None
        self.ws: Workspace = conn.login.workspace()
        self.shutdown_at: float | None = None
        self.signals: deque[int] = deque()
        # A window change not yet applied, the latest only (atomic append/popleft).
        self.size: deque[tuple[int, int]] = deque(maxlen=1)
        self.on_terminal = False  # the channel's command runs on a pty
        self.lines: _Lines | None = None
        self.status = 0  # what the line session exits with
        self.active_at = time.monotonic()  # input or a command's end, for the idle rule
        self.idle_reason: str | None = None
        self.chan_fd = channel.fileno()  # readable: data, EOF or close from the client
        watch_channel(channel, self.wake)

    def poll(self, timeout: float | None) -> None:
        """A loop turn; what it held for the channel is sent at its end."""
        super().poll(timeout)
        self.sink.flush()

    # ---- from other threads -------------------------------------------------------

    def request_shutdown(self, at: float) -> None:
        self.shutdown_at = at
        self.wake()

    def post_signal(self, signum: int) -> None:
        self.signals.append(signum)
        self.wake()

    def post_resize(self, cols: int, rows: int) -> None:
        """A ``window-change`` for the channel's terminal (paramiko's thread)."""
        self.size.append((cols, rows))
        self.wake()

    def close_idle(self, reason: str) -> None:
        """The connection was idle too long: a waiting line session says so and ends."""
        self.idle_reason = reason
        self.wake()

    @property
    def busy(self) -> bool:
        """Running a command, or an exec channel (which is nothing but one)."""
        return self.cmd is not None or self.lines is None

    # ---- the channel's life ---------------------------------------------------------

    def serve(self, kind: str, command: str | None, pty: Pty | None = None) -> None:
        """Run what the channel asked for: ``exec`` its command, ``shell`` the
        login shell on a terminal, or the forced command, or else the line
        session; ``pty``: the terminal granted to it, at its latest size."""
        record = self.conn.record
        self.on_terminal = pty is not None
        try:
            self.set(self.wake_fd, READ, self._on_wake)
            if kind == "exec" and command is not None:
                self._exec(Request(command, stdin=True, pty=pty))
            elif kind == "shell" and (pty is not None or self.conn.login.grant.forced is not None):
                # As sshd: the login shell on the terminal (decide: an empty
                # command with a pty), or the forced command, once.
                self._exec(Request("", stdin=True, pty=pty))
            elif kind == "shell":
                self._line_session()
        except LocalProtocolError as exc:  # past --max-commands: the connection goes
            self.conn.end(f"{exc.code}: {exc}")
            self._refuse(str(exc))
        except ConnectionFailed:
            pass  # the client went: the finally ends what runs
        except FAILURES as exc:
            log.info("%s: ssh channel ended: %s", self.conn.peer, exc)
        finally:
            if self.cmd is not None:
                record.finished(self.cmd.abandon())
            unwatch_channel(self.channel)
            self.close()  # our epoll first: the channel's pipe goes with the channel
            self.conn.release(self.channel.get_id())  # its slot, before the client sees the close
            self.channel.close()

    def _refuse(self, reason: str) -> None:
        """Say why, then end the channel and the whole connection."""
        try:
            self._say(reason)
            self._exit(255, None)
            self.channel.close()  # before the transport: ssh then sees no abrupt end
        except (ConnectionFailed, *FAILURES):
            pass  # the client went first
        self.channel.get_transport().close()

    def _exec(self, request: Request) -> None:
        outcome = self._run(request)
        if outcome is not None:
            self._exit(outcome.exit_code, outcome.signal)

    def _run(self, request: Request) -> Outcome | None:
        """One command to its end, reported; None when the channel went first."""
        plan = decide(request, self.ws, self.limits)
        if isinstance(plan, Answer):
            if plan.stderr:
                self._send_stderr(plan.stderr)
            return self._finished(plan.outcome)
        return self._launch(plan)

    def _launch(self, plan: Launch) -> Outcome | None:
        from rshell.exec.child import StartError

        login, record = self.conn.login, self.conn.record
        try:
            self.cmd = Command(plan, self, self.sink, self.limits)
        except StartError as exc:
            return self._finished(Outcome(plan.text, 127, None, str(exc)))
        login.groups.add(self.cmd.child.pid)
        record.started(plan.text, plan.cwd, self.cmd.child.pid, plan.forced,
                       recording=self.cmd.recording)
        while True:
            outcome = self._turn()
            if outcome is not None:
                self.cmd = None
                return self._finished(outcome)

    def _turn(self) -> Outcome | None:
        """One loop turn while a command runs: its Outcome once it is over."""
        cmd = self.cmd
        assert cmd is not None
        wants = cmd.stdin_open and cmd.stdin_queued < _STDIN_AHEAD
        self.set(self.chan_fd, READ if wants else 0, self._on_stdin)
        cmd.sync()
        times = [cmd.next_deadline(), None if cmd.stopping else self.shutdown_at]
        pending = [t for t in times if t is not None]
        self.poll(max(0.0, min(pending) - time.monotonic()) if pending else None)
        now = time.monotonic()
        if self.shutdown_at is not None and now >= self.shutdown_at:
            cmd.stop("server shutting down")
        cmd.check(now)
        return cmd.finish()

    def _finished(self, outcome: Outcome) -> Outcome:
        self.conn.record.finished(outcome)
        if outcome.reason:  # the server's word; a plain failure says nothing, as sshd
            self._say(f"command error: {outcome.reason}")
        return outcome

    # ---- the line session -------------------------------------------------------------

    def _line_session(self) -> None:
        """Complete commands from the channel, as sh reads a script (a command
        may span lines: shellwords.CommandReader), run one at a time (no
        stdin), until EOF or ``exit``; the exit status is the last command's."""
        self.lines = lines = _Lines()
        reader = CommandReader()
        pending = 0  # bytes of an unfinished command, capped as one line is
        while True:
            line = lines.next()
            if line is None:
                if not lines.eof:
                    if self.shutdown_at is not None or self.idle_reason is not None:
                        self._say(self.idle_reason or "server shutting down")
                        self.status = 255
                        break
                    self.set(self.chan_fd, READ, self._on_line_data)
                    self.poll(None)
                    continue
                command = reader.flush()  # unfinished at EOF: the shell says what is wrong
                if command is None:
                    break
            else:
                self.set(self.chan_fd, 0, None)  # the lines wait in the window
                command = reader.add(line.decode("utf-8", "surrogateescape"))
                if command is None:
                    pending += len(line) + 1
                    if pending > MAX_LINE:
                        self._say(f"command longer than {MAX_LINE} bytes; closing")
                        self._exit(255, None)
                        return
                    continue
            pending = 0
            text = command.strip()
            if not text:
                continue
            word, _, rest = text.partition(" ")
            if word in ("exit", "logout") and (not rest.strip() or rest.strip().isdigit()):
                self.status = int(rest) & 0xFF if rest.strip() else self.status
                break
            outcome = self._run(Request(text))
            if outcome is None:
                return
            self.status = _status(outcome)
            self.active_at = time.monotonic()
        self._exit(self.status, None)

    def _on_line_data(self, mask: int) -> None:
        assert self.lines is not None
        data = self._recv()
        if data is None:
            return
        if not self.lines.feed(data):
            self._say(f"line longer than {MAX_LINE} bytes; closing")
            self._exit(255, None)
            raise ConnectionFailed("line too long")

    # ---- channel I/O ------------------------------------------------------------------

    def _on_stdin(self, mask: int) -> None:
        cmd = self.cmd
        # A window change the client sent before these keys takes effect
        # before they reach the terminal, as the SSH stream ordered them.
        self._resize()
        data = self._recv()
        if cmd is None or data is None:
            return
        if data:
            cmd.feed(data)
        else:
            self.set(self.chan_fd, 0, None)
            cmd.end_stdin()

    def _recv(self) -> bytes | None:
        """Data from the client (b"" at EOF); None if none is there after all."""
        try:
            data: bytes = self.channel.recv(_CHUNK)
        except TimeoutError:
            return None
        if not data and self.lines is not None:
            self.lines.eof = True
        self.active_at = time.monotonic()
        return data

    def _on_wake(self, mask: int) -> None:
        self.drain_wake()
        if self.channel.closed:
            raise ConnectionFailed("client disconnected")
        self.sink.flush()
        while self.signals:
            signum = self.signals.popleft()
            if self.cmd is not None:
                self.cmd.signal(signum)
        self._resize()

    def _resize(self) -> None:
        """Apply the latest window change heard, if any (on a terminal only)."""
        if self.size and self.cmd is not None:
            self.cmd.resize(*self.size.popleft())

    def _say(self, text: str) -> None:
        # A terminal's client is in raw mode: a bare newline would not return the carriage.
        end = "\r\n" if self.on_terminal else "\n"
        self._send_stderr(f"rshell: {text}{end}".encode())

    def _send_stderr(self, data: bytes) -> None:
        self.sink.output(STDERR, bytearray(data), len(data))
        self._drain()

    def _drain(self) -> None:
        """Wait until the client took what is queued: it goes before the exit
        status.  A client gone ends the wait (the wake-up raises), and so does
        a stop's end (the grace and the kill grace spent)."""
        self.sink.flush()  # what this turn held first: nothing else may wake the wait
        while self.sink.queued:
            stop = self.shutdown_at
            if stop is None:
                self.poll(None)
                continue
            left = stop + self.limits.kill_grace - time.monotonic()
            if left <= 0:
                return
            self.poll(left)

    def _exit(self, code: int | None, signum: int | None) -> None:
        self._drain()
        try:
            send_exit(self.channel, code, signum)
        except FAILURES:
            pass


class _Lines:
    """Bytes split into lines, none longer than MAX_LINE (checked as data comes)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False

    def feed(self, data: bytes) -> bool:
        """False if a line grew past MAX_LINE."""
        self.buffer += data
        end = self.buffer.rfind(b"\n")
        return len(self.buffer) - (end + 1) <= MAX_LINE

    def next(self) -> bytes | None:
        at = self.buffer.find(b"\n")
        if at >= 0:
            line = bytes(self.buffer[:at])
            del self.buffer[: at + 1]
            return line
        if self.eof and self.buffer:  # a last line without a newline still runs
            line, self.buffer = bytes(self.buffer), bytearray()
            return line
        return None


def _status(outcome: Outcome) -> int:
    """The status a shell would give ``$?``: the code, 128+N for signal N."""
    if outcome.signal:
        return 128 + outcome.signal
    return outcome.exit_code if outcome.exit_code is not None else 255
