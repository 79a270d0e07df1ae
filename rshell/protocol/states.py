"""The session state machine: which message may come when, for each side.

``ServerProtocol`` and ``ClientProtocol`` are h11-style objects with no I/O:
feed them received bytes with ``receive_data`` (or receive in place through
``decoder``), say the stream ended with ``receive_eof``, pull validated
messages with ``next_event`` (None means "need more data"; ``Closed`` means
the peer's stream ended cleanly), and turn outgoing messages into bytes with
``send``.

Both sides are driven by one table, ``TRANSITIONS``, derived from the
conversation written once as ``CONVERSATION`` (who sends what in which state,
and where it leads): a client *sending* Run in READY and a server *receiving*
it are the same rule.  A message that has no entry for (role, state,
direction, type) is a LocalProtocolError (``unexpected``) naming the message
and the state.  Stdin flow control (the window a Run opens, the acks that
refill it) rides on the same entries as their effects, so neither side can
be flooded.  A peer's Error message surfaces as a RemoteProtocolError, and so
does a stream that ended inside a frame (``truncated``).

The hot path (stdout/stderr chunks) bypasses ``send`` and is framed by the
server directly with ``frames.pack_header_into``; it is only legal in the
RUNNING state, which the server guarantees by construction.

Sans-IO: never imports socket, ssl, threading or subprocess.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar, NamedTuple

from rshell.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from rshell.protocol.frames import HEADER_SIZE, MAX_PAYLOAD, BufferDecoder
from rshell.protocol.messages import (
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    Closed,
    Done,
    Entry,
    EntryEnd,
    Error,
    Exit,
    FileData,
    Get,
    Hello,
    Message,
    Put,
    PutReady,
    Run,
    Signal,
    Stderr,
    Stdin,
    StdinAck,
    StdinEof,
    Stdout,
    TransferEnd,
    Verdict,
    Welcome,
    WindowChange,
    decode,
    encode,
)

#: Stdin bytes a client may send ahead of the server's acks, per command.
DEFAULT_STDIN_WINDOW = 2 * 1024 * 1024


class State(Enum):
    HELLO = "hello"  # nothing yet
    GREETING = "greeting"  # Hello sent, awaiting Challenge or Welcome
    AUTH = "auth"  # challenge issued, awaiting Auth
    CHECKING = "checking"  # Auth sent, the server's verdict pending
    READY = "ready"  # authenticated, no command running
    RUNNING = "running"  # one command running
    PUT_ASKED = "put-asked"  # Put sent, the server's PutReady (or refusal) pending
    PUTTING = "putting"  # the client sends entries
    PUT_DONE = "put-done"  # every entry sent, the server's TransferEnd pending
    GETTING = "getting"  # the server sends entries
    CLOSED = "closed"

    # Members are singletons: hash them by identity, in C, instead of Enum's
    # Python-level hash of the name (every message looks its state up).
    __hash__ = object.__hash__


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class Direction(Enum):
    SEND = "send"
    RECEIVE = "receive"


class Effect(Enum):
    """What a transition does besides changing state: the stdin-window rules,
    and the version check.  Each applies on both sides unless noted."""

    NONE = "none"
    VERSION = "version"  # receiver only: Hello must speak our protocol version
    WINDOW = "window"  # Welcome: the window every later command opens with
    OPEN = "open"  # Run: a fresh window of credit
    SPEND = "spend"  # Stdin: spends credit; the sender may not overdraw, the
    # receiver refuses an overdraft while RUNNING
    REFILL = "refill"  # StdinAck: credit back


class Rule(NamedTuple):
    """One line of the conversation: ``sender`` may send ``message`` in any of
    ``states``; both sides then move to ``next`` (None: stay)."""

    sender: Role
    states: tuple[State, ...]
    message: type[Message]
    next: State | None = None
    effect: Effect = Effect.NONE


class Step(NamedTuple):
    next: State
    effect: Effect


_C, _S = Role.CLIENT, Role.SERVER
_HELLO, _GREETING, _AUTH, _CHECKING, _READY, _RUNNING = (
    State.HELLO, State.GREETING, State.AUTH, State.CHECKING, State.READY, State.RUNNING
)
_PUT_ASKED, _PUTTING, _PUT_DONE, _GETTING = (
    State.PUT_ASKED, State.PUTTING, State.PUT_DONE, State.GETTING
)

#: The conversation, each rule once (PROTOCOL.md section 5).  Error is legal in
#: every state, both ways, and ends the session: it is not in the table.
CONVERSATION: tuple[Rule, ...] = (
    Rule(_C, (_HELLO,), Hello, _GREETING, Effect.VERSION),
    Rule(_S, (_GREETING,), Challenge, _AUTH),
    Rule(_C, (_AUTH,), Auth, _CHECKING),
    Rule(_S, (_GREETING, _CHECKING), Welcome, _READY, Effect.WINDOW),
    Rule(_C, (_READY,), Run, _RUNNING, Effect.OPEN),
    Rule(_C, (_RUNNING,), Stdin, effect=Effect.SPEND),
    Rule(_C, (_RUNNING,), StdinEof),
    Rule(_C, (_RUNNING,), Signal),
    Rule(_C, (_RUNNING,), WindowChange),
    Rule(_S, (_RUNNING,), Stdout),
    Rule(_S, (_RUNNING,), Stderr),
    Rule(_S, (_RUNNING,), StdinAck, effect=Effect.REFILL),
    Rule(_S, (_RUNNING,), Exit, _READY),
    # File transfer (feature "files"): the server alone ends one, with TransferEnd.
    Rule(_C, (_READY,), Put, _PUT_ASKED),
    Rule(_S, (_PUT_ASKED,), PutReady, _PUTTING),
    Rule(_C, (_PUTTING,), Entry),
    Rule(_C, (_PUTTING,), FileData),
    Rule(_C, (_PUTTING,), EntryEnd),
    Rule(_C, (_PUTTING,), Done, _PUT_DONE),
    Rule(_C, (_READY,), Get, _GETTING),
    Rule(_S, (_GETTING,), Entry),
    Rule(_S, (_GETTING,), FileData),
    Rule(_S, (_GETTING,), EntryEnd),
    Rule(_S, (_PUTTING, _PUT_DONE, _GETTING), Verdict),
    Rule(_S, (_PUT_ASKED, _PUTTING, _PUT_DONE, _GETTING), TransferEnd, _READY),
)

#: The READY race: Exit and the client's stdin cross on the wire, so the server
#: accepts (and the session ignores) these after Exit; a client never sends them.
LATE: tuple[Rule, ...] = (
    Rule(_C, (_READY,), Stdin, effect=Effect.SPEND),
    Rule(_C, (_READY,), StdinEof),
    Rule(_C, (_READY,), Signal),
    Rule(_C, (_READY,), WindowChange),
    # A Put the server ended early (refused midway, stopping): the entries
    # already on their way arrive after its TransferEnd, and are dropped.
    Rule(_C, (_READY,), Entry),
    Rule(_C, (_READY,), FileData),
    Rule(_C, (_READY,), EntryEnd),
    Rule(_C, (_READY,), Done),
)

Key = tuple[Role, State, Direction, type[Message]]


def _build() -> dict[Key, Step]:
    table: dict[Key, Step] = {}
    peer = {_C: _S, _S: _C}
    for rules, directions in ((CONVERSATION, (Direction.SEND, Direction.RECEIVE)),
                              (LATE, (Direction.RECEIVE,))):
        for rule in rules:
            for state in rule.states:
                step = Step(rule.next or state, rule.effect)
                for direction in directions:
                    role = rule.sender if direction is Direction.SEND else peer[rule.sender]
                    key = (role, state, direction, rule.message)
                    assert key not in table, f"two rules for {key}"
                    table[key] = step
    return table


#: (role, state, direction, message type) -> (next state, effect); every other
#: combination is ``unexpected``.
TRANSITIONS: dict[Key, Step] = _build()


def _slice(role: Role, direction: Direction) -> dict[tuple[State, type[Message]], Step]:
    """One endpoint's view of TRANSITIONS, keyed for the per-message lookup."""
    return {(state, kind): step for (r, state, d, kind), step in TRANSITIONS.items()
            if r is role and d is direction}


