"""Keys: generation, loading (OpenSSH formats), fingerprints, signatures.

With tls.py, the only importer of ``cryptography``; its ``serialization``
module (20+ ms to import) is loaded only off the client's common path: an
unencrypted OpenSSH Ed25519 key, the default, is parsed here directly.  Keys are Ed25519 by
default, ECDSA (NIST P-256/384/521) and RSA (>= 2048 bits) too, in the
formats OpenSSH writes, so ``~/.ssh/id_*`` made by ``ssh-keygen`` work.
Fingerprints are OpenSSH's: ``SHA256:`` + unpadded base64 of the SHA-256 of
the key's SSH wire encoding.  Private keys readable by group or others are
refused, as ssh refuses them.

Must not import sockets, the protocol, or anything above layer 1.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# ECDSA and RSA (with hashes and padding) are imported where a key of theirs
# is met: the default Ed25519 one-shot never pays for them (about 3 ms).
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519

from rshell.errors import KeyFileError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.hashes import HashAlgorithm

    PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
Passphrase = Callable[[str], str | None]

KEY_TYPES = ("ed25519", "ecdsa", "rsa")
MIN_RSA_BITS = 2048
_CURVE_HASHES = {"secp256r1": "SHA256", "secp384r1": "SHA384", "secp521r1": "SHA512"}


def _curve_hash(curve: str) -> HashAlgorithm | None:
    """A fresh hash object for an ECDSA curve's signatures, None if unsupported."""
    from cryptography.hazmat.primitives import hashes

    name = _CURVE_HASHES.get(curve)
    algorithm: HashAlgorithm | None = None if name is None else getattr(hashes, name)()
    return algorithm


@dataclass(frozen=True)
class Identity:
    """A loaded private key, with its public half as OpenSSH spells it."""

    key: PrivateKey
    public_line: str  # "ssh-ed25519 AAAA... comment"
    path: str

    @property
    def public_blob(self) -> bytes:
        return base64.b64decode(self.public_line.split()[1])

    @property
    def fingerprint(self) -> str:
        return blob_fingerprint(self.public_blob)

    def sign(self, data: bytes) -> bytes:
        return sign(self.key, data)


