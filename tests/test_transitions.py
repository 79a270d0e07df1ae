"""The one transition table that drives both sides (rshell/protocol/states.py).

It is checked against the conversation PROTOCOL.md section 5 documents, then
walked exhaustively: every (role, state, direction, message type) either moves
both the table's way or is refused, naming the message and the state.
"""

from __future__ import annotations

from functools import partial

import pytest

from rshell.protocol.files import (
    Done,
    Entry,
    EntryEnd,
    FileData,
    Get,
    Put,
    PutReady,
    TransferEnd,
    Verdict,
)
from rshell.protocol.messages import (
    Auth,
    Challenge,
    Closed,
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
    WindowChange,
    encode,
)
from rshell.protocol.states import TRANSITIONS, Direction, Role, State
from tests.test_session import WELCOME, Endpoint, Pair, expect_unexpected

# ---- the transition table ----------------------------------------------------------

#: One message of every wire type but Error (legal everywhere, tested above).
SAMPLES: list[Message] = [
    Hello(), Challenge(nonce=b"n" * 32), Auth("key", b"sig"), WELCOME, Run("cat", stdin=True),
    Stdin(b"x"), StdinEof(), Signal(2), WindowChange(80, 24), Stdout(b"x"), Stderr(b"x"),
    StdinAck(1), Exit(0, cwd="/"), Put("d"), Get(("f",)), PutReady(True), Entry("file", "f", 1),
    FileData(b"x"), EntryEnd("00" * 32), Done(), Verdict("f", "no"), TransferEnd(1, 1),
]
C, S = Role.CLIENT, Role.SERVER


def pair_in(state: State) -> Pair:
    """Both sides in ``state``, reached by the ordinary conversation."""
    pair = Pair()
    script: dict[State, list[tuple[str, Message]]] = {
        State.HELLO: [],
        State.GREETING: [("s", Hello())],
        State.AUTH: [("s", Hello()), ("c", Challenge(nonce=b"n"))],
        State.CHECKING: [("s", Hello()), ("c", Challenge(nonce=b"n")), ("s", Auth("k", b"s"))],
        State.READY: [("s", Hello()), ("c", WELCOME)],
        State.RUNNING: [("s", Hello()), ("c", WELCOME), ("s", Run("cat", stdin=True))],
        State.PUT_ASKED: [("s", Hello()), ("c", WELCOME), ("s", Put("d"))],
        State.PUTTING: [("s", Hello()), ("c", WELCOME), ("s", Put("d")), ("c", PutReady(True))],
        State.PUT_DONE: [("s", Hello()), ("c", WELCOME), ("s", Put("d")), ("c", PutReady(True)),
                         ("s", Done())],
        State.GETTING: [("s", Hello()), ("c", WELCOME), ("s", Get(("f",)))],
    }
    if state is State.CLOSED:
        pair.client.send(Error("bye"))
        pair.server.send(Error("bye"))
    for to, msg in script.get(state, []):
        pair.to_server(msg) if to == "s" else pair.to_client(msg)
    assert pair.client.state is pair.server.state is state
    return pair


def test_table_is_the_documented_conversation() -> None:
    """The derived table says what PROTOCOL.md section 5 says, for both roles."""
    sends: dict[Role, dict[State, set[type]]] = {
        C: {State.HELLO: {Hello}, State.AUTH: {Auth}, State.READY: {Run, Put, Get},
            State.RUNNING: {Stdin, StdinEof, Signal, WindowChange},
            State.PUTTING: {Entry, FileData, EntryEnd, Done}},
        S: {State.GREETING: {Challenge, Welcome}, State.CHECKING: {Welcome},
            State.RUNNING: {Stdout, Stderr, StdinAck, Exit},
            State.PUT_ASKED: {PutReady, TransferEnd},
            State.PUTTING: {Verdict, TransferEnd}, State.PUT_DONE: {Verdict, TransferEnd},
            State.GETTING: {Entry, FileData, EntryEnd, Verdict, TransferEnd}},
    }
    # The READY races: the server's only (stdin after Exit, entries after an
    # early TransferEnd).
    late = {State.READY: {Stdin, StdinEof, Signal, WindowChange, Entry, FileData, EntryEnd,
                          Done}}

    def legal(role: Role, state: State, direction: Direction) -> set[type]:
        return {kind for (r, s, d, kind) in TRANSITIONS if (r, s, d) == (role, state, direction)}

    for role, peer in ((C, S), (S, C)):
        for state in State:
            assert legal(role, state, Direction.SEND) == sends[role].get(state, set())
            expected = set(sends[peer].get(state, set()))
            if role is S:
                expected |= late.get(state, set())
            assert legal(role, state, Direction.RECEIVE) == expected, (role, state)


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("direction", list(Direction), ids=lambda d: d.value)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_walk_the_table(role: Role, direction: Direction, state: State) -> None:
    """Every (role, state, direction, message): in the table it moves to the
    table's state; not in it, it is a LocalProtocolError naming both."""
    for msg in SAMPLES:
        pair = pair_in(state)
        endpoint: Endpoint = pair.client if role is C else pair.server
        step = TRANSITIONS.get((role, state, direction, type(msg)))
        if direction is Direction.RECEIVE:
            endpoint.receive_data(encode(msg))
            if state is State.CLOSED:  # a closed session reads nothing more
                assert endpoint.next_event() is None
                continue
        action = partial(endpoint.send, msg) if direction is Direction.SEND else endpoint.next_event
        if step is not None:
            action()
            assert endpoint.state is step.next, (msg, state)
            continue
        err = expect_unexpected(action)
        assert f"unexpected {type(msg).__name__} message in state {state.value}" in str(err)
        # refusing our own message leaves the session as it was; a peer's closes it
        assert endpoint.state is (state if direction is Direction.SEND else State.CLOSED)


def test_closed_is_never_sent() -> None:
    pair = pair_in(State.READY)
    expect_unexpected(lambda: pair.client.send(Closed()))
    assert pair.client.state is State.READY
