"""The session state machines, wired back to back with no sockets.

A ClientProtocol's output bytes are fed straight into a ServerProtocol and vice
versa, whole or one byte at a time, so every rule about which message may come
when, and the stdin window, is checked in both directions without I/O.  The
table behind them is walked in test_transitions.py, the end of the stream in
test_end_of_stream.py.
"""

from __future__ import annotations

import pytest

from rshell.errors import LocalProtocolError, RemoteProtocolError
from rshell.protocol.frames import MAX_PAYLOAD, encode_frame
from rshell.protocol.messages import (
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    Error,
    Exit,
    Hello,
    Message,
    MessageType,
    Run,
    Signal,
    Stderr,
    Stdin,
    StdinAck,
    StdinEof,
    Stdout,
    Welcome,
    encode,
)
from rshell.protocol.states import ClientProtocol, ServerProtocol, State

Endpoint = ClientProtocol | ServerProtocol

WINDOW = 16
WELCOME = Welcome(server="rshell-test", cwd="/home/u", user="u", stdin_window=WINDOW)


def normalized(msg: Message) -> Message:
    """Data messages may hold a memoryview; compare them as bytes."""
    if isinstance(msg, (Stdin, Stdout, Stderr)):
        return type(msg)(bytes(msg.data))
    return msg


def deliver(data: bytes, receiver: Endpoint, *, bytewise: bool = False) -> list[Message]:
    """Feed data to receiver (whole or one byte per read); every event it yields."""
    events: list[Message] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        receiver.receive_data(chunk)
        while (event := receiver.next_event()) is not None:
            events.append(normalized(event))
    return events


class Pair:
    """A client and a server joined by an in-memory, optionally byte-at-a-time, pipe."""

    def __init__(self, *, bytewise: bool = False) -> None:
        self.client = ClientProtocol()
        self.server = ServerProtocol()
        self.bytewise = bytewise

    def to_server(self, *msgs: Message) -> list[Message]:
        data = b"".join(self.client.send(m) for m in msgs)
        return deliver(data, self.server, bytewise=self.bytewise)

    def to_client(self, *msgs: Message) -> list[Message]:
        data = b"".join(self.server.send(m) for m in msgs)
        return deliver(data, self.client, bytewise=self.bytewise)

    def open(self) -> None:
        """Hello -> Welcome, leaving both sides READY."""
        assert self.to_server(Hello()) == [Hello()]
        assert self.to_client(WELCOME) == [WELCOME]
        assert self.client.state is self.server.state is State.READY

    def start(self, run: Run) -> None:
        assert self.to_server(run) == [run]
        assert self.client.state is self.server.state is State.RUNNING


def expect_unexpected(action: object) -> LocalProtocolError:
    """Run a zero-arg callable that must fail as an out-of-order message."""
    with pytest.raises(LocalProtocolError) as info:
        action()  # type: ignore[operator]
    assert info.value.code == "unexpected"
    return info.value


# ---- happy paths --------------------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_full_conversation(bytewise: bool) -> None:
    """Hello, Welcome, a command with stdin and output, Exit, then a second command."""
    pair = Pair(bytewise=bytewise)
    assert pair.client.state is pair.server.state is State.HELLO
    pair.open()

    run = Run("cat; echo err >&2", cwd="sub", env={"A": "1"}, timeout=5.0, stdin=True)
    pair.start(run)
    assert pair.to_server(Stdin(b"abc"), Stdin(b""), StdinEof(), Signal(2)) == [
        Stdin(b"abc"), Stdin(b""), StdinEof(), Signal(2),
    ]
    replies: list[Message] = [
        Stdout(b"abc"), Stderr(b"err\n"), StdinAck(3), Stdout(b""),
        Exit(0, cwd="/home/u/sub", duration=0.25),
    ]
    assert pair.to_client(*replies) == replies
    assert pair.client.state is pair.server.state is State.READY
    assert pair.client.stdin_credit == WINDOW

    second = Run("exit 3")
    pair.start(second)
    assert pair.to_client(Exit(3, cwd="/home/u")) == [Exit(3, cwd="/home/u")]
    assert pair.client.state is pair.server.state is State.READY


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_auth_conversation(bytewise: bool) -> None:
    """Hello -> Challenge -> Auth -> Welcome, with the states each side passes through."""
    pair = Pair(bytewise=bytewise)
    assert pair.to_server(Hello()) == [Hello()]
    assert pair.client.state is State.GREETING
    assert pair.server.state is State.GREETING

    challenge = Challenge(nonce=bytes(range(32)), server="host:7722")
    assert pair.to_client(challenge) == [challenge]
    assert pair.client.state is pair.server.state is State.AUTH

    auth = Auth(public_key="ssh-ed25519 AAAAC3Nz me", signature=b"\x01" * 64)
    assert pair.to_server(auth) == [auth]
    assert pair.client.state is pair.server.state is State.CHECKING

    assert pair.to_client(WELCOME) == [WELCOME]
    assert pair.client.state is pair.server.state is State.READY
    pair.start(Run("true"))


