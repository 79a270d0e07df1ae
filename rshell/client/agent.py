"""The keys of a running ``ssh-agent`` (``$SSH_AUTH_SOCK``), for the native
protocol: list them, and have the agent sign the authentication data.

The client side of the agent protocol (draft-miller-ssh-agent) is two
requests over a UNIX socket, so it is spoken here rather than through
paramiko's agent client: the native one-shot never imports paramiko (about
60 ms of a cold start), and paramiko may only be imported in ``rshell/ssh/``
(tests/test_layering.py).  The ``ssh://`` backend uses paramiko's own agent
client.  Agent signatures come back in SSH's format; ``trust.keys``
turns them into the form the server verifies (RSA is asked for with
``SSH_AGENT_RSA_SHA2_256``: the server verifies PKCS#1 v1.5 with SHA-256,
never SHA-1).

Every reply is bounded (``MAX_REPLY``) before it is read.  An agent that
is absent, dead or speaking nonsense yields no keys, with a debug line:
it must never stop a login that a key file could make.

Must not import click, paramiko or cryptography.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct

from rshell.client.options import debug
from rshell.errors import KeyFileError, SignatureRefused

_FAILURE = 5
_REQUEST_IDENTITIES, _IDENTITIES_ANSWER = 11, 12
_SIGN_REQUEST, _SIGN_RESPONSE = 13, 14
_RSA_SHA2_256 = 2
#: An agent's answer is refused past this size (OpenSSH's own cap is 256 KiB).
MAX_REPLY = 256 * 1024
#: How long one request may take: an agent may ask its user to confirm a
#: signature (ssh-add -c), so this is generous.
TIMEOUT = 30.0
#: Key types the rshell server verifies (docs/PROTOCOL.md 4.4); certificates,
#: security keys (sk-*) and DSA are skipped.
USABLE = {"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
          "ecdsa-sha2-nistp521", "ssh-rsa"}
MIN_RSA_BITS = 2048


class AgentError(Exception):
    """The agent could not be reached or answered out of protocol."""


def _string(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def _strings(data: bytes, count: int) -> list[bytes]:
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(data):
            raise AgentError("truncated reply")
        (n,) = struct.unpack_from("!I", data, pos)
        if pos + 4 + n > len(data):
            raise AgentError("truncated reply")
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


class AgentKey:
    """One key held by the agent, with the interface of ``trust.keys.Identity``
    that the handshake uses (``public_line``, ``public_blob``, ``fingerprint``,
    ``path``, ``sign``)."""

    def __init__(self, agent: Agent, blob: bytes, comment: str) -> None:
        self.agent, self.public_blob, self.comment = agent, blob, comment
        self.kind = _strings(blob, 1)[0].decode("ascii", "replace")
        self.public_line = f"{self.kind} {base64.b64encode(blob).decode()}"
        self.path = f"agent {comment}" if comment else "agent"

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.public_blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def usable(self) -> str | None:
        """None if the server could verify this key, else why not."""
        if self.kind not in USABLE:
            return f"type {self.kind} is not one rshell uses"
        if self.kind == "ssh-rsa":
            try:
                bits = int.from_bytes(_strings(self.public_blob, 3)[2], "big").bit_length()
            except AgentError:
                return "a malformed RSA key"
            if bits < MIN_RSA_BITS:
                return f"RSA key of {bits} bits is too small"
        return None

    def sign(self, data: bytes) -> bytes:
        """The signature the server verifies, made by the agent."""
        from rshell.trust.keys import agent_signature

        flags = _RSA_SHA2_256 if self.kind == "ssh-rsa" else 0
        try:
            reply = self.agent.request(
                _SIGN_REQUEST, _string(self.public_blob) + _string(data) + struct.pack("!I", flags)
            )
        except AgentError as exc:
            raise SignatureRefused(
                f"ssh-agent: cannot sign with {self.fingerprint}: {exc}") from None
        if reply[0] != _SIGN_RESPONSE:
            raise SignatureRefused(f"ssh-agent refused to sign with {self.fingerprint}")
        try:
            return agent_signature(self.public_blob, _strings(reply[1:], 1)[0])
        except (AgentError, ValueError) as exc:
            raise KeyFileError(f"ssh-agent: unusable signature from {self.fingerprint}: {exc}") \
                from None


class Agent:
    """A connection to the agent at ``path``, opened at the first request."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None

    def request(self, kind: int, body: bytes = b"") -> bytes:
        """Send one message; return the reply (its type byte first)."""
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(TIMEOUT)
                self.sock.connect(self.path)
            self.sock.sendall(_string(bytes([kind]) + body))
            (size,) = struct.unpack("!I", self._read(4))
            if not 0 < size <= MAX_REPLY:
                raise AgentError(f"reply of {size} bytes")
            return self._read(size)
        except OSError as exc:
            self.close()
            raise AgentError(exc.strerror or str(exc)) from None
        except AgentError:
            self.close()
            raise

    def _read(self, n: int) -> bytes:
        assert self.sock is not None
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise AgentError("the agent closed the connection")
            data += chunk
        return bytes(data)

    def keys(self) -> list[AgentKey]:
        reply = self.request(_REQUEST_IDENTITIES)
        if reply[0] != _IDENTITIES_ANSWER or len(reply) < 5:
            raise AgentError("the agent refused to list its keys")
        (count,) = struct.unpack_from("!I", reply, 1)
        fields = _strings(reply[5:], 2 * min(count, MAX_REPLY // 8))
        found = []
        for blob, comment in zip(fields[::2], fields[1::2], strict=True):
            found.append(AgentKey(self, blob, comment.decode("utf-8", "replace")))
        return found

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def agent_keys() -> list[AgentKey]:
    """The keys of the agent ``$SSH_AUTH_SOCK`` names that an rshell server
    can verify, in the agent's order; none without an agent."""
    path = os.environ.get("SSH_AUTH_SOCK")
    if not path:
        debug(2, "no ssh-agent (SSH_AUTH_SOCK is not set)")
        return []
    agent = Agent(path)
    try:
        keys = agent.keys()
    except AgentError as exc:
        debug(1, "ssh-agent at %s: %s; not using it", path, exc)
        return []
    debug(1, "ssh-agent at %s holds %d key(s)", path, len(keys))
    usable = []
    for key in keys:
        reason = key.usable()
        if reason is None:
            usable.append(key)
        else:
            debug(2, "skipping agent key %s (%s): %s", key.fingerprint, key.comment, reason)
    if not usable:
        agent.close()
    return usable
