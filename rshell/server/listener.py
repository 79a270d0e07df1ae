"""The daemon: listeners (a ``ThreadingTCPServer`` each, a thread per connection),
the one accept loop that serves them all, and the registry of live
connections that a stop ends.

``Listener`` is what every listener shares, native or SSH: socketserver's
class variables, IPv6-only binding, admission control in ``process_request``
(before any thread or TLS) and the admitted connection's token handed to
its handler thread.  ``RshellServer`` adds the native handler (TLS in the
connection's own thread, never on the accept loop, then ``Session``); the SSH
listener (rshell.ssh.server) adds its own.  ``Daemon`` holds them all, with
one ``Admission`` and one registry: ``stop`` asks every live connection of
either kind to finish within the grace.

One thread accepts for every listener (``Daemon.start``): an epoll loop
(exec.loop) over every listening socket and a wake-up eventfd, calling
socketserver's own accept path on readiness.  socketserver's
``serve_forever`` would cost a thread per listener, and its ``shutdown``
waits for each loop in turn to notice the stop: with hundreds of ``--bind``
addresses (issue 15's fleets on loopback) a stop took seconds, growing with
the square of their number.  Here a stop is one wake-up, whatever the number.

Must not import click, paramiko or the client side.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from rshell.exec.loop import READ, Loop
from rshell.paths import format_hostport
from rshell.protocol.messages import Error, encode
from rshell.server.admission import (
    DEFAULT_PENALTIES,
    PENALIZED,
    Admission,
    Penalties,
    abort,
)
from rshell.server.session import Session
from rshell.server.settings import Settings
from rshell.transport import Stream, tune

log = logging.getLogger("rshell.server")


class Stoppable(Protocol):
    """A live connection, native or SSH, as the registry sees it."""

    def request_shutdown(self, grace: float) -> None: ...


class Listener(socketserver.ThreadingTCPServer):
    """A listener for one address; see the module docstring.

    Class variables: ``daemon_threads`` (connections never block exit; the
    Daemon ends them itself), ``block_on_close`` False for the same reason,
    ``allow_reuse_address`` so a restart does not wait for TIME_WAIT.
    Methods that may be overridden: ``refuse`` (a connection admission turned
    away) and ``serve_admitted`` (the connection, in its own thread).
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128
    #: Names the listener in logs and thread names.
    kind = "rshell"

    def __init__(self, address: tuple[str, int], daemon: Daemon) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.daemon = daemon
        self.settings = daemon.settings
        self._tokens: dict[int, int] = {}
        super().__init__(address, _Handler)

    @property
    def address(self) -> str:
        return format_hostport(str(self.server_address[0]), int(self.server_address[1]))

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # [::] means IPv6 only; bind 0.0.0.0 too if you want both.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unhandled error serving %s %s", self.kind, client_address)

    def accept_ready(self, _mask: int = READ) -> None:
        """One connection, now that the socket is readable: socketserver's own
        accept, ``verify_request`` and ``process_request`` (``serve_forever``'s
        step), called by the Daemon's accept loop.  Whatever goes wrong with
        one listener is logged and never ends the loop the others share."""
        try:
            self._handle_request_noblock()  # type: ignore[attr-defined]
        except Exception:
            log.exception("unhandled error accepting on %s %s", self.kind, self.address)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admission control before any thread or TLS."""
        token, reason = self.daemon.admission.admit(request, str(client_address[0]))
        if token is not None:
            self._tokens[id(request)] = token
            super().process_request(request, client_address)
            return
        if reason == PENALIZED:  # the cheapest refusal; its start was logged once
            abort(request)
            return
        peer = format_hostport(str(client_address[0]), int(client_address[1]))
        log.warning("%s: rejected: %s (via %s)", peer, reason, self.kind)
        if self.settings.audit:
            self.settings.audit.event("reject", peer=peer, via=self.kind, reason=reason)
        self.refuse(request, reason or "")

    def refuse(self, sock: socket.socket, reason: str) -> None:
        """Turn a connection away (default: close it without a word)."""
        self.shutdown_request(sock)

    def serve_admitted(self, sock: socket.socket, peer: str, token: int) -> None:
        raise NotImplementedError

    def _serve(self, sock: socket.socket, client_address: Any) -> None:
        token = self._tokens.pop(id(sock))
        try:
            tune(sock)
            self.serve_admitted(sock, format_hostport(*client_address[:2]), token)
        finally:
            self.daemon.admission.release(token)


class _Handler(socketserver.BaseRequestHandler):
    server: Listener

    def handle(self) -> None:
        self.server._serve(self.request, self.client_address)


class RshellServer(Listener):
    """The native listener: TLS (if on), then a Session."""

    def serve_admitted(self, sock: socket.socket, peer: str, token: int) -> None:
        daemon, settings = self.daemon, self.settings
        deadline = time.monotonic() + settings.auth_timeout
        wrapped = _tls_accept(
            sock, daemon.tls_context, settings.auth_timeout, peer,
            lambda tls_sock: daemon.admission.rebind(token, tls_sock),
        )
        if wrapped is None:
            return
        session = Session(Stream(wrapped, peer), settings, deadline,
                          lambda: daemon.admission.authenticated(token))
        with daemon.tracking(session):
            session.serve()

    def refuse(self, sock: socket.socket, reason: str) -> None:
        """Say why, in the client's own words (TLS if need be), off the accept loop."""
        slots = self.daemon.reject_slots
        if slots.acquire(blocking=False):
            threading.Thread(
                target=_reject, args=(sock, self.daemon.tls_context, reason, slots), daemon=True,
            ).start()
        else:  # a flood: no thread, no TLS, no word; just the door
            self.shutdown_request(sock)


