"""The client reads the host key from the certificate's subjectPublicKeyInfo and
nowhere else: a forged certificate that carries the real server's key in an
extension (while TLS proves possession of the attacker's key) must not pass
for the real server."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID, ObjectIdentifier

import rshell
from rshell.trust import keys, tls
from tests.conftest import ServerProcess


def _cert(subject_key: object, signer: object, extra_spki: bytes | None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(subject_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if extra_spki is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), extra_spki),
            critical=False,
        )
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else _sha256()
    return builder.sign(signer, algorithm)  # type: ignore[arg-type]


def _sha256() -> object:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _spki(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_key_of_an_ed25519_certificate_is_read() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    der = _cert(key.public_key(), key, None).public_bytes(serialization.Encoding.DER)
    assert tls.certificate_ed25519(der) == key.public_key().public_bytes_raw()


def test_ed25519_key_planted_in_an_extension_is_ignored() -> None:
    """The attack the review found: an ECDSA certificate smuggling the real
    server's Ed25519 key in an extension is not an Ed25519 certificate."""
    real = ed25519.Ed25519PrivateKey.generate()
    attacker = ec.generate_private_key(ec.SECP256R1())
    der = _cert(attacker.public_key(), attacker, _spki(real)).public_bytes(
        serialization.Encoding.DER
    )
    assert _spki(real) in der  # the bait is there ...
    with pytest.raises(ValueError, match="does not carry an Ed25519"):
        tls.certificate_ed25519(der)  # ... and is not taken


def test_only_the_subject_key_counts_when_both_are_ed25519() -> None:
    real = ed25519.Ed25519PrivateKey.generate()
    attacker = ed25519.Ed25519PrivateKey.generate()
    der = _cert(attacker.public_key(), attacker, _spki(real)).public_bytes(
        serialization.Encoding.DER
    )
    assert tls.certificate_ed25519(der) == attacker.public_key().public_bytes_raw()


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x82\xff\xff", b"\x02\x01\x00"])
def test_garbage_certificates_are_refused(der: bytes) -> None:
    with pytest.raises(ValueError):
        tls.certificate_ed25519(der)


def test_forged_certificate_cannot_pass_for_a_pinned_server(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """End to end: a TLS server presenting the forged certificate at an address
    pinned to the real server's key is refused before anything is signed."""
    real_blob = keys.ed25519_blob(
        keys.load_identity(home / "server" / "host_key").key.public_key().public_bytes_raw()
    )
    raw_key = real_blob[-32:]
    attacker = ec.generate_private_key(ec.SECP256R1())
    spki = bytes.fromhex("302a300506032b6570032100") + raw_key
    cert = _cert(attacker.public_key(), attacker, spki)
    pem = tmp_path / "forged.pem"
    pem.write_bytes(
        attacker.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tconn:
                tconn.settimeout(5)
                got.append(tconn.recv(100))
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    known = tmp_path / "known_hosts"
    known.write_text(f"127.0.0.1:{port} {keys.blob_fingerprint(real_blob)}\n")
    with pytest.raises(rshell.HostKeyError):
        rshell.connect(f"127.0.0.1:{port}", known_hosts=known, strict_host_keys=True,
                       connect_timeout=5)
    thread.join(10)
    listener.close()
    assert got in ([], [b""]), "the client sent something to the forger"
