"""Byte streams over plain or TLS sockets, and the edge where OS errors stop.

``Stream`` wraps one connected socket in non-blocking mode with an outgoing
queue, so its owner can multiplex it with ``selectors`` and never block on a
slow peer.  ``OSError`` and ``ssl.SSLError`` are translated here into
``ConnectionFailed``; nothing above this module sees them.

Must not import rshell.protocol's users (service, client) or click/paramiko.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from rshell.errors import ConnectionClosed, ConnectionFailed

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_EOF = (ssl.SSLZeroReturnError, ssl.SSLEOFError)


@contextmanager
def edge(what: str) -> Iterator[None]:
    """Turn OS and TLS errors raised inside into ConnectionFailed."""
    try:
        yield
    except _EOF as exc:
        raise ConnectionClosed(f"{what}: connection closed by peer") from exc
    except ssl.SSLError as exc:
        raise ConnectionFailed(f"{what}: TLS error: {exc.reason or exc}") from exc
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise ConnectionClosed(f"{what}: connection closed by peer") from exc
    except TimeoutError as exc:
        raise ConnectionFailed(f"{what}: timed out") from exc
    except OSError as exc:
        raise ConnectionFailed(f"{what}: {exc.strerror or exc}") from exc


def tune(sock: socket.socket) -> None:
    """Per-connection socket options: no Nagle delay on small frames."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def peer_ip(sock: socket.socket) -> str:
    """The peer's address alone, as ``from=`` patterns match it ("" if gone)."""
    try:
        return str(sock.getpeername()[0])
    except (OSError, IndexError):
        return ""


#: A read that brought this much (a whole TLS record, the most one read can
#: give) may have more behind it: the owner reads again at once, up to READS
#: times a turn, rather than after another turn of its loop and its poll (one
#: turn a 16 KiB record was a big copy's main cost).  A smaller read, a
#: keystroke say, ends the turn with no extra read.
READ_ON = 16 << 10
READS = 64

#: Small frames queued together are sent as one buffer of up to this many
#: bytes: one send, a few TLS records instead of one each, and one wake-up of
#: the peer's loop instead of one per frame (a tree of small files is three
#: frames a file).  Only frames that fit are copied; a big one goes as it is.
_JOIN = 64 * 1024


def _join(out: deque[bytes | bytearray | memoryview]) -> bytes:
    """The head of ``out`` and the frames after it that fit in ``_JOIN``, as
    one buffer in their place.  The unsent head stays its first bytes, as a
    TLS write retried after it would have blocked requires."""
    parts = [out.popleft()]
    size = len(parts[0])
    while out and size + len(out[0]) <= _JOIN:
        size += len(out[0])
        parts.append(out.popleft())
    joined = b"".join(parts)
    out.appendleft(joined)
    return joined


class Stream:
    """A connected socket in non-blocking mode, with an outgoing queue.

    Methods for the owner: ``recv_into`` (a count, 0 for nothing yet, None
    at EOF), ``write`` (queue), ``flush`` (send what the kernel takes now),
    ``pending`` (TLS bytes already decrypted, invisible to select), ``close``.
    """

    __slots__ = ("sock", "tls", "_out", "queued", "peer", "_mark")

    def __init__(self, sock: socket.socket, peer: str = "") -> None:
        sock.setblocking(False)
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        self._out: deque[bytes | bytearray | memoryview] = deque()
        self.queued = 0
        self.peer = peer
        self._mark = 0  # what was queued after flush_every's last flush

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_into(self, buffer: memoryview) -> int | None:
        """Receive into ``buffer``: the byte count, 0 for nothing yet, None at EOF."""
        try:
            n = self.sock.recv_into(buffer)
        except _WOULD_BLOCK:
            return 0
        except _EOF:
            return None
        except ConnectionResetError:
            return None
        except OSError as exc:
            with edge(f"reading from {self.peer}"):
                raise exc
        return n or None

    def pending(self) -> bool:
        return self.tls and self.sock.pending() > 0  # type: ignore[attr-defined]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._out.append(data)
        self.queued += len(data)

    def flush(self) -> bool:
        """Send as much as the kernel takes without blocking; True if all sent.
        Small frames queued together go out joined (see ``_JOIN``)."""
        out = self._out
        send = self.sock.send
        try:
            while out:
                head = out[0]
                if len(out) > 1 and len(head) + len(out[1]) <= _JOIN:
                    head = _join(out)
                try:
                    n = send(head)
                except _WOULD_BLOCK:
                    return False
                self.queued -= n
                if n < len(head):
                    out[0] = memoryview(head)[n:]
                    return False
                out.popleft()
        except OSError as exc:  # translated only when it happens: this is per chunk
            with edge(f"writing to {self.peer}"):
                raise exc
        return True

    def flush_every(self, size: int) -> bool:
        """``flush()`` once ``size`` bytes more are queued than after the last
        one; True if everything is sent.  A burst of small frames then goes
        out joined, and a full socket is not tried again for every frame."""
        queued = self.queued
        if queued < self._mark:
            self._mark = queued  # sent meanwhile, by a flush elsewhere
        if queued - self._mark < size:
            return False
        done = self.flush()
        self._mark = self.queued
        return done

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
