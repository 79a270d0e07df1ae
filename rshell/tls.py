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

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from rshell.keys import PublicKey, private_pem


def _certificate(key: ed25519.Ed25519PrivateKey) -> bytes:
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


def peer_key(sock: ssl.SSLSocket) -> PublicKey:
    """The public key in the certificate the peer proved it holds."""
    der = sock.getpeercert(binary_form=True)
    if not der:
        raise ValueError("the server presented no certificate")
    key = x509.load_der_x509_certificate(der).public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("the server's certificate does not carry an Ed25519 host key")
    return key
