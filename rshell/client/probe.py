"""Asking a server for its host key without logging in (``rshell fingerprint HOST``).

Must not import click.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from rshell.errors import HostKeyError
from rshell.transport import edge, tune

if TYPE_CHECKING:
    from rshell.trust.keys import PublicKey


def host_key_of(host: str, port: int, timeout: float) -> PublicKey:
    """The key the server at host:port proves it holds in a TLS handshake."""
    from rshell.trust import tls

    with edge(f"connecting to {host}:{port}"):
        sock = socket.create_connection((host, port), timeout=timeout)
        tune(sock)
        with tls.client_context().wrap_socket(sock) as wrapped:
            try:
                return tls.peer_key(wrapped)
            except ValueError as exc:
                raise HostKeyError(str(exc)) from None