def test_whole_server_reply_in_one_read() -> None:
    """Output, ack and Exit coalesced in one chunk are all delivered, in order."""
    pair = Pair()
    pair.open()
    pair.start(Run("x", stdin=True))
    pair.client.send(Stdin(b"12345"))
    msgs: list[Message] = [Stdout(b"o" * 100), StdinAck(5), Stderr(b"e"), Exit(1, cwd="/")]
    data = b"".join(pair.server.send(m) for m in msgs)
    assert deliver(data, pair.client) == msgs
    assert pair.client.state is State.READY


def test_next_event_needs_data() -> None:
    """No bytes, or a partial frame, is 'need more data', not an error."""
    server = ServerProtocol()
    assert server.next_event() is None
    frame = encode(Hello())
    server.receive_data(frame[:-1])
    assert server.next_event() is None
    server.receive_data(frame[-1:])
    assert server.next_event() == Hello()
    assert server.next_event() is None


# ---- out of order ----------------------------------------------------------------------


def test_run_before_welcome() -> None:
    pair = Pair()
    expect_unexpected(lambda: pair.client.send(Run("ls")))  # client: nothing sent yet
    pair.to_server(Hello())
    expect_unexpected(lambda: pair.client.send(Run("ls")))  # client: awaiting Welcome
    pair.server.receive_data(encode(Run("ls")))
    err = expect_unexpected(pair.server.next_event)
    assert "Run" in str(err) and "greeting" in str(err)
    assert pair.server.state is State.CLOSED


def test_run_while_auth_pending_is_refused_by_server() -> None:
    """No command may be accepted between Auth and the server's verdict."""
    pair = Pair()
    pair.to_server(Hello())
    pair.to_client(Challenge(nonce=b"n"))
    pair.to_server(Auth("key", b"sig"))
    pair.server.receive_data(encode(Run("id")))
    expect_unexpected(pair.server.next_event)


def test_auth_without_challenge() -> None:
    pair = Pair()
    pair.to_server(Hello())
    expect_unexpected(lambda: pair.client.send(Auth("key", b"sig")))
    pair.server.receive_data(encode(Auth("key", b"sig")))
    expect_unexpected(pair.server.next_event)
    assert pair.server.state is State.CLOSED


def test_auth_after_welcome() -> None:
    pair = Pair()
    pair.open()
    pair.server.receive_data(encode(Auth("key", b"sig")))
    expect_unexpected(pair.server.next_event)


def test_message_before_hello() -> None:
    server = ServerProtocol()
    server.receive_data(encode(Stdin(b"x")))
    expect_unexpected(server.next_event)
    client = ClientProtocol()
    client.receive_data(encode(WELCOME))
    expect_unexpected(client.next_event)


def test_second_hello() -> None:
    pair = Pair()
    pair.open()
    expect_unexpected(lambda: pair.client.send(Hello()))
    pair.server.receive_data(encode(Hello()))
    expect_unexpected(pair.server.next_event)


def test_second_run_while_running() -> None:
    pair = Pair()
    pair.open()
    pair.start(Run("sleep 10"))
    expect_unexpected(lambda: pair.client.send(Run("ls")))
    pair.server.receive_data(encode(Run("ls")))
    expect_unexpected(pair.server.next_event)
    assert pair.server.state is State.CLOSED


@pytest.mark.parametrize("msg", [Stdout(b"x"), Stderr(b"x"), StdinAck(1), Exit(0), WELCOME])
def test_server_messages_from_a_client(msg: Message) -> None:
    """A client may not send what only a server sends, even while a command runs."""
    pair = Pair()
    pair.open()
    pair.start(Run("cat", stdin=True))
    expect_unexpected(lambda: pair.client.send(msg))
    pair.server.receive_data(encode(msg))
    expect_unexpected(pair.server.next_event)


