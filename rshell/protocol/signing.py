"""The bytes a client signs to authenticate: see docs/SECURITY.md.

    string  "rshell-auth-v1"
    uint32  protocol version
    string  server nonce (from Challenge)
    string  server host key, SSH wire format, as the client pinned it
            (empty without TLS: there is then no server identity to bind)
    string  client public key, SSH wire format

(``string`` is a uint32 length then the bytes, as in SSH.)  Binding the nonce
makes a captured signature useless in any other session; binding the host
key the client saw makes it useless to a man in the middle, whose own key
the client would have seen instead.

Sans-IO: pure bytes.
"""

from __future__ import annotations

import struct

from rshell.protocol.messages import PROTOCOL_VERSION

CONTEXT = b"rshell-auth-v1"
NONCE_SIZE = 32


def _string(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def signed_data(nonce: bytes, host_key: bytes, client_key: bytes) -> bytes:
    return b"".join((
        _string(CONTEXT), struct.pack("!I", PROTOCOL_VERSION), _string(nonce),
        _string(host_key), _string(client_key),
    ))
