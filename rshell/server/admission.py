"""Who gets in: one count of connections for every listener (sshd's MaxStartups idea).

Must not import rshell.client, rshell.cli or paramiko.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time

log = logging.getLogger("rshell.server")
#: Seconds a connection must have spent authenticating before a newcomer may
#: take its place (a real client needs milliseconds).
EVICTABLE_AFTER = 0.5


class Admission:
    """Connections admitted (a token each) and those still authenticating.

    Thread-safe.  Methods: ``admit`` (on the accept loop), ``rebind`` (the
    connection's socket is now a TLS one), ``authenticated``, ``release``
    (when the connection ends), ``close`` (refuse everyone from now on).
    """

    def __init__(self, max_connections: int = 100, max_unauthenticated: int = 64) -> None:
        self.max_connections = max_connections
        self.max_unauthenticated = max_unauthenticated
        self._open = 0  # admitted connections
        #: Admitted, not yet authenticated, oldest first: token -> [its socket].
        self._pending: dict[int, list[socket.socket]] = {}
        self._since: dict[int, float] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False

    def admit(self, sock: socket.socket) -> tuple[int | None, str | None]:
        """Count a new connection in (a token), or say why not (a reason).

        At the bound on connections still authenticating, the *oldest* of them
        is cut off to make room if it has lingered there for EVICTABLE_AFTER: a
        real client authenticates in milliseconds, so what lingers is a slow or
        idle peer, and a flood of idle sockets cannot lock real users out.  A
        burst of fresh connections is answered 'busy' instead.
        """
        evicted: list[socket.socket] = []
        with self._lock:
            if self._closed:
                return None, "server is shutting down"
            if self._open >= self.max_connections:
                return None, f"server busy: {self._open} connections (max {self.max_connections})"
            now = time.monotonic()
            while len(self._pending) >= self.max_unauthenticated:
                oldest = next(iter(self._pending))
                if now - self._since[oldest] < EVICTABLE_AFTER:
                    return None, (f"server busy: {len(self._pending)} connections "
                                  "authenticating")
                evicted.append(self._pending.pop(oldest)[0])
                del self._since[oldest]
            token = next(self._tokens)
            self._pending[token] = [sock]
            self._since[token] = now
            self._open += 1
        for victim in evicted:
            log.warning("cut off a connection still authenticating, to make room")
            try:  # the base method: on a TLS socket too, only the descriptor is touched
                socket.socket.shutdown(victim, socket.SHUT_RDWR)
            except OSError:
                pass  # it had just finished by itself
        return token, None

    def rebind(self, token: int, sock: socket.socket) -> None:
        """The connection's socket is now this (TLS) one."""
        with self._lock:
            holder = self._pending.get(token)
            if holder is not None:
                holder[0] = sock

    def authenticated(self, token: int) -> None:
        with self._lock:
            self._pending.pop(token, None)
            self._since.pop(token, None)

    def release(self, token: int) -> None:
        with self._lock:
            self._open -= 1
            self._pending.pop(token, None)
            self._since.pop(token, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