@pytest.mark.parametrize("msg", [Run("ls"), Stdin(b"x"), StdinEof(), Signal(2), Hello()])
def test_client_messages_from_a_server(msg: Message) -> None:
    pair = Pair()
    pair.open()
    pair.start(Run("cat", stdin=True))
    expect_unexpected(lambda: pair.server.send(msg))
    pair.client.receive_data(encode(msg))
    expect_unexpected(pair.client.next_event)


@pytest.mark.parametrize("msg", [Stdout(b"x"), StdinAck(1), Exit(0)])
def test_command_replies_when_no_command_runs(msg: Message) -> None:
    pair = Pair()
    pair.open()
    expect_unexpected(lambda: pair.server.send(msg))
    pair.client.receive_data(encode(msg))
    expect_unexpected(pair.client.next_event)


def test_stdin_before_any_command_is_refused_by_client() -> None:
    pair = Pair()
    pair.open()
    expect_unexpected(lambda: pair.client.send(Stdin(b"x")))
    expect_unexpected(lambda: pair.client.send(StdinEof()))
    expect_unexpected(lambda: pair.client.send(Signal(2)))


def test_version_mismatch() -> None:
    server = ServerProtocol()
    server.receive_data(encode(Hello(version=PROTOCOL_VERSION + 1)))
    with pytest.raises(LocalProtocolError) as info:
        server.next_event()
    assert info.value.code == "version"
    assert server.state is State.CLOSED


def test_events_stop_after_local_error() -> None:
    """After a protocol error the session is CLOSED; later bytes produce nothing."""
    server = ServerProtocol()
    server.receive_data(encode(Stdout(b"x")) + encode(Hello()))
    expect_unexpected(server.next_event)
    assert server.state is State.CLOSED
    server.receive_data(encode(Hello()))
    assert server.next_event() is None


# ---- errors from the layers below ------------------------------------------------------


def test_oversized_frame_closes_session() -> None:
    client = ClientProtocol()
    client.receive_data((MAX_PAYLOAD + 1).to_bytes(4, "big") + bytes([MessageType.STDOUT]))
    with pytest.raises(LocalProtocolError) as info:
        client.next_event()
    assert info.value.code == "frame-too-large"
    assert client.state is State.CLOSED
    assert client.next_event() is None


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (encode_frame(MessageType.HELLO, b"{not json"), "malformed"),
        (encode_frame(MessageType.HELLO, b'{"version":true,"client":"x"}'), "malformed"),
        (encode_frame(200, b""), "unknown-type"),
    ],
)
def test_malformed_message_closes_session(frame: bytes, code: str) -> None:
    server = ServerProtocol()
    server.receive_data(frame)
    with pytest.raises(LocalProtocolError) as info:
        server.next_event()
    assert info.value.code == code
    assert server.state is State.CLOSED


# ---- stdin flow control ----------------------------------------------------------------


def test_client_may_not_exceed_window() -> None:
    pair = Pair()
    pair.open()
    pair.start(Run("cat", stdin=True))
    assert pair.client.stdin_credit == WINDOW
    pair.client.send(Stdin(b"x" * (WINDOW - 1)))
    with pytest.raises(LocalProtocolError) as info:
        pair.client.send(Stdin(b"yy"))
    assert info.value.code == "flow-control"
    assert pair.client.stdin_credit == 1  # the refused chunk took no credit
    pair.client.send(Stdin(b"z"))
    assert pair.client.stdin_credit == 0
    with pytest.raises(LocalProtocolError):
        pair.client.send(Stdin(b"!"))
    pair.client.send(Stdin(b""))  # an empty chunk never needs credit


def test_acks_refill_client_credit() -> None:
    pair = Pair()
    pair.open()
    pair.start(Run("cat", stdin=True))
    assert pair.to_server(Stdin(b"a" * WINDOW)) == [Stdin(b"a" * WINDOW)]
    assert pair.client.stdin_credit == 0
    assert pair.to_client(StdinAck(6)) == [StdinAck(6)]
    assert pair.client.stdin_credit == 6
    assert pair.to_server(Stdin(b"b" * 6)) == [Stdin(b"b" * 6)]
    with pytest.raises(LocalProtocolError):
        pair.client.send(Stdin(b"c"))


def test_server_refuses_stdin_beyond_window() -> None:
    """A client ignoring the window is caught by the server, not trusted."""
    pair = Pair()
    pair.open()
    pair.start(Run("cat", stdin=True))
    assert deliver(encode(Stdin(b"x" * WINDOW)), pair.server) == [Stdin(b"x" * WINDOW)]
    pair.server.receive_data(encode(Stdin(b"y")))
    with pytest.raises(LocalProtocolError) as info:
        pair.server.next_event()
    assert info.value.code == "flow-control"
    assert pair.server.state is State.CLOSED


