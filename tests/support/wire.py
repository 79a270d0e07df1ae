"""The protocol by hand, for tests that play a peer no rshell client would be:
raw frames (4-byte big-endian payload length, 1-byte type, payload) on a
socket from ``raw_connect``, the one place that knows whether a server
speaks TLS; and ``Wire``, a session driven message by message with rshell's
own sans-IO codec and none of its client logic.

Every read is bounded.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
from typing import Protocol

from rshell.protocol.frames import BufferDecoder
from rshell.protocol.messages import Challenge, Error, Hello, Message, decode, encode
from rshell.trust import keys, tls

HEADER = struct.Struct("!IB")
T_HELLO, T_CHALLENGE, T_AUTH, T_WELCOME = 1, 2, 3, 4
T_RUN, T_STDOUT, T_STDERR, T_ERROR = 10, 20, 21, 30
#: How long a server may take to answer garbage and hang up.
CLOSE_DEADLINE = 5.0
#: Every socket operation of a ``Wire`` gives up after this long.
IO_TIMEOUT = 10.0


class Reachable(Protocol):
    port: int
    tls: bool


def raw_connect(server: Reachable, timeout: float = CLOSE_DEADLINE) -> socket.socket:
    """A socket to ``server`` in its transport: plain TCP, or TLS without
    verification (these tests probe the framing, not the host key)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    if not server.tls:
        return sock
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock)


def frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind) + payload


def read_until_closed(sock: socket.socket, timeout: float = CLOSE_DEADLINE) -> bytes:
    """Everything the server sends until it closes; fails if it has not closed
    within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"server kept the connection open; got {bytes(data)!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return bytes(data)
        data += chunk


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split a byte string into whole frames; a trailing fragment is a failure."""
    frames = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= HEADER.size, f"truncated header in {data!r}"
        length, kind = HEADER.unpack_from(data, pos)
        pos += HEADER.size
        assert len(data) - pos >= length, f"truncated frame in {data!r}"
        frames.append((kind, data[pos : pos + length]))
        pos += length
    return frames


def error_code(data: bytes) -> str:
    """The ``code`` of the single Error frame ``data`` must consist of."""
    frames = parse_frames(data)
    assert [kind for kind, _ in frames] == [T_ERROR], f"expected one Error frame: {data!r}"
    body = json.loads(frames[0][1])
    assert isinstance(body.get("code"), str) and body["code"], body
    return str(body["code"])


def seconds_until_closed(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the peer closes ``sock`` (EOF or reset; anything it sends
    is read and dropped), or None if it is still open after ``limit``."""
    started = time.monotonic()
    deadline = started + limit
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
            data = b""
        except TimeoutError:
            return None
        if not data:
            return time.monotonic() - started


def still_open(sock: socket.socket) -> bool:
    """True if nothing (no data, no EOF) has arrived on ``sock``."""
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


class Wire:
    """One hand-driven session: messages out and in through rshell's codec."""

    def __init__(self, server: Reachable, timeout: float = IO_TIMEOUT) -> None:
        self.sock = raw_connect(server, timeout)
        #: The host key this session's server proved it holds (what a client would pin).
        self.host_blob = (keys.public_blob(tls.peer_key(self.sock))
                          if isinstance(self.sock, ssl.SSLSocket) else b"")
        self.local = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._decoder = BufferDecoder()

    def send(self, msg: Message) -> None:
        self.sock.sendall(encode(msg))

    def recv(self) -> Message | None:
        """The next message, or None once the server has closed the connection."""
        while True:
            got = self._decoder.next_frame()
            if got is not None:
                return decode(got[0], bytes(got[1]))
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
                return None
            if not data:
                return None
            self._decoder.feed(data)

    def expect(self, kind: type[Message]) -> Message:
        msg = self.recv()
        assert isinstance(msg, kind), f"expected {kind.__name__}, got {msg!r}"
        return msg

    def hello(self) -> Challenge:
        self.send(Hello())
        challenge = self.recv()
        assert isinstance(challenge, Challenge), challenge
        return challenge

    def refusal(self, code: str) -> Error:
        """The server answers with an Error of ``code`` and then closes."""
        msg = self.recv()
        assert isinstance(msg, Error), msg
        assert msg.code == code, msg
        assert self.recv() is None, "the server kept the connection open after refusing"
        return msg

    def abort(self) -> None:
        """Vanish: RST instead of FIN, as a killed peer or a cut network looks."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A loopback port nobody listens on: bind, read it, close."""
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
