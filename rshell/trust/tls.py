"""TLS 1.3 contexts, and the certificate that carries the host key.

The server presents a self-signed X.509 certificate made from its Ed25519
host key; TLS proves the server holds that key, and the client pins the key
itself (known_hosts) instead of trusting any CA.  Only TLS 1.3 is offered or
accepted.  With keys.py, the only importer of ``cryptography``.

Must not import anything above layer 1.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from rshell.trust.keys import private_pem

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from rshell.trust.keys import PublicKey

#: DER SubjectPublicKeyInfo of an Ed25519 key, up to the 32 key bytes
#: (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (33 bytes) }.
_ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")


def _certificate(key: ed25519.Ed25519PrivateKey) -> bytes:
    import datetime  # server side only: kept off the client's cold start

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
    import tempfile  # server side only: kept off the client's cold start

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


_client_context: ssl.SSLContext | None = None


def client_context() -> ssl.SSLContext:
    """A TLS 1.3-only client context; the host key is checked by pinning.
    One per process (an SSLContext is shared safely across threads): making
    one costs a millisecond or two, which a fleet would pay per host."""
    global _client_context
    if _client_context is None:
        _client_context = _new_client_context()
    return _client_context


def _new_client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # no CA: known_hosts pins the key instead
    return ctx


def peer_key_blob(sock: ssl.SSLSocket) -> bytes:
    """The SSH wire blob of the Ed25519 key in the certificate the peer proved it
    holds.  The client's cold path needs no X.509 library (``cryptography.x509``
    costs tens of milliseconds to import): ``certificate_ed25519`` walks the DER
    to the one field TLS binds, subjectPublicKeyInfo."""
    from rshell.trust.keys import ed25519_blob

    return ed25519_blob(certificate_ed25519(sock.getpeercert(binary_form=True) or b""))


def certificate_ed25519(der: bytes) -> bytes:
    """The raw Ed25519 key in a certificate's own subjectPublicKeyInfo.

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo,
    ... }, ... }.  Only that position counts: a key found anywhere else (an
    extension, a name) is data an attacker chose, and is never read.
    """
    try:
        cert, rest = _der(der, 0, 0x30)
        if rest != len(der):
            raise ValueError("trailing bytes")
        tbs, _ = _der(der, cert[0], 0x30)
        fields: list[tuple[int, int, int]] = []  # (tag, start of TLV, end)
        at = tbs[0]
        while at < tbs[1] and len(fields) < 7:
            tag = der[at]
            (_, end) = _der(der, at, tag)
            fields.append((tag, at, end))
            at = end
        if fields and fields[0][0] == 0xA0:  # explicit [0] version
            fields = fields[1:]
        if len(fields) < 6:
            raise ValueError("short tbsCertificate")
        tag, spki_start, spki_end = fields[5]
        spki = der[spki_start:spki_end]
    except (IndexError, ValueError) as exc:
        raise ValueError(f"the server's certificate cannot be read ({exc})") from None
    if tag != 0x30 or len(spki) != len(_ED25519_SPKI) + 32 or not spki.startswith(_ED25519_SPKI):
        raise ValueError("the server's certificate does not carry an Ed25519 host key")
    return spki[len(_ED25519_SPKI) :]


def _der(data: bytes, at: int, tag: int) -> tuple[tuple[int, int], int]:
    """The TLV at ``at`` with this tag: ((content start, content end), TLV end)."""
    if data[at] != tag:
        raise ValueError(f"expected tag {tag:#x}, found {data[at]:#x}")
    first = data[at + 1]
    if first < 0x80:
        length, start = first, at + 2
    else:
        count = first & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("bad length")
        length = int.from_bytes(data[at + 2 : at + 2 + count], "big")
        start = at + 2 + count
    end = start + length
    if end > len(data):
        raise ValueError("truncated")
    return (start, end), end


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
