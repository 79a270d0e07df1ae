"""TLS 1.3 contexts, and the certificate that carries the host key.

The server presents a self-signed X.509 certificate made from its Ed25519
host key; TLS proves the server holds that key, and the client pins the key
itself (known_hosts) instead of trusting any CA.  Only TLS 1.3 is offered or
accepted.  With keys.py, the only importer of ``cryptography``.

Must not import anything above layer 1.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rshell.keys import private_pem

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from rshell.keys import PublicKey

#: DER SubjectPublicKeyInfo of an Ed25519 key, up to the 32 key bytes
#: (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (33 bytes) }.
_ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")


def _certificate(key: ed25519.Ed25519PrivateKey) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rshell host key")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def server_context(key: ed25519.Ed25519PrivateKey, state_dir: Path) -> ssl.SSLContext:
    """A TLS 1.3-only server context presenting ``key``.

    The ssl module loads keys only from files: the PEM copy lives for the
    duration of the call, in the (0700) state dir, created 0600.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_NONE  # clients authenticate with their keys, in-band
    fd, name = tempfile.mkstemp(prefix=".tls-", dir=state_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem(key) + _certificate(key))
        ctx.load_cert_chain(name)
    finally:
        os.unlink(name)
    return ctx


def client_context() -> ssl.SSLContext:
    """A TLS 1.3-only client context; the host key is checked by pinning."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # no CA: known_hosts pins the key instead
    return ctx


def peer_key_blob(sock: ssl.SSLSocket) -> bytes:
    """The SSH wire blob of the Ed25519 key in the certificate the peer proved it
    holds, found in the DER directly: the client's cold path needs no X.509
    parser (``cryptography.x509`` costs tens of milliseconds to import)."""
    from rshell.keys import ed25519_blob

    der = sock.getpeercert(binary_form=True) or b""
    at = der.find(_ED25519_SPKI)
    if at < 0 or der.find(_ED25519_SPKI, at + 1) >= 0 or len(der) < at + 12 + 32:
        raise ValueError("the server's certificate does not carry exactly one Ed25519 key")
    return ed25519_blob(der[at + 12 : at + 44])


def peer_key(sock: ssl.SSLSocket) -> PublicKey:
    """The public key in the certificate the peer proved it holds."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ed25519

    der = sock.getpeercert(binary_form=True)
    if not der:
        raise ValueError("the server presented no certificate")
    key = x509.load_der_x509_certificate(der).public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("the server's certificate does not carry an Ed25519 host key")
    return key