def _tls_accept(
    sock: socket.socket, ctx: ssl.SSLContext | None, timeout: float, peer: str,
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
    """Tell a connection we cannot take it why (a busy Error frame)."""
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


class Daemon:
    """Every listener and every live connection of one server process."""

    def __init__(
        self, binds: list[tuple[str, int]], settings: Settings,
        tls_context: ssl.SSLContext | None = None, *, max_connections: int = 100,
        max_unauthenticated: int = 64, penalties: Penalties | None = DEFAULT_PENALTIES,
    ) -> None:
        self.settings = settings
        self.tls_context = tls_context
        self.admission = Admission(max_connections, max_unauthenticated, penalties)
        #: Busy answers in flight at once; past that, refused without a word.
        self.reject_slots = threading.Semaphore(8)
        self._live: set[Stoppable] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self.listeners: list[Listener] = [RshellServer(b, self) for b in binds]
        #: The accept loop and its thread, from ``start`` on.
        self._doors: Loop | None = None
        self._accepter: threading.Thread | None = None

    @property
    def addresses(self) -> list[str]:
        """The native listeners' addresses."""
        return [srv.address for srv in self.listeners if isinstance(srv, RshellServer)]

    def add(self, listener: Listener) -> None:
        """Another listener (SSH) under the same admission and registry; before ``start``."""
        if self._doors is not None:
            raise RuntimeError("listeners are added before the daemon starts")
        self.listeners.append(listener)

    def start(self, poll_interval: float | None = None) -> None:
        """Accept on every listener, in one thread (see the module docstring).

        ``poll_interval`` is ignored: nothing polls for a stop any more (a
        stop wakes the loop).  It is kept for callers written for
        socketserver's ``serve_forever``."""
        doors = self._doors = Loop()
        for srv in self.listeners:
            doors.set(srv.fileno(), READ, srv.accept_ready)

        def woken(_mask: int) -> None:
            doors.drain_wake()  # a stop sets ``closing`` before it wakes us

        doors.set(doors.wake_fd, READ, woken)
        self._accepter = threading.Thread(
            target=self._accept, args=(doors,),
            name=f"accept ({len(self.listeners)} listeners)", daemon=True)
        self._accepter.start()

    def _accept(self, doors: Loop) -> None:
        try:
            while not doors.closing:
                doors.poll(None)
        finally:
            doors.close()

    def tracking(self, conn: Stoppable) -> _Tracked:
        """``with daemon.tracking(conn):`` while the connection lives; one that
        arrives during a stop is asked to stop at once."""
        return _Tracked(self, conn)

    @property
    def session_count(self) -> int:
        with self._cond:
            return len(self._live)

    def close_doors(self) -> None:
        """Refuse every new connection from now on, at the kernel: a listening
        socket shut for reading refuses connects at once (and resets those not
        yet accepted), without waiting for the accept loop to see the stop.

        The loop is told first (``closing``, then its wake-up): a shut socket
        reads as ready, and the loop, once told, takes no more than the one
        accept in hand before it ends, instead of spinning on them."""
        with self._cond:
            self._stopping = True
        self.admission.close()
        doors = self._doors
        if doors is not None:
            doors.closing = True
            doors.wake()
        for srv in self.listeners:
            try:
                srv.socket.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # already closed

    def stop(self, grace: float) -> None:
        """Stop accepting (``close_doors``); let running commands finish for
        ``grace`` seconds, then terminate them; return once every connection
        has ended."""
        self.close_doors()
        if self._accepter is not None:
            # Milliseconds: at most the accept in hand (admission, a thread's start).
            self._accepter.join(5.0)
            if self._accepter.is_alive():
                log.warning("the accept loop did not end; closing its sockets anyway")
        for srv in self.listeners:
            srv.server_close()
        with self._cond:
            live = list(self._live)
        for conn in live:
            conn.request_shutdown(grace)
        limit = time.monotonic() + grace + self.settings.limits.kill_grace + 5.0
        with self._cond:
            while self._live:
                left = limit - time.monotonic()
                if left <= 0:
                    log.warning("%d session(s) did not end in time", len(self._live))
                    break
                self._cond.wait(left)


class _Tracked:
    __slots__ = ("daemon", "conn")

    def __init__(self, daemon: Daemon, conn: Stoppable) -> None:
        self.daemon, self.conn = daemon, conn

    def __enter__(self) -> None:
        daemon = self.daemon
        with daemon._cond:
            daemon._live.add(self.conn)
            stopping = daemon._stopping
        if stopping:
            self.conn.request_shutdown(0.0)

    def __exit__(self, *exc: object) -> None:
        daemon = self.daemon
        with daemon._cond:
            daemon._live.discard(self.conn)
            daemon._cond.notify_all()
