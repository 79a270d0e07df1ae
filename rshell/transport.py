"""Byte streams over plain or TLS sockets, and the edge where OS errors stop.

``Stream`` wraps one connected socket in non-blocking mode with an outgoing
queue, so its owner can multiplex it with ``selectors`` and never block on a
slow peer.  ``OSError`` and ``ssl.SSLError`` are translated here into
``ConnectionFailed``; nothing above this module sees them.

Must not import rshell.protocol's users (service, client) or click/paramiko.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from rshell.errors import ConnectionClosed, ConnectionFailed

RECV_SIZE = 1 << 20
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


class _Splice:
    """Queued: move ``left`` bytes from pipe ``fd`` to the socket in the kernel."""

    __slots__ = ("fd", "left")

    def __init__(self, fd: int, n: int) -> None:
        self.fd = fd
        self.left = n

    def __len__(self) -> int:
        return self.left
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


class Stream:
    """A connected socket in non-blocking mode, with an outgoing queue.

    Methods for the owner: ``recv`` (bytes, b"" for nothing yet, None at
    EOF), ``write`` (queue), ``flush`` (send what the kernel takes now),
    ``pending`` (TLS bytes already decrypted, invisible to select), ``close``.
    """

    __slots__ = ("sock", "tls", "_out", "queued", "peer", "can_splice", "splicing")

    def __init__(self, sock: socket.socket, peer: str = "") -> None:
        sock.setblocking(False)
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        self._out: deque[bytes | bytearray | memoryview | _Splice] = deque()
        self.queued = 0
        self.peer = peer
        #: Plain TCP can take pipe data without it passing through user space.
        self.can_splice = not self.tls and hasattr(os, "splice")
        #: Pipes with bytes promised to the stream: nobody else may read them yet.
        self.splicing: set[int] = set()

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self) -> bytes | None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except _WOULD_BLOCK:
            return b""
        except _EOF:
            return None
        except ConnectionResetError:
            return None
        except OSError as exc:
            with edge(f"reading from {self.peer}"):
                raise exc
        return data or None

    def pending(self) -> bool:
        return self.tls and self.sock.pending() > 0  # type: ignore[attr-defined]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._out.append(data)
        self.queued += len(data)

    def splice_from(self, fd: int, n: int) -> None:
        """Queue ``n`` bytes that are waiting in pipe ``fd`` (plain TCP only)."""
        self._out.append(_Splice(fd, n))
        self.queued += n
        self.splicing.add(fd)

    def flush(self) -> bool:
        """Send as much as the kernel takes without blocking; True if all sent."""
        out = self._out
        send = self.sock.send
        with edge(f"writing to {self.peer}"):
            while out:
                head = out[0]
                try:
                    if isinstance(head, _Splice):
                        n = os.splice(head.fd, self.sock.fileno(), head.left, flags=_SPLICE_FLAGS)
                        if n == 0:
                            raise ConnectionFailed("output pipe drained under a promised frame")
                        self.queued -= n
                        head.left -= n
                        if head.left:
                            return False
                        out.popleft()
                        self.splicing.discard(head.fd)
                        continue
                    n = send(head)
                except _WOULD_BLOCK:
                    return False
                self.queued -= n
                if n < len(head):
                    out[0] = memoryview(head)[n:]
                    return False
                out.popleft()
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
