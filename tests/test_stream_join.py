"""transport.Stream joins small queued frames into one send, and only those.

A SOCK_SEQPACKET pair shows the sends themselves (each send is one packet,
each recv returns one); real TLS over loopback shows that joining after a
send that would have blocked keeps the bytes in order and OpenSSL content
(its retry must begin with the same bytes).
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from rshell.transport import _JOIN, Stream
from rshell.trust import tls

DEADLINE = 20.0


@pytest.fixture
def seqpacket() -> Iterator[tuple[Stream, socket.socket]]:
    """A Stream on one end of a SOCK_SEQPACKET pair (buffers of 1 MiB), and
    the other end, where each send arrives as one packet."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        yield Stream(ours), theirs


def _packets(sock: socket.socket) -> list[bytes]:
    """Every packet waiting on ``sock`` now."""
    got = []
    while select.select([sock], [], [], 0)[0]:
        got.append(sock.recv(1 << 20))
    return got


def test_small_frames_go_out_in_one_send_and_a_big_one_alone(
        seqpacket: tuple[Stream, socket.socket]) -> None:
    stream, theirs = seqpacket
    small = [bytes([i]) * 100 for i in range(3)]
    big = b"B" * _JOIN
    for frame in (*small, big, b"after"):
        stream.write(frame)
    assert stream.flush() and stream.queued == 0
    assert _packets(theirs) == [b"".join(small), big, b"after"]


def test_frames_join_up_to_the_limit_and_a_lone_frame_is_not_copied(
        seqpacket: tuple[Stream, socket.socket]) -> None:
    stream, theirs = seqpacket
    third = _JOIN // 3
    frames = [bytes([65 + i]) * third for i in range(4)]
    for frame in frames:
        stream.write(frame)
    assert stream.flush()
    assert _packets(theirs) == [b"".join(frames[:3]), frames[3]]


def test_flush_every_sends_once_enough_more_is_queued(
        seqpacket: tuple[Stream, socket.socket]) -> None:
    stream, theirs = seqpacket
    frames = [bytes([65 + i]) * 300 for i in range(4)]
    for frame in frames[:3]:
        stream.write(frame)
        assert not stream.flush_every(1000)  # 300, 600, 900: not yet
    assert _packets(theirs) == []
    stream.write(frames[3])
    assert stream.flush_every(1000) and stream.queued == 0
    assert _packets(theirs) == [b"".join(frames)]
    stream.write(b"x" * 999)
    assert not stream.flush_every(1000)
    assert stream.flush() and _packets(theirs) == [b"x" * 999]
    stream.write(b"y" * 600)  # counted from the queue the last flush left: 0
    assert not stream.flush_every(1000) and _packets(theirs) == []


def tls_peer(tmp_path: Path, serve: Callable[[ssl.SSLSocket], None],
             tickets: int = 2) -> tuple[socket.socket, threading.Thread]:
    """A listener on loopback and a thread that accepts one connection, speaks
    rshell's server TLS on it (``tickets``: TLS 1.3 session tickets sent) and
    hands it to ``serve``."""
    ctx = tls.server_context(ed25519.Ed25519PrivateKey.generate(), tmp_path)
    ctx.num_tickets = tickets
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as peer:
            serve(peer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener, thread


def test_joining_after_a_blocked_tls_send_keeps_every_byte_in_order(tmp_path: Path) -> None:
    """The peer reads nothing until the socket is full, so sends would block
    mid-frame; the frames queued meanwhile join the unsent rest.  Every byte
    arrives once, in order, and OpenSSL accepts each retry."""
    received = bytearray()
    started = threading.Event()
    go = threading.Event()

    def serve(peer: ssl.SSLSocket) -> None:
        peer.settimeout(DEADLINE)
        started.set()
        go.wait(DEADLINE)
        while chunk := peer.recv(1 << 16):
            received.extend(chunk)

    listener, thread = tls_peer(tmp_path, serve)
    raw = socket.create_connection(listener.getsockname(), timeout=DEADLINE)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 14)
    sock = tls.client_context().wrap_socket(raw)
    assert started.wait(DEADLINE)
    stream = Stream(sock)
    expected = bytearray()
    blocked = 0
    for i in range(3000):  # 2 MiB of small frames, 5 MiB in big ones
        frame = os.urandom(700 if i % 50 else 90_000)
        stream.write(frame)
        expected += frame
        if not stream.flush():
            blocked += 1
            if blocked == 20:
                go.set()  # from now on the peer drains while we keep queueing
    go.set()
    while not stream.flush():
        select.select([], [sock], [], DEADLINE)
    # Half-close, then wait: closing outright with the server's session
    # tickets unread would reset the connection under data still in flight.
    sock.shutdown(socket.SHUT_WR)
    thread.join(DEADLINE)
    sock.close()
    listener.close()
    assert blocked >= 20  # the retries after a blocked send were exercised
    assert len(received) == len(expected)
    assert bytes(received) == bytes(expected)
