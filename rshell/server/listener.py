"""The daemon: one ``ThreadingTCPServer`` per bound address, a thread per connection.

Methods for the caller: ``Daemon(binds, config).start()``, ``.stop(grace)``,
``.addresses``.  Class variables on ``RshellServer`` configure socketserver as
its docstring describes.  The request handler is a few lines: it tunes the
socket and hands it to ``service.Session``, which does everything else in the
handler's own thread (never on the accept loop).

Must not import click or the client side.
"""

from __future__ import annotations

import itertools
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from rshell.paths import format_hostport
from rshell.protocol.messages import Error, encode
from rshell.server.commands import ServerConfig
from rshell.server.session import Session
from rshell.transport import Stream, tune

log = logging.getLogger("rshell.server")
#: Seconds a connection must have spent authenticating before a newcomer may
#: take its place (a real client needs milliseconds).
EVICTABLE_AFTER = 0.5


class _Handler(socketserver.BaseRequestHandler):
    server: RshellServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        tune(sock)
        host, port = self.client_address[:2]
        peer = format_hostport(host, port)
        daemon = self.server.daemon
        config = self.server.config
        deadline = time.monotonic() + config.auth_timeout
        token = daemon.tokens.pop(id(self.request))
        try:
            wrapped = _tls_accept(
                sock, daemon.tls_context, config.auth_timeout, peer,
                lambda tls_sock: daemon.rebind(token, tls_sock),
            )
            if wrapped is None:
                return
            session = Session(
                Stream(wrapped, peer), config, deadline, lambda: daemon.authenticated(token)
            )
            if not daemon.track(session):
                session.request_shutdown(0.0)
            try:
                session.serve()
            finally:
                daemon.untrack(session)
        finally:
            daemon.release(token)


def _tls_accept(
    sock: socket.socket,
    ctx: ssl.SSLContext | None,
    timeout: float,
    peer: str,
    rebind: Callable[[socket.socket], None] | None = None,
) -> socket.socket | None:
    """The TLS handshake, in the connection's own thread (never the accept loop).

    Wrapping detaches the plain socket object, so whoever may need to cut this
    connection off (admission control) is told of the TLS one *before* the
    handshake, which is where a silent peer lingers.
    """
    if ctx is None:
        return sock
    sock.settimeout(timeout)
    wrapped = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    if rebind is not None:
        rebind(wrapped)
    try:
        wrapped.do_handshake()
    except (OSError, ssl.SSLError) as exc:
        log.warning("%s: TLS handshake failed: %s", peer, getattr(exc, "reason", None) or exc)
        wrapped.close()
        return None
    return wrapped


def _reject(
    sock: socket.socket, ctx: ssl.SSLContext | None, reason: str, slots: threading.Semaphore
) -> None:
    """Tell a connection we cannot take it why, in its own words (TLS if need be)."""
    try:
        wrapped = _tls_accept(sock, ctx, 2.0, "rejected")
        if wrapped is None:
            return
        try:
            wrapped.settimeout(2.0)
            wrapped.sendall(encode(Error("busy", reason)))
            # Close gently: closing with the client's Hello unread would send a
            # reset that can destroy the answer before the client reads it.
            socket.socket.shutdown(wrapped, socket.SHUT_WR)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and socket.socket.recv(wrapped, 4096):
                pass
        finally:
            wrapped.close()
    except OSError:
        pass
    finally:
        slots.release()