def _string(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def ed25519_blob(raw: bytes) -> bytes:
    """The SSH wire format of a raw 32-byte Ed25519 public key."""
    return _string(b"ssh-ed25519") + _string(raw)


def public_blob(key: PublicKey) -> bytes:
    """The key in SSH wire format (what fingerprints and signatures bind)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ed25519_blob(key.public_bytes_raw())
    from cryptography.hazmat.primitives import serialization

    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def public_line(key: PublicKey, comment: str = "") -> str:
    blob = public_blob(key)
    kind = blob[4 : 4 + struct.unpack_from("!I", blob)[0]].decode()
    return f"{kind} {base64.b64encode(blob).decode()} {comment}".rstrip()


def blob_fingerprint(blob: bytes) -> str:
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def fingerprint(key: PublicKey) -> str:
    return blob_fingerprint(public_blob(key))


def describe(key: PublicKey) -> tuple[int, str]:
    """(bits, TYPE) as ``ssh-keygen -l`` prints them."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256, "ED25519"
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size, "ECDSA"
    return key.key_size, "RSA"


def parse_public(line: str) -> tuple[PublicKey, str]:
    """``keytype base64 [comment]`` -> (key, comment); ValueError if unusable."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError("expected 'keytype base64 [comment]'")
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"unusable {parts[0]} key: {exc}") from None
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey,
                            rsa.RSAPublicKey)):
        raise ValueError(f"unsupported key type {parts[0]}")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits is too small (minimum {MIN_RSA_BITS})")
    return key, parts[2] if len(parts) > 2 else ""


def sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = _curve_hash(key.curve.name)
        if algorithm is None:
            raise KeyFileError(f"unsupported ECDSA curve {key.curve.name}")
        return key.sign(data, ec.ECDSA(algorithm))
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


#: The SSH signature algorithm an agent must answer with, by key type: the
#: one whose raw form ``verify`` checks (RSA: SHA-256, never ssh-rsa's SHA-1).
_AGENT_ALGORITHMS = {
    "ssh-ed25519": "ssh-ed25519", "ssh-rsa": "rsa-sha2-256",
    "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521",
}


def agent_signature(key_blob: bytes, signature: bytes) -> bytes:
    """An SSH-format signature (``string algorithm, string blob``, as an
    agent returns it) by the key ``key_blob`` -> the form ``sign`` makes and
    ``verify`` checks; ValueError if it is not the algorithm the key's type
    must use here (an agent that ignored the SHA-256 flag gives SHA-1)."""
    kind = _SshReader(key_blob).string().decode("ascii", "replace")
    fields = _SshReader(signature)
    algorithm, raw = fields.string().decode("ascii", "replace"), fields.string()
    if _AGENT_ALGORITHMS.get(kind) != algorithm:
        raise ValueError(f"{algorithm} signature for a {kind} key")
    if not kind.startswith("ecdsa-"):
        return raw
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    pair = _SshReader(raw)  # mpint r, mpint s
    return encode_dss_signature(int.from_bytes(pair.string(), "big"),
                                int.from_bytes(pair.string(), "big"))


def verify(key: PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
            return True
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding

        if isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = _curve_hash(key.curve.name)
            if algorithm is None:
                return False
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def generate(kind: str = "ed25519", bits: int | None = None) -> PrivateKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if kind == "ecdsa":
        curves: dict[int | None, type[ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1]] = {
            None: ec.SECP256R1, 256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1,
        }
        if bits not in curves:
            raise KeyFileError(f"ECDSA keys are 256, 384 or 521 bits, not {bits}")
        return ec.generate_private_key(curves[bits]())
    if kind == "rsa":
        size = bits or 3072
        if size < MIN_RSA_BITS:
            raise KeyFileError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    raise KeyFileError(f"unknown key type {kind!r} (choose {', '.join(KEY_TYPES)})")


def write_key_pair(path: Path, key: PrivateKey, comment: str, passphrase: str = "") -> str:
    """Write PATH (0600, OpenSSH format) and PATH.pub; return the public line.

    The private file is created with O_EXCL and mode 0600 from the start, so
    it is never readable by anyone else, not even for an instant.
    """
    from cryptography.hazmat.primitives import serialization

    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase else serialization.NoEncryption()
    )
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        _create_whole(path, data)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; not overwriting it") from None
    line = public_line(key.public_key(), comment)
    Path(f"{path}.pub").write_text(line + "\n")
    return line


def _create_whole(path: Path, data: bytes) -> None:
    """``path`` holding ``data``, mode 0600, created only if absent and never
    seen half-written: written under a temporary name, then linked into
    place (FileExistsError if ``path`` exists, made meanwhile included)."""
    import secrets

    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.link(temporary, path)
    finally:
        os.unlink(temporary)


def default_comment() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def load_identity(path: str | os.PathLike[str], passphrase: Passphrase | None = None) -> Identity:
    """Load a private key as ssh would: permissions checked, passphrase asked.

    ``passphrase(prompt)`` is called only if the key is encrypted; None from
    it (or no callback) means none can be had.
    """
    path = Path(path).expanduser()
    try:
        st = path.stat()
        cached = _loaded.get(str(path))
        if cached is not None and cached[0] == _stamp(st) and _unlocks(cached[2], passphrase,
                                                                         path):
            return cached[1]  # a fleet's thousand connections load and decrypt it once
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"identity file {path} not found (create one: rshell keygen)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read identity file {path}: {exc.strerror}") from None
    if data.lstrip().startswith((b"ssh-", b"ecdsa-sha2-", b"sk-")):
        private = path.with_suffix("") if path.suffix == ".pub" else None
        raise KeyFileError(
            f"{path} is a public key, not a private one: an identity (-i) is the private "
            "key" + (f", {private}" if private is not None and private.exists() else "")
        )
    if st.st_mode & 0o077 and stat.S_ISREG(st.st_mode):
        raise KeyFileError(
            f"permissions {stat.S_IMODE(st.st_mode):04o} for {path} are too open: a private "
            "key must not be accessible by others (chmod 600 it)"
        )
    answers: list[str] = []

    def asked(prompt: str) -> str | None:
        answer = passphrase(prompt) if passphrase is not None else None
        if answer is not None:
            answers.append(answer)
        return answer

    key = _plain_ed25519(data) or _load_private(data, path, asked)
    if not isinstance(key, ed25519.Ed25519PrivateKey) and _rsa_too_small(key):
        raise KeyFileError(f"{path}: RSA key of {key.key_size} bits is too small")
    comment = ""
    pub = Path(f"{path}.pub")
    try:
        fields = pub.read_text().split(None, 2)
        comment = fields[2].strip() if len(fields) > 2 else ""
    except (OSError, UnicodeDecodeError):
        comment = ""
    identity = Identity(key, public_line(key.public_key(), comment), str(path))
    _loaded[str(path)] = (_stamp(st), identity, answers[-1] if answers else None)
    return identity


#: path -> (the file's stamp, its identity, the passphrase that opened it):
#: loaded once per process while unchanged, and handed again only to a
#: caller who gives the same passphrase (none for a key without one).
_loaded: dict[str, tuple[tuple[int, ...], Identity, str | None]] = {}


def _unlocks(secret: str | None, passphrase: Passphrase | None, path: Path) -> bool:
    """Whether this caller could open the key as it was opened: asked the
    way a first load asks (a fleet's callback answers from its memory)."""
    if secret is None:
        return True
    if passphrase is None:
        return False
    import hmac

    answer = passphrase(f"Enter passphrase for key '{path}': ")
    return answer is not None and hmac.compare_digest(answer.encode(), secret.encode())


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    """What must not change for a loaded key to stand: the file, its contents, its mode."""
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_mode)


def _plain_ed25519(data: bytes) -> ed25519.Ed25519PrivateKey | None:
    """An unencrypted OpenSSH Ed25519 key, read without ``serialization``;
    None for anything else (which the general loader then handles)."""
    text = data.strip()
    head, tail = b"-----BEGIN OPENSSH PRIVATE KEY-----", b"-----END OPENSSH PRIVATE KEY-----"
    if not (text.startswith(head) and text.endswith(tail)):
        return None
    try:
        raw = base64.b64decode(b"".join(text[len(head) : -len(tail)].split()), validate=True)
        fields = _SshReader(raw, b"openssh-key-v1\0")
        cipher, kdf, _opts, count = fields.string(), fields.string(), fields.string(), fields.u32()
        if cipher != b"none" or kdf != b"none" or count != 1:
            return None
        fields.string()  # the public blob, repeated inside
        private = _SshReader(fields.string())
        if private.u32() != private.u32() or private.string() != b"ssh-ed25519":
            return None
        pub, secret = private.string(), private.string()
        if len(pub) != 32 or len(secret) != 64 or secret[32:] != pub:
            return None
        key = ed25519.Ed25519PrivateKey.from_private_bytes(secret[:32])
    except (ValueError, struct.error, IndexError):
        return None
    return key if key.public_key().public_bytes_raw() == pub else None


class _SshReader:
    """Sequential reads of SSH wire types from bytes."""

    def __init__(self, data: bytes, magic: bytes = b"") -> None:
        if not data.startswith(magic):
            raise ValueError("bad magic")
        self.data, self.pos = data, len(magic)

    def u32(self) -> int:
        (value,) = struct.unpack_from("!I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def string(self) -> bytes:
        n = self.u32()
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return value


def _rsa_too_small(key: PrivateKey) -> bool:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS


def _load_private(data: bytes, path: Path, passphrase: Passphrase | None) -> PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    password: bytes | None = None
    wrong = 0
    prompt = f"Enter passphrase for key '{path}': "
    key: object
    while True:
        try:
            if b"BEGIN OPENSSH PRIVATE KEY" in data:
                key = serialization.load_ssh_private_key(data, password)
            else:
                key = serialization.load_pem_private_key(data, password)
        except TypeError:  # encrypted but no passphrase, or the reverse
            if password is not None:
                raise KeyFileError(f"{path} is not encrypted; no passphrase needed") from None
        except ValueError as exc:
            if password is None:
                raise KeyFileError(f"{path}: not a usable private key ({exc})") from None
            wrong += 1
            if wrong >= 3:
                raise KeyFileError(f"{path}: wrong passphrase") from None
            prompt = f"Wrong passphrase, try again for key '{path}': "  # ssh: "Bad passphrase"
        except UnsupportedAlgorithm as exc:
            raise KeyFileError(f"{path}: unsupported key ({exc})") from None
        else:
            if not isinstance(
                key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)
            ):
                raise KeyFileError(f"{path}: unsupported key type")
            return key
        answer = passphrase(prompt) if passphrase else None
        if not answer:  # None, or Enter at the prompt: as ssh, give up on this key
            raise KeyFileError(f"{path} is encrypted and no passphrase was given")
        password = answer.encode()


def load_host_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """The server's host key, generated on first use (mode 0600)."""
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        try:
            write_key_pair(path, key, "rshell host key")
        except KeyFileError:
            if not path.exists():
                raise
            # Another server on this state made it meanwhile: that one is it.
    ident = load_identity(path)
    if not isinstance(ident.key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path}: the host key must be Ed25519")
    return ident.key


def private_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, as OpenSSL (and so the ssl module) loads keys."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
