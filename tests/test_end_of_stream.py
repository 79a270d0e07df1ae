"""The end of the stream as an input (``receive_eof``), byte by byte, with no sockets.

Complete messages come first; then ``Closed`` if the stream ended between two
frames, or RemoteProtocolError ``truncated`` if it cut one.  Fed at every cut
point one byte at a time, and in random splits (hypothesis).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rshell.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from rshell.protocol.frames import HEADER_SIZE
from rshell.protocol.messages import (
    Closed,
    Error,
    Exit,
    Hello,
    Message,
    Stderr,
    Stdin,
    StdinAck,
    StdinEof,
    Stdout,
    encode,
)
from rshell.protocol.states import ClientProtocol, ServerProtocol, State
from tests.test_session import WELCOME, Endpoint, Pair, expect_unexpected, normalized
from tests.test_transitions import pair_in

# ---- the end of the stream -----------------------------------------------------------

#: What a server sends while a command runs: any number of these, any order.
REPLIES: list[Message] = [Stdout(b"out\n"), Stderr(b""), StdinAck(3), Stdout(b"x" * 300)]


def running_client() -> ClientProtocol:
    return pair_in(State.RUNNING).client


def read_to_end(
    endpoint: Endpoint, chunks: list[bytes]
) -> tuple[list[Message], RemoteProtocolError | None]:
    """Feed the chunks, then the end of the stream; every event, and the error if any."""
    events: list[Message] = []
    try:
        for chunk in chunks:
            endpoint.receive_data(chunk)
            while (event := endpoint.next_event()) is not None:
                events.append(normalized(event))
        endpoint.receive_eof()
        while (event := endpoint.next_event()) is not None:
            events.append(normalized(event))
            if isinstance(event, Closed):  # the last event: it stays
                break
    except RemoteProtocolError as exc:
        return events, exc
    return events, None


def test_clean_close_after_the_last_message() -> None:
    client = running_client()
    events, err = read_to_end(client, [b"".join(encode(m) for m in REPLIES)])
    assert err is None
    assert events == [*REPLIES, Closed()]
    assert client.state is State.CLOSED
    assert client.next_event() == Closed()  # and stays: the end is a state, not a message


def test_clean_close_of_a_silent_peer() -> None:
    server = ServerProtocol()
    server.receive_eof()
    assert server.next_event() == Closed()
    assert server.state is State.CLOSED
    server.receive_eof()  # saying it twice is saying it once
    assert server.next_event() == Closed()


def test_buffered_messages_come_before_the_end() -> None:
    """EOF first, then draining: the complete messages still come out, in order."""
    client = running_client()
    client.receive_data(encode(Stdout(b"a")) + encode(Exit(0, cwd="/")))
    client.receive_eof()
    assert [client.next_event() for _ in range(4)] == [
        Stdout(b"a"), Exit(0, cwd="/"), Closed(), Closed(),
    ]


@pytest.mark.parametrize(("cut", "where"), [(1, "1 of 5 header bytes"),
                                            (HEADER_SIZE - 1, "4 of 5 header bytes"),
                                            (HEADER_SIZE, "5 of 9 bytes"),
                                            (8, "8 of 9 bytes")])
def test_end_inside_a_frame_is_truncated(cut: int, where: str) -> None:
    client = running_client()
    frame = encode(StdinAck(7))
    client.receive_data(encode(Stdout(b"kept")) + frame[:cut])
    client.receive_eof()
    assert client.next_event() == Stdout(b"kept")
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.code is ErrorCode.TRUNCATED
    assert f"connection closed mid-frame ({where})" == str(info.value)
    assert not isinstance(info.value, LocalProtocolError)  # nothing is sent back
    assert client.state is State.CLOSED
    assert client.next_event() is None


def test_every_cut_point_one_byte_at_a_time() -> None:
    """A server's stream cut after every byte: the whole messages, then Closed
    exactly at frame boundaries and ``truncated`` everywhere else."""
    frames = [encode(Hello()), encode(Stdin(b"late")), encode(StdinEof())]
    data = b"".join(frames)
    boundaries = {sum(len(f) for f in frames[:i]): i for i in range(len(frames) + 1)}
    for cut in range(len(data) + 1):
        pair = Pair()
        if cut >= len(frames[0]):  # the Welcome that makes the rest legal (READY race)
            pair.server.receive_data(frames[0])
            assert pair.server.next_event() == Hello()
            pair.server.send(WELCOME)
            head = len(frames[0])
        else:
            head = 0
        events, err = read_to_end(pair.server, [data[i : i + 1] for i in range(head, cut)])
        whole = max(i for b, i in boundaries.items() if b <= cut)
        expected = [Hello(), Stdin(b"late"), StdinEof()][:whole][1 if head else 0 :]
        if cut in boundaries:
            assert (events, err) == ([*expected, Closed()], None), cut
        else:
            assert events == expected, cut
            assert isinstance(err, RemoteProtocolError) and err.code == "truncated", cut


@settings(max_examples=200, deadline=None)
@given(
    replies=st.lists(st.sampled_from(REPLIES), max_size=6),
    cut=st.integers(min_value=0),
    splits=st.lists(st.integers(min_value=0), max_size=8),
)
def test_property_eof_anywhere_in_random_splits(
    replies: list[Message], cut: int, splits: list[int]
) -> None:
    """Whatever the read sizes and wherever the stream ends: the messages wholly
    received, then Closed at a boundary or ``truncated`` inside a frame."""
    frames = [encode(m) for m in replies]
    data = b"".join(frames)
    cut = cut % (len(data) + 1)
    points = sorted({p % (cut + 1) for p in splits} | {0, cut})
    chunks = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    ends = [sum(len(f) for f in frames[: i + 1]) for i in range(len(frames))]
    expected = [m for m, end in zip(replies, ends, strict=True) if end <= cut]
    events, err = read_to_end(running_client(), chunks)
    if cut == 0 or cut in ends:
        assert (events, err) == ([*expected, Closed()], None)
    else:
        assert events == expected
        assert isinstance(err, RemoteProtocolError) and err.code is ErrorCode.TRUNCATED


def test_eof_through_the_in_place_decoder() -> None:
    """The way the server and client receive: recv_into(writable()), commit()."""
    client = running_client()
    data = encode(Stdout(b"abc")) + encode(Exit(0, cwd="/"))
    space = client.decoder.writable()
    space[: len(data)] = data
    client.decoder.commit(len(data))
    client.receive_eof()
    assert [type(client.next_event()) for _ in range(3)] == [Stdout, Exit, Closed]


def test_errors_before_the_end_win() -> None:
    """The end is only reached after what came before it: a peer's Error, or a
    bad frame, is reported as such even if the stream then ended."""
    client = running_client()
    client.receive_data(encode(Error("shutdown", "bye")) + b"\x00")
    client.receive_eof()
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.code == "shutdown"
    server = ServerProtocol()
    server.receive_data(encode(Stdout(b"x")))
    server.receive_eof()
    expect_unexpected(server.next_event)


def test_no_data_after_the_end() -> None:
    server = ServerProtocol()
    server.receive_eof()
    server.receive_data(b"")  # nothing is still nothing
    with pytest.raises(RuntimeError):
        server.receive_data(encode(Hello()))
