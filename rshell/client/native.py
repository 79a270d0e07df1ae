"""The native backend: rshell's own protocol over TCP (TLS 1.3 by default).

client.handshake opens, pins and authenticates (``open_native``); this
module runs commands.  A single epoll loop per command multiplexes the socket, the
local stdin source and the connection's wake-up pipe: it is the only writer
to the socket, so stdin forwarding can never deadlock against output, and a
signal posted from another thread or a signal handler only wakes the loop.
Stdin is pulled only while the server grants credit and our queue is short;
output is decoded only as the consumer asks for the next chunk.  A command
left early is stopped with Signal frames and read to its Exit (``_stop``),
so the session stays READY for the next one.

Must not import click, paramiko, or the server side.
"""

from __future__ import annotations

import select
import signal
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from rshell.client.backend import (
    STDERR,
    STDOUT,
    STOP_GRACE,
    STOP_WAIT,
    Chunk,
    Finish,
    Request,
    Wakeup,
)
from rshell.client.stdin import Pump

if TYPE_CHECKING:
    from rshell.client.backend import Tally
    from rshell.transfer.receive import Receiver
    from rshell.transfer.send import Sender
from rshell.errors import (
    CommandTimeout,
    ConnectionClosed,
    ConnectionFailed,
    LocalProtocolError,
    RshellError,
    UsageError,
)
from rshell.paths import format_hostport
from rshell.protocol.frames import STDIN_CHUNK, BufferDecoder
from rshell.protocol.messages import (
    Closed,
    Exit,
    Message,
    Run,
    Signal,
    Stderr,
    Stdin,
    StdinEof,
    Stdout,
    WindowChange,
)
from rshell.protocol.messages import Pty as WirePty
from rshell.protocol.states import ClientProtocol, State
from rshell.transport import READ_ON, READS, Stream

_READ, _WRITE = select.EPOLLIN, select.EPOLLOUT
#: Stop pulling stdin while this much is queued for the server.
_HIGH_WATER = 4 * STDIN_CHUNK
#: How long past its own time limit we wait for the server's verdict.
_BACKSTOP = 5.0


