"""The daemon: one ``ThreadingTCPServer`` per bound address, a thread per connection.

Methods for the caller: ``Daemon(binds, config).start()``, ``.stop(grace)``,
``.addresses``.  Class variables on ``RshellServer`` configure socketserver as
its docstring describes.  The request handler is a few lines: it tunes the
socket and hands it to ``service.Session``, which does everything else in the
handler's own thread (never on the accept loop).

Must not import click or the client side.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from typing import Any

from rshell.paths import format_hostport
from rshell.service import ServerConfig, Session
from rshell.transport import Stream, tune

log = logging.getLogger("rshell.server")


class _Handler(socketserver.BaseRequestHandler):
    server: RshellServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        tune(sock)
        host, port = self.client_address[:2]
        peer = format_hostport(host, port)
        config = self.server.config
        deadline = time.monotonic() + config.auth_timeout
        ctx = self.server.daemon.tls_context
        if ctx is not None:
            # The TLS handshake runs here, in this connection's thread, never on
            # the accept loop; it counts against the handshake deadline.
            try:
                sock.settimeout(config.auth_timeout)
                sock = ctx.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.warning("%s: TLS handshake failed: %s", peer, getattr(exc, "reason", exc))
                sock.close()
                return
        session = Session(Stream(sock, peer), config, deadline)
        daemon = self.server.daemon
        if not daemon.track(session):
            session.request_shutdown(0.0)
        try:
            session.serve()
        finally:
            daemon.untrack(session)


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


class Daemon:
    """Every listener and every live session of one server process."""

    def __init__(
        self,
        binds: list[tuple[str, int]],
        config: ServerConfig,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.tls_context = tls_context
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