class _Endpoint:
    """One side of a session; ServerProtocol and ClientProtocol differ only in ``role``."""

    __slots__ = ("decoder", "state", "stdin_credit", "stdin_window", "_eof", "_closed")

    role: ClassVar[Role]
    _sending: ClassVar[dict[tuple[State, type[Message]], Step]]
    _receiving: ClassVar[dict[tuple[State, type[Message]], Step]]

    def __init__(
        self, max_payload: int = MAX_PAYLOAD, decoder: BufferDecoder | None = None
    ) -> None:
        #: I/O code may receive straight into a BufferDecoder's ``writable()``.
        self.decoder = decoder if decoder is not None else BufferDecoder(max_payload)
        self.state = State.HELLO
        self.stdin_window = DEFAULT_STDIN_WINDOW
        self.stdin_credit = 0
        self._eof = False
        self._closed: Closed | None = None  # what a CLOSED session reads: None, or Closed

    def __init_subclass__(cls, role: Role | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if role is not None:
            cls.role = role
            cls._sending = _slice(role, Direction.SEND)
            cls._receiving = _slice(role, Direction.RECEIVE)

    # ---- input -----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer (empty: nothing; the end is ``receive_eof``)."""
        if data and self._eof:
            raise RuntimeError("data received after the end of the stream")
        self.decoder.feed(data)

    def receive_eof(self) -> None:
        """The peer's stream ended.  ``next_event`` then returns the complete
        messages still buffered, then ``Closed`` if the end fell between frames
        (and again on every later call, as h11 does), or raises
        RemoteProtocolError (``truncated``) if it cut a frame."""
        self._eof = True

    def next_event(self) -> Message | None:
        """The next message from the peer; None if more bytes are needed (or the
        session ended in an error), ``Closed`` once the stream has ended cleanly.
        LocalProtocolError if it breaks the protocol, RemoteProtocolError if it
        is the peer's Error or a cut frame; either way, CLOSED."""
        if self.state is State.CLOSED:
            return self._closed
        try:
            frame = self.decoder.next_frame()
            if frame is None:
                return self._end() if self._eof else None
            msg = decode(*frame)
            step = self._receiving.get((self.state, type(msg)))
            if step is None:
                if isinstance(msg, Error):  # legal in every state: the peer is done
                    self.state = State.CLOSED
                    raise RemoteProtocolError(
                        f"peer reported an error: {msg.message or msg.code}", msg.code
                    )
                raise self._unexpected(msg)
            if step.effect is not Effect.NONE:
                self._received_effect(step.effect, msg)
            self.state = step.next
        except LocalProtocolError:
            self.state = State.CLOSED
            raise
        return msg

    # ---- output ----------------------------------------------------------------

    def send(self, msg: Message) -> bytes:
        """The frame for ``msg``; refused (LocalProtocolError, state unchanged) if
        it is not legal now or is larger than any peer may accept."""
        step = self._sending.get((self.state, type(msg)))
        if step is None and type(msg) is not Error:
            raise self._unexpected(msg)
        frame = encode(msg)
        if len(frame) - HEADER_SIZE > MAX_PAYLOAD:
            raise LocalProtocolError(
                f"{type(msg).__name__} of {len(frame) - HEADER_SIZE} bytes exceeds the "
                f"{MAX_PAYLOAD} byte frame limit", ErrorCode.FRAME_TOO_LARGE,
            )
        if step is None:  # an Error: this side closes
            self.state = State.CLOSED
            return frame
        if step.effect is not Effect.NONE:
            self._sent_effect(step.effect, msg)
        self.state = step.next
        return frame

    # ---- the rules beside the table ----------------------------------------------

    def _received_effect(self, effect: Effect, msg: Message) -> None:
        if effect is Effect.SPEND:  # in READY (late stdin) nothing is owed
            assert isinstance(msg, Stdin)
            self.stdin_credit -= len(msg.data)
            if self.stdin_credit < 0 and self.state is State.RUNNING:
                raise LocalProtocolError(
                    "stdin sent beyond the granted window", ErrorCode.FLOW_CONTROL
                )
        elif effect is Effect.VERSION:
            assert isinstance(msg, Hello)
            if msg.version != PROTOCOL_VERSION:
                raise LocalProtocolError(
                    f"unsupported protocol version {msg.version} (this server speaks "
                    f"{PROTOCOL_VERSION})", ErrorCode.VERSION,
                )
        else:
            self._window_effect(effect, msg)

    def _sent_effect(self, effect: Effect, msg: Message) -> None:
        if effect is Effect.SPEND:  # checked before any credit is taken
            assert isinstance(msg, Stdin)
            if len(msg.data) > self.stdin_credit:
                raise LocalProtocolError(
                    "stdin beyond the granted window", ErrorCode.FLOW_CONTROL
                )
            self.stdin_credit -= len(msg.data)
        elif effect is not Effect.VERSION:  # our own Hello is the peer's to judge
            self._window_effect(effect, msg)

    def _window_effect(self, effect: Effect, msg: Message) -> None:
        """The effects that are the same whichever side sent the message."""
        if effect is Effect.OPEN:
            self.stdin_credit = self.stdin_window
        elif effect is Effect.REFILL:
            assert isinstance(msg, StdinAck)
            self.stdin_credit += msg.count
        else:
            assert effect is Effect.WINDOW and isinstance(msg, Welcome)
            self.stdin_window = msg.stdin_window

    def _end(self) -> Closed:
        """The stream ended and every complete frame has been returned."""
        self.state = State.CLOSED
        held, size = self.decoder.partial()
        if not held:
            self._closed = Closed()
            return self._closed
        where = (f"{held} of {HEADER_SIZE} header bytes" if size is None
                 else f"{held} of {size} bytes")
        raise RemoteProtocolError(
            f"connection closed mid-frame ({where})", ErrorCode.TRUNCATED
        )

    def _unexpected(self, msg: Message) -> LocalProtocolError:
        return LocalProtocolError(
            f"unexpected {type(msg).__name__} message in state {self.state.value}",
            ErrorCode.UNEXPECTED,
        )


class ServerProtocol(_Endpoint, role=Role.SERVER):
    """The server's side: Hello -> [Challenge, Auth] -> Welcome -> (Run ... Exit)*."""

    __slots__ = ()


class ClientProtocol(_Endpoint, role=Role.CLIENT):
    """The client's side: the same table, from the other end."""

    __slots__ = ()
