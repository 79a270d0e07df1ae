"""The session state machines: which message may come when, for each side.

``ServerProtocol`` and ``ClientProtocol`` are h11-style objects with no I/O:
feed them received bytes with ``receive_data``, pull validated messages with
``next_event`` (None means "need more data"), and turn outgoing messages into
bytes with ``send``.  A message out of order is a LocalProtocolError that
names the message and the state; a peer's Error message surfaces as a
RemoteProtocolError.  Stdin flow control (the window a Run opens, the acks
that refill it) is enforced here, so neither side can be flooded.

The hot path (stdout/stderr chunks) bypasses ``send`` and is framed by the
service directly with ``frames.pack_header_into``; it is only legal in the
RUNNING state, which the service guarantees by construction.

Sans-IO: never imports socket, ssl, threading or subprocess.
"""

from __future__ import annotations

from enum import Enum

from rshell.errors import LocalProtocolError, RemoteProtocolError
from rshell.protocol.frames import HEADER_SIZE, MAX_PAYLOAD, BufferDecoder
from rshell.protocol.messages import (
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    Error,
    Exit,
    Hello,
    Message,
    Run,
    Signal,
    Stderr,
    Stdin,
    StdinAck,
    StdinEof,
    Stdout,
    Welcome,
    decode,
    encode,
)

#: Stdin bytes a client may send ahead of the server's acks, per command.
DEFAULT_STDIN_WINDOW = 2 * 1024 * 1024


class State(Enum):
    HELLO = "hello"  # nothing yet
    GREETING = "greeting"  # client: Hello sent, awaiting Challenge or Welcome
    AUTH = "auth"  # challenge issued, awaiting Auth
    CHECKING = "checking"  # server: Auth received, verdict pending
    READY = "ready"  # authenticated, no command running
    RUNNING = "running"  # one command running
    CLOSED = "closed"


class _Endpoint:
    __slots__ = ("decoder", "state", "stdin_credit", "stdin_window")

    def __init__(
        self, max_payload: int = MAX_PAYLOAD, decoder: BufferDecoder | None = None
    ) -> None:
        #: I/O code may receive straight into a BufferDecoder's ``writable()``.
        self.decoder = decoder if decoder is not None else BufferDecoder(max_payload)
        self.state = State.HELLO
        self.stdin_window = DEFAULT_STDIN_WINDOW
        self.stdin_credit = 0

    def receive_data(self, data: bytes) -> None:
        self.decoder.feed(data)

    def next_event(self) -> Message | None:
        if self.state is State.CLOSED:
            return None
        try:
            frame = self.decoder.next_frame()
            if frame is None:
                return None
            msg = decode(*frame)
            if isinstance(msg, Error):
                self.state = State.CLOSED
                raise RemoteProtocolError(
                    f"peer reported an error: {msg.message or msg.code}", msg.code
                )
            self._received(msg)
        except LocalProtocolError:
            self.state = State.CLOSED
            raise
        return msg

    def send(self, msg: Message) -> bytes:
        """The frame for ``msg``; refused (LocalProtocolError, state unchanged) if
        it is not legal now or is larger than any peer may accept."""
        frame = encode(msg)
        if len(frame) - HEADER_SIZE > MAX_PAYLOAD:
            raise LocalProtocolError(
                f"{type(msg).__name__} of {len(frame) - HEADER_SIZE} bytes exceeds the "
                f"{MAX_PAYLOAD} byte frame limit", "frame-too-large",
            )
        if isinstance(msg, Error):
            self.state = State.CLOSED
        else:
            self._sent(msg)
        return frame

    def _unexpected(self, msg: Message) -> LocalProtocolError:
        return LocalProtocolError(
            f"unexpected {type(msg).__name__} message in state {self.state.value}", "unexpected"
        )

    def _received(self, msg: Message) -> None:
        raise NotImplementedError

    def _sent(self, msg: Message) -> None:
        raise NotImplementedError


class ServerProtocol(_Endpoint):
    """The server's side: Hello -> [Challenge, Auth] -> Welcome -> (Run ... Exit)*."""

    def _received(self, msg: Message) -> None:
        state = self.state
        if isinstance(msg, Hello) and state is State.HELLO:
            if msg.version != PROTOCOL_VERSION:
                raise LocalProtocolError(
                    f"unsupported protocol version {msg.version} (this server speaks "
                    f"{PROTOCOL_VERSION})",
                    "version",
                )
            self.state = State.GREETING
        elif isinstance(msg, Auth) and state is State.AUTH:
            self.state = State.CHECKING
        elif isinstance(msg, Run) and state is State.READY:
            self.state = State.RUNNING
            self.stdin_credit = self.stdin_window
        elif isinstance(msg, Stdin) and state in (State.RUNNING, State.READY):
            # READY: the command ended while the client was still sending.
            self.stdin_credit -= len(msg.data)
            if self.stdin_credit < 0 and state is State.RUNNING:
                raise LocalProtocolError("stdin sent beyond the granted window", "flow-control")
        elif isinstance(msg, (StdinEof, Signal)) and state in (State.RUNNING, State.READY):
            pass
        else:
            raise self._unexpected(msg)

    def _sent(self, msg: Message) -> None:
        state = self.state
        if isinstance(msg, Challenge) and state is State.GREETING:
            self.state = State.AUTH
        elif isinstance(msg, Welcome) and state in (State.GREETING, State.CHECKING):
            self.stdin_window = msg.stdin_window
            self.state = State.READY
        elif isinstance(msg, (Stdout, Stderr)) and state is State.RUNNING:
            pass
        elif isinstance(msg, StdinAck) and state is State.RUNNING:
            self.stdin_credit += msg.count
        elif isinstance(msg, Exit) and state is State.RUNNING:
            self.state = State.READY
        else:
            raise self._unexpected(msg)


class ClientProtocol(_Endpoint):
    """The client's side, mirror of ServerProtocol."""

    def _received(self, msg: Message) -> None:
        state = self.state
        if isinstance(msg, Challenge) and state is State.GREETING:
            self.state = State.AUTH
        elif isinstance(msg, Welcome) and state in (State.GREETING, State.CHECKING):
            self.stdin_window = msg.stdin_window
            self.state = State.READY
        elif isinstance(msg, (Stdout, Stderr)) and state is State.RUNNING:
            pass
        elif isinstance(msg, StdinAck) and state is State.RUNNING:
            self.stdin_credit += msg.count
        elif isinstance(msg, Exit) and state is State.RUNNING:
            self.state = State.READY
        else:
            raise self._unexpected(msg)

    def _sent(self, msg: Message) -> None:
        state = self.state
        if isinstance(msg, Hello) and state is State.HELLO:
            self.state = State.GREETING
        elif isinstance(msg, Auth) and state is State.AUTH:
            self.state = State.CHECKING
        elif isinstance(msg, Run) and state is State.READY:
            self.state = State.RUNNING
            self.stdin_credit = self.stdin_window
        elif isinstance(msg, Stdin) and state is State.RUNNING:
            if len(msg.data) > self.stdin_credit:
                raise LocalProtocolError("stdin beyond the granted window", "flow-control")
            self.stdin_credit -= len(msg.data)
        elif isinstance(msg, (StdinEof, Signal)) and state is State.RUNNING:
            pass
        else:
            raise self._unexpected(msg)