class RshellServer(socketserver.ThreadingTCPServer):
    """A listener for one address.

    Class variables: ``daemon_threads`` (connections never block exit; the
    Daemon ends them itself), ``block_on_close`` False for the same reason,
    ``allow_reuse_address`` so a restart does not wait for TIME_WAIT.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], config: ServerConfig, daemon: Daemon) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.config = config
        self.daemon = daemon
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # [::] means IPv6 only; bind 0.0.0.0 too if you want both.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unhandled error serving %s", client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admission control (sshd's MaxStartups idea) before any thread or TLS."""
        token, reason = self.daemon.admit(request)
        if token is not None:
            self.daemon.tokens[id(request)] = token
            super().process_request(request, client_address)
            return
        peer = format_hostport(str(client_address[0]), int(client_address[1]))
        log.warning("%s: rejected: %s", peer, reason)
        if self.daemon.audit:
            self.daemon.audit.event("reject", peer=peer, reason=reason)
        slots = self.daemon.reject_slots
        if slots.acquire(blocking=False):
            threading.Thread(
                target=_reject, args=(request, self.daemon.tls_context, reason, slots),
                daemon=True,
            ).start()
        else:  # a flood: no thread, no TLS, no word; just the door
            self.shutdown_request(request)


class Daemon:
    """Every listener and every live session of one server process."""

    def __init__(
        self,
        binds: list[tuple[str, int]],
        config: ServerConfig,
        tls_context: ssl.SSLContext | None = None,
        *,
        max_connections: int = 100,
        max_unauthenticated: int = 64,
    ) -> None:
        self.config = config
        self.tls_context = tls_context
        self.audit = config.audit
        self.max_connections = max_connections
        self.max_unauthenticated = max_unauthenticated
        self._open = 0  # admitted connections
        #: Admitted, not yet authenticated, oldest first: token -> [its socket].
        self._pending: dict[int, list[socket.socket]] = {}
        self._since: dict[int, float] = {}
        self._tokens = itertools.count(1)
        #: id(accepted socket) -> token, from the accept thread to the handler.
        self.tokens: dict[int, int] = {}
        #: Busy answers in flight at once; past that, refused without a word.
        self.reject_slots = threading.Semaphore(8)
        self._sessions: set[Session] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self.servers = [RshellServer(b, config, self) for b in binds]
        self._threads: list[threading.Thread] = []

    @property
    def addresses(self) -> list[str]:
        return [format_hostport(str(s.server_address[0]), int(s.server_address[1]))
                for s in self.servers]

    def start(self) -> None:
        for srv in self.servers:
            t = threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.5},
                name=f"accept {srv.server_address[0]!s}", daemon=True,
            )
            t.start()
            self._threads.append(t)

    def admit(self, sock: socket.socket) -> tuple[int | None, str | None]:
        """Count a new connection in (a token), or say why not (a reason).

        At the bound on connections still authenticating, the *oldest* of them
        is cut off to make room if it has lingered there for EVICTABLE_AFTER: a
        real client authenticates in milliseconds, so what lingers is a slow or
        idle peer, and a flood of idle sockets cannot lock real users out.  A
        burst of fresh connections is answered 'busy' instead.
        """
        evicted: list[socket.socket] = []
        with self._cond:
            if self._stopping:
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
        with self._cond:
            holder = self._pending.get(token)
            if holder is not None:
                holder[0] = sock

    def authenticated(self, token: int) -> None:
        with self._cond:
            self._pending.pop(token, None)
            self._since.pop(token, None)

    def release(self, token: int) -> None:
        with self._cond:
            self._open -= 1
            self._pending.pop(token, None)
            self._since.pop(token, None)

    def track(self, session: Session) -> bool:
        with self._cond:
            self._sessions.add(session)
            return not self._stopping

    def untrack(self, session: Session) -> None:
        with self._cond:
            self._sessions.discard(session)
            self._cond.notify_all()

    @property
    def session_count(self) -> int:
        with self._cond:
            return len(self._sessions)

    def stop(self, grace: float) -> None:
        """Stop accepting; let running commands finish for ``grace`` seconds, then
        terminate them; return once every session has ended."""
        with self._cond:
            self._stopping = True
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()
        with self._cond:
            sessions = list(self._sessions)
        for session in sessions:
            session.request_shutdown(grace)
        limit = time.monotonic() + grace + self.config.kill_grace + 5.0
        with self._cond:
            while self._sessions:
                left = limit - time.monotonic()
                if left <= 0:
                    log.warning("%d session(s) did not end in time", len(self._sessions))
                    break
                self._cond.wait(left)
