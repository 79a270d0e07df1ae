"""Who gets in: one count of connections for every listener (sshd's MaxStartups
idea), and per-source penalties (OpenSSH 9.8's PerSourcePenalties idea).

Must not import rshell.client, rshell.cli or paramiko.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("rshell.server")
#: Seconds a connection must have spent authenticating before a newcomer may
#: take its place (a real client needs milliseconds).
EVICTABLE_AFTER = 0.5
#: The reason ``admit`` gives for a source under penalty: the listener closes
#: such a connection at once, without a thread, TLS, a word or a log line.
PENALIZED = "source penalized"


@dataclass(frozen=True)
class Penalties:
    """What a connection that ends unauthenticated costs its source (the
    ``rshell-server --per-source-penalties`` and ``--penalty-max`` knobs).

    Each such connection (abandoned, failed or timed-out handshake, evicted)
    adds ``per_connection`` seconds to its source's penalty, which runs down
    in real time and never exceeds ``max``; once it reaches ``refuse_at`` (or
    ``max``, if smaller), the source is refused until it has run out.  A
    client that connects now and then never accrues one; a source that
    churns through handshakes is shut out after a burst of about
    ``refuse_at`` of them, and in-flight handshakes that still fail extend
    the time.  A source holding over half the authenticating slots also pays
    for each newcomer of its own turned away 'busy'.  At most ``max_sources``
    sources are remembered, the least recently penalized forgotten first, so
    that many addresses cannot grow the table without bound.  (OpenSSH's defaults: noauth:1s min:15s
    max:600s max-sources:65536.)
    """

    per_connection: float = 1.0
    refuse_at: float = 15.0
    max: float = 600.0
    max_sources: int = 65536


#: The defaults, OpenSSH's figures.
DEFAULT_PENALTIES = Penalties()


def source_of(host: str) -> str:
    """The source a peer address counts against: an IPv4 address, an IPv6 /64
    (one subscriber's allocation), an IPv4-mapped IPv6 address as IPv4."""
    try:
        addr = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class _Penalty:
    __slots__ = ("until", "refusing", "count")

    def __init__(self, now: float) -> None:
        self.until = now  # when the penalty has run out
        self.refusing = False
        self.count = 0  # connections that ended unauthenticated, while it ran


class PenaltyBox:
    """The penalties of sources, by source; not thread-safe (Admission locks)."""

    def __init__(self, config: Penalties) -> None:
        self.config = config
        self.refuse_at = min(config.refuse_at, config.max)
        #: Least recently penalized first: the first forgotten when full.
        self._sources: dict[str, _Penalty] = {}

    def __len__(self) -> int:
        return len(self._sources)

    def refuses(self, source: str, now: float) -> bool:
        entry = self._sources.get(source)
        if entry is None:
            return False
        if entry.until <= now:
            del self._sources[source]
            return False
        return entry.refusing

    def penalize(self, source: str, now: float) -> _Penalty | None:
        """One more connection of ``source`` ended unauthenticated; the penalty
        if this is what turned it into a refusal (to be logged, once)."""
        cfg = self.config
        entry = self._sources.pop(source, None)
        if entry is None or entry.until <= now:
            entry = _Penalty(now)
        entry.until = min(entry.until + cfg.per_connection, now + cfg.max)
        entry.count += 1
        self._sources[source] = entry
        while len(self._sources) > cfg.max_sources:
            del self._sources[next(iter(self._sources))]
        if entry.refusing or entry.until - now < self.refuse_at:
            return None
        entry.refusing = True
        return entry


class _Pending:
    """An admitted connection still authenticating."""

    __slots__ = ("sock", "since", "source")

    def __init__(self, sock: socket.socket, since: float, source: str) -> None:
        self.sock, self.since, self.source = sock, since, source


class Admission:
    """Connections admitted (a token each) and those still authenticating.

    Thread-safe.  Methods: ``admit`` (on the accept loop), ``rebind`` (the
    connection's socket is now a TLS one), ``authenticated``, ``release``
    (when the connection ends), ``close`` (refuse everyone from now on).
    ``penalties`` None turns per-source penalties off; ``clock`` is for tests.
    """

    def __init__(self, max_connections: int = 100, max_unauthenticated: int = 64,
                 penalties: Penalties | None = DEFAULT_PENALTIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_connections = max_connections
        self.max_unauthenticated = max_unauthenticated
        self.penalties = PenaltyBox(penalties) if penalties is not None else None
        self._clock = clock
        self._open = 0  # admitted connections
        #: Admitted, not yet authenticated, oldest first; and how many per source.
        self._pending: dict[int, _Pending] = {}
        self._held: dict[str, int] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False

    def admit(self, sock: socket.socket, host: str = "") -> tuple[int | None, str | None]:
        """Count a new connection from ``host`` in (a token), or say why not (a reason).

        A source under penalty is refused first (PENALIZED), before it can
        count against anyone else.  At the bound on connections still
        authenticating, one of them is cut off to make room: the *oldest*, if
        it has lingered there for EVICTABLE_AFTER (a real client authenticates
        in milliseconds, so what lingers is a slow or idle peer, and a flood of
        idle sockets cannot lock real users out); else the oldest of another
        source that holds over half the bound (one source's burst cannot crowd
        out the others, even before its penalty starts).  Otherwise a burst of
        fresh connections is answered 'busy'.
        """
        evicted: list[socket.socket] = []
        penalized: list[tuple[str, _Penalty]] = []
        source = source_of(host)
        token = None
        with self._lock:
            now = self._clock()
            reason = self._refusal(source, now, evicted, penalized)
            if reason is None:
                token = next(self._tokens)
                self._pending[token] = _Pending(sock, now, source)
                self._held[source] = self._held.get(source, 0) + 1
                self._open += 1
        for victim in evicted:
            log.warning("cut off a connection still authenticating, to make room")
            try:  # the base method: on a TLS socket too, only the descriptor is touched
                socket.socket.shutdown(victim, socket.SHUT_RDWR)
            except OSError:
                pass  # it had just finished by itself
        _log_penalties(penalized, now)
        return token, reason

    def _refusal(self, source: str, now: float, evicted: list[socket.socket],
                 penalized: list[tuple[str, _Penalty]]) -> str | None:
        """Under the lock: why a newcomer from ``source`` is refused, or None once
        there is room for it (the connections cut off for it go to ``evicted``)."""
        if self._closed:
            return "server is shutting down"
        if self.penalties is not None and self.penalties.refuses(source, now):
            return PENALIZED
        if self._open >= self.max_connections:
            return f"server busy: {self._open} connections (max {self.max_connections})"
        while len(self._pending) >= self.max_unauthenticated:
            oldest = self._victim(source, now)
            if oldest is None:
                if self._held.get(source, 0) > self.max_unauthenticated // 2:
                    self._penalize(source, now, penalized)  # a hog that keeps pushing pays
                return f"server busy: {len(self._pending)} connections authenticating"
            hog = self._held.get(self._pending[oldest].source, 0) > self.max_unauthenticated // 2
            victim = self._drop(oldest)
            assert victim is not None
            evicted.append(victim.sock)
            # A hog's connection cut off pays now (its release will not); a slow
            # handshake of anyone else's does not: a flood from elsewhere must not
            # get real users penalized by cutting them off.
            if hog:
                self._penalize(victim.source, now, penalized)
        return None

    def rebind(self, token: int, sock: socket.socket) -> None:
        """The connection's socket is now this (TLS) one."""
        with self._lock:
            pending = self._pending.get(token)
            if pending is not None:
                pending.sock = sock

    def authenticated(self, token: int) -> None:
        with self._lock:
            self._drop(token)

    def release(self, token: int) -> None:
        """The connection has ended; if it never authenticated, its source pays."""
        penalized: list[tuple[str, _Penalty]] = []
        with self._lock:
            self._open -= 1
            pending = self._drop(token)
            now = self._clock()
            if pending is not None:
                self._penalize(pending.source, now, penalized)
        _log_penalties(penalized, now)

    def _victim(self, source: str, now: float) -> int | None:
        """Under the lock: the connection still authenticating to cut off, if any."""
        oldest = next(iter(self._pending))
        if now - self._pending[oldest].since >= EVICTABLE_AFTER:
            return oldest
        share = self.max_unauthenticated // 2
        for token, pending in self._pending.items():
            if pending.source != source and self._held[pending.source] > share:
                return token
        return None

    def _drop(self, token: int) -> _Pending | None:
        """Under the lock: ``token`` no longer authenticating; what it was."""
        pending = self._pending.pop(token, None)
        if pending is not None:
            left = self._held.pop(pending.source) - 1
            if left:
                self._held[pending.source] = left
        return pending

    def _penalize(self, source: str, now: float, into: list[tuple[str, _Penalty]]) -> None:
        """Under the lock: the source pays; a penalty that now refuses goes ``into``."""
        if self.penalties is not None:
            penalty = self.penalties.penalize(source, now)
            if penalty is not None:
                into.append((source, penalty))

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _log_penalties(penalized: list[tuple[str, _Penalty]], now: float) -> None:
    """Once per source and penalty: the moment it starts refusing."""
    for source, penalty in penalized:
        log.warning("%s: refused for %.0f s: %d connections ended unauthenticated "
                    "(per-source penalty)", source, penalty.until - now, penalty.count)


def abort(sock: socket.socket) -> None:
    """Close at once with a reset: no FIN exchange, no TIME_WAIT left behind."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already reset by the peer
    sock.close()