class NativeBackend:
    """One connection to an rshell server (client.backend.Backend)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.address = format_hostport(host, port)
        self.user = self.server = self.home = ""
        #: What the server announced beyond version 1 (messages.FEATURES).
        self.features: frozenset[str] = frozenset()
        #: The server's host key fingerprint, once TLS has proven it (None without TLS).
        self.host_fingerprint: str | None = None
        self.proto = ClientProtocol(decoder=BufferDecoder(frames=8))
        self.stream: Stream | None = None
        self.sel: select.epoll | None = None
        self._wake_fd = -1
        self._broken: RshellError | None = None
        #: The descriptors the last wait found ready: stdin is read only then.
        self._ready: set[int] = set()

    def attach(self, stream: Stream) -> None:
        """Use ``stream`` (handshaken at the transport level) from now on."""
        self.stream = stream
        self.sel = select.epoll()
        self.sel.register(stream.fileno(), _READ)

    @property
    def terminals(self) -> bool:
        return "pty" in self.features

    @property
    def closed(self) -> bool:
        return self.stream is None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if self.sel is not None:
            self.sel.close()
            self.sel = None

    # ---- commands ----------------------------------------------------------------------

    def execute(self, request: Request, wake: Wakeup) -> Generator[Chunk, None, Finish]:
        stream = self._check_usable()
        sel = self.sel
        assert sel is not None
        if self._wake_fd != wake.fd:
            sel.register(wake.fd, _READ)
            self._wake_fd = wake.fd
        pump = request.stdin
        timeout = request.timeout
        pty = request.pty
        if pty is not None and not self.terminals:
            raise RshellError(f"{self.address} offers no terminals: its rshell-server "
                              "predates them (upgrade it, or run without -t)")
        self.write(Run(request.command, request.cwd, request.env, timeout, pump is not None,
                       None if pty is None else WirePty(pty.term, pty.cols, pty.rows)))
        deadline = time.monotonic() + timeout + _BACKSTOP if timeout else None

        def on_wake() -> None:
            self._deliver(wake)

        registered_fd = None
        fresh = True
        try:
            while True:
                # A watched stdin is read first, then when the wait found it
                # ready, not on every turn (a read that finds nothing is a
                # system call and an exception per chunk of output, and per
                # keystroke).  First: what epoll cannot watch (/dev/null) ends
                # at once.
                if pump is not None and (pump.fd is None or fresh or pump.fd in self._ready):
                    fresh = False
                    pump = self._pump_stdin(pump, stream, wake)
                can_send = self.proto.stdin_credit > 0 and stream.queued < _HIGH_WATER
                want_fd = pump.fd if pump is not None and can_send else None
                if want_fd != registered_fd:
                    if registered_fd is not None:
                        sel.unregister(registered_fd)
                    if want_fd is not None:
                        sel.register(want_fd, _READ)
                    registered_fd = want_fd
                busy = pump is not None and pump.fd is None and can_send
                msg = self.poll(deadline, busy=busy, on_wake=on_wake, until=wake.deadline)
                if msg is None and wake.deadline is not None \
                        and time.monotonic() >= wake.deadline:
                    if pump is None or pump.fd not in self._ready:
                        yield STDOUT, b""  # the consumer's turn (client.terminal)
                    continue  # (keys that just came go first)
                while msg is not None:
                    if isinstance(msg, Stdout):
                        yield STDOUT, msg.data
                    elif isinstance(msg, Stderr):
                        yield STDERR, msg.data
                    elif isinstance(msg, Exit):
                        self.proto.decoder.release()  # an idle connection keeps no megabytes
                        return Finish(msg.exit_code, msg.signal, msg.error, msg.cwd or None,
                                      msg.duration)
                    msg = self._next_event()
        except RshellError as exc:
            self._abandon(exc)
            raise
        except BaseException:  # left early: GeneratorExit, KeyboardInterrupt, ...
            if registered_fd is not None and self.sel is not None:
                self.sel.unregister(registered_fd)  # stdin is no longer wanted
                registered_fd = None
            self._stop(wake)
            raise
        finally:
            if registered_fd is not None and self.sel is not None:
                self.sel.unregister(registered_fd)
            if pump is not None:
                pump.close()

    def _check_usable(self) -> Stream:
        if self._broken is not None:
            raise ConnectionFailed(f"connection to {self.address} is unusable: {self._broken}")
        if self.stream is None:
            raise ConnectionFailed(f"connection to {self.address} is closed")
        if self.proto.state is not State.READY:
            raise RshellError("another command is still running on this connection")
        return self.stream

    def _abandon(self, exc: RshellError) -> None:
        """The connection's state is unknown now: nobody may use it again."""
        self._broken = exc
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def _stop(self, wake: Wakeup) -> None:
        """The consumer left the running command: SIGTERM, SIGKILL after
        STOP_GRACE, its output read away until its Exit, so the session is
        READY again.  No Exit within STOP_WAIT more, a failure, or another
        interrupt meanwhile: the connection is closed (the server then ends
        the command itself)."""
        if self.stream is None or self.proto.state is not State.RUNNING:
            return
        try:
            self.write(Signal(signal.SIGTERM))
            deadline, killed = time.monotonic() + STOP_GRACE, False
            while True:
                try:
                    msg = self.poll(deadline, on_wake=wake.take)  # late signals: moot
                except CommandTimeout:
                    if killed:
                        raise
                    self.write(Signal(signal.SIGKILL))
                    deadline, killed = time.monotonic() + STOP_WAIT, True
                    continue
                if isinstance(msg, Exit):
                    self.proto.decoder.release()
                    return
        except BaseException as exc:
            self._abandon(ConnectionFailed("command abandoned before it finished"))
            if not isinstance(exc, Exception):
                raise  # a KeyboardInterrupt again: still the user's

    def _pump_stdin(self, pump: Pump, stream: Stream, wake: Wakeup) -> Pump | None:
        proto = self.proto
        while proto.stdin_credit > 0 and stream.queued < _HIGH_WATER and pump.ready:
            asked = min(proto.stdin_credit, STDIN_CHUNK)
            data = pump.read(asked)
            if data is None:
                pump.close()
                self.write(StdinEof())
                return None
            if not data:
                break
            # A resize or signal posted before these keys were typed goes out
            # before them, as the remote terminal must see them.
            if wake.pending:
                self._deliver(wake)
            self.write(Stdin(data))
            if pump.fd is not None and len(data) < asked:
                break  # drained for now (a keystroke): the loop's epoll says when more comes
        return pump

    def _deliver(self, wake: Wakeup) -> None:
        running = self.proto.state is State.RUNNING
        for signum in wake.take():
            if running:
                self.write(Signal(signum))
        size = wake.take_size()
        if size is not None and running:
            self.write(WindowChange(*size))

    # ---- files (client.native_files) ---------------------------------------------------

    def put(self, sender: Sender, remote: str, *, recursive: bool, preserve: bool,
            many: bool) -> Tally:
        from rshell.client import native_files

        return native_files.put(self, sender, remote, recursive=recursive, preserve=preserve,
                                many=many)

    def get(self, paths: list[str], receiver: Receiver, *, recursive: bool,
            preserve: bool) -> Tally:
        from rshell.client import native_files

        return native_files.get(self, paths, receiver, recursive=recursive, preserve=preserve)

    # ---- the wire ------------------------------------------------------------------

    def write(self, msg: Message, flush: bool = True) -> None:
        """Frame and queue ``msg``; sent now unless ``flush`` is False (more
        frames follow at once, and go out joined: transport._JOIN)."""
        assert self.stream is not None
        try:
            frame = self.proto.send(msg)
        except LocalProtocolError as exc:
            if exc.code == "frame-too-large":  # a command, cwd and env too big to send
                raise UsageError(str(exc)) from None
            raise
        self.stream.write(frame)
        if flush:
            self.stream.flush()

    def until_message(self, deadline: float | None, what: str) -> Message:
        while True:
            msg = self.poll(deadline, what=what)
            if msg is not None:
                return msg

    def poll(
        self, deadline: float | None, busy: bool = False, what: str = "command",
        on_wake: Callable[[], object] | None = None, until: float | None = None,
    ) -> Message | None:
        """Wait for the socket, the wake-up pipe or stdin; the first complete
        message.  ``deadline`` passed is CommandTimeout; ``until`` passed
        (Wakeup.deadline) only ends the wait."""
        stream = self.stream
        assert stream is not None and self.sel is not None
        msg = self._next_event()
        self._ready = set()
        if msg is not None:
            return msg
        if not stream.pending():
            if busy:
                wait: float | None = 0.0
            elif deadline is None:
                wait = None
            else:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise CommandTimeout(f"{what} on {self.address} timed out")
            if until is not None:
                left = max(0.0, until - time.monotonic())
                wait = left if wait is None else min(wait, left)
            sock_fd = stream.fileno()
            if stream.queued:
                self.sel.modify(sock_fd, _READ | _WRITE)
            events = self.sel.poll(-1 if wait is None else wait)
            if stream.queued:
                self.sel.modify(sock_fd, _READ)
            self._ready = ready = {fd for fd, _ in events}
            if on_wake is not None and self._wake_fd in ready:
                on_wake()
            if stream.queued:
                stream.flush()
            if sock_fd not in ready:
                return None
        decoder = self.proto.decoder
        for _ in range(READS):
            n = stream.recv_into(decoder.writable())
            if n is None:  # EOF is an input: the messages before it still count
                self.proto.receive_eof()
                break
            decoder.commit(n)
            msg = self._next_event()
            # No message yet after a full read: read on (transport.READ_ON).
            if msg is not None or n < READ_ON:
                return msg
        return self._next_event()

    def _next_event(self) -> Message | None:
        """The next message; a clean close (after every message) is ConnectionClosed,
        a close mid-frame the protocol's RemoteProtocolError."""
        msg = self.proto.next_event()
        if isinstance(msg, Closed):
            raise ConnectionClosed(f"connection to {self.address} closed by the server")
        return msg