def test_server_acks_extend_window() -> None:
    pair = Pair()
    pair.open()
    pair.start(Run("cat", stdin=True))
    assert len(deliver(encode(Stdin(b"x" * WINDOW)), pair.server)) == 1
    pair.server.send(StdinAck(4))
    assert pair.server.stdin_credit == 4
    assert len(deliver(encode(Stdin(b"y" * 4)), pair.server)) == 1
    pair.server.receive_data(encode(Stdin(b"z")))
    with pytest.raises(LocalProtocolError) as info:
        pair.server.next_event()
    assert info.value.code == "flow-control"


def test_each_run_opens_a_fresh_window() -> None:
    pair = Pair()
    pair.open()
    pair.start(Run("cat", stdin=True))
    pair.to_server(Stdin(b"x" * WINDOW))
    pair.to_client(Exit(0, cwd="/"))
    pair.start(Run("cat", stdin=True))
    assert pair.client.stdin_credit == pair.server.stdin_credit == WINDOW
    assert pair.to_server(Stdin(b"y" * WINDOW)) == [Stdin(b"y" * WINDOW)]


def test_window_comes_from_welcome() -> None:
    pair = Pair()
    pair.to_server(Hello())
    pair.to_client(Welcome(server="s", cwd="/", user="u", stdin_window=3))
    pair.start(Run("cat", stdin=True))
    assert pair.client.stdin_credit == pair.server.stdin_credit == 3
    with pytest.raises(LocalProtocolError):
        pair.client.send(Stdin(b"four"))


def test_late_stdin_after_exit_is_tolerated() -> None:
    """The command may end while the client is still sending: not a protocol error."""
    pair = Pair()
    pair.open()
    pair.start(Run("head -c1", stdin=True))
    late = [Stdin(b"x" * WINDOW), StdinEof(), Signal(2)]
    data = b"".join(pair.client.send(m) for m in late)  # sent while RUNNING
    pair.to_client(Exit(0, cwd="/"))  # crosses them on the wire
    assert pair.server.state is State.READY
    assert deliver(data, pair.server) == late
    assert pair.server.state is State.READY


# ---- the peer's Error -----------------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_server_error_surfaces_on_client(bytewise: bool) -> None:
    pair = Pair(bytewise=bytewise)
    pair.to_server(Hello())
    error = pair.server.send(Error("auth-failed", "key not authorized"))
    assert pair.server.state is State.CLOSED
    if bytewise:  # no verdict until the Error frame is whole
        for i in range(len(error) - 1):
            pair.client.receive_data(error[i : i + 1])
            assert pair.client.next_event() is None
        pair.client.receive_data(error[-1:])
    else:
        pair.client.receive_data(error)
    pair.client.receive_data(encode(WELCOME))  # nothing after an Error counts
    with pytest.raises(RemoteProtocolError) as info:
        pair.client.next_event()
    assert info.value.code == "auth-failed"
    assert "key not authorized" in str(info.value)
    assert pair.client.state is State.CLOSED
    assert pair.client.next_event() is None


def test_client_error_surfaces_on_server() -> None:
    pair = Pair()
    pair.open()
    pair.start(Run("cat", stdin=True))
    data = pair.client.send(Error("bye", ""))
    assert pair.client.state is State.CLOSED
    pair.server.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.next_event()
    assert info.value.code == "bye"
    assert not isinstance(info.value, LocalProtocolError)
    assert pair.server.state is State.CLOSED
    assert pair.server.next_event() is None


def test_error_may_be_received_in_any_state() -> None:
    """An Error is how a peer says goodbye, so it is legal before Hello, too."""
    for endpoint in (ServerProtocol(), ClientProtocol()):
        endpoint.receive_data(encode(Error("internal", "boom")))
        with pytest.raises(RemoteProtocolError) as info:
            endpoint.next_event()
        assert info.value.code == "internal"
        assert endpoint.state is State.CLOSED


def test_oversized_message_is_refused_before_sending_and_state_holds() -> None:
    """A Run too big for any peer's frame limit is refused by ``send`` itself, so
    no side can emit a frame the other must reject, and the session survives."""
    pair = Pair()
    pair.open()
    with pytest.raises(LocalProtocolError) as info:
        pair.client.send(Run("x" * (MAX_PAYLOAD + 1)))
    assert info.value.code == "frame-too-large"
    assert pair.client.state is State.READY
    pair.start(Run("true"))
