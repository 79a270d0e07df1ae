"""Who the ``ssh://`` backend trusts and who it claims to be: the host key
pinned in OpenSSH's known_hosts (``Pinning``, over client.hostkeys' one set
of decisions) and the keys offered, in ssh's order (``Keys``).

One of the doors to paramiko (with ssh._paramiko, server, channel, client).
Must not import the server side or the engine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from typing import Any, Protocol

import paramiko

from rshell.client.hostkeys import HostKeyPolicy
from rshell.client.options import ConnectOptions, debug, debugging
from rshell.errors import KeyFileError
from rshell.ssh import _paramiko as door


class Backend(Protocol):
    """What these need of the backend (ssh.client.SshBackend)."""

    user: str
    host_fingerprint: str | None


class Pinning(paramiko.MissingHostKeyPolicy):
    """paramiko's question about an unknown key, answered by client.hostkeys;
    an accepted key is appended to ``known`` as OpenSSH writes it."""

    def __init__(self, backend: Backend, policy: HostKeyPolicy, known: str) -> None:
        self.backend, self.policy, self.known = backend, policy, known
        self.asked = False

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        self.asked = True
        fp = self.backend.host_fingerprint = fingerprint(key)
        debug(1, "server host key: %s %s", key.get_name(), fp)
        self.policy.decide(hostname, fp, None, self.known)
        client.get_host_keys().add(hostname, key.get_name(), key)
        os.makedirs(os.path.dirname(self.known), mode=0o700, exist_ok=True)
        fd = os.open(self.known, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        debug(1, "host %s was unknown: accepted, added to %s", hostname, self.known)


#: Key files tried when no ``-i`` is given, in paramiko's (and ssh's) order.
DEFAULT_KEY_FILES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")


class Key(paramiko.InMemoryPrivateKey):
    """A key to offer, with where it came from (``-i``'s path, ``agent ...``)."""

    def __init__(self, username: str, pkey: Any, where: str) -> None:
        super().__init__(username, pkey)
        self.where = where
        self.fingerprint = fingerprint(pkey)


class Keys(paramiko.AuthStrategy):
    """The keys offered, as ssh offers them: ``-i``, then ssh-agent's (through
    paramiko's agent client), then the key files found (``DEFAULT_KEY_FILES``,
    without ``-i``), each loaded only when its turn comes, a key met twice
    offered once.  SSH lets one connection try several (sshd's MaxAuthTries
    bounds them).  Each offer and verdict goes to the debug log."""

    def __init__(self, backend: Backend, options: ConnectOptions, pinning: Pinning) -> None:
        super().__init__(ssh_config=None)
        self.backend, self.options, self.pinning = backend, options, pinning
        self.agent: Any = None
        self.refused: list[Key] = []
        self.started = time.monotonic()

    def get_sources(self) -> Generator[Key, None, None]:
        user, seen = self.backend.user, set()
        identity = self.options.identity
        for pkey, where in self._keys(identity):
            blob = pkey.asbytes()
            if blob not in seen:
                seen.add(blob)
                yield Key(user, pkey, where)

    def _keys(self, identity: Any) -> Generator[tuple[Any, str], None, None]:
        if identity is not None:
            yield self._load(os.path.expanduser(str(identity)), required=True), str(identity)
        try:
            self.agent = paramiko.Agent()
            held = self.agent.get_keys()
        except door.FAILURES as exc:
            debug(1, "ssh-agent: %s; not using it", exc)
            held = ()
        if held:
            debug(1, "ssh-agent holds %d key(s)", len(held))
        for key in held:
            yield key, f"agent {key.comment}".rstrip() if isinstance(key.comment, str) \
                else "agent"
        if identity is not None:
            return
        for name in DEFAULT_KEY_FILES:
            path = os.path.expanduser(name)
            if os.path.isfile(path):
                try:
                    yield self._load(path, required=False), path
                except KeyFileError as exc:
                    debug(1, "skipping %s: %s", path, exc)

    def _load(self, path: str, required: bool) -> Any:
        """The private key at ``path``, its passphrase asked if it needs one."""
        given = self.options.passphrase
        secret = given if isinstance(given, str) else None
        ask = self.options.passphrase_callback()
        for _ in range(3):
            try:
                return paramiko.PKey.from_path(path, secret)
            except paramiko.PasswordRequiredException:
                pass
            except paramiko.SSHException as exc:
                if secret is None:
                    raise KeyFileError(f"{path}: not a usable private key ({exc})") from None
            except (OSError, ValueError) as exc:
                raise KeyFileError(f"cannot read identity file {path}: {exc}") from None
            secret = ask(f"Enter passphrase for key '{path}': ") if ask is not None else None
            if not secret:
                raise KeyFileError(f"{path} is encrypted and no passphrase was given")
        raise KeyFileError(f"{path}: wrong passphrase")

    def authenticate(self, transport: Any) -> list[Any]:
        """Offer each key until one is accepted; AuthenticationException if none is."""
        self._handshaken(transport)
        for source in self.get_sources():
            started = time.monotonic()
            debug(1, "offering key %s (%s)", source.fingerprint, source.where)
            try:
                source.authenticate(transport)
            except paramiko.AuthenticationException:
                debug(1, "key %s refused (%.1f ms)", source.fingerprint,
                      (time.monotonic() - started) * 1000)
                self.refused.append(source)
                continue
            debug(1, "key %s accepted (%.1f ms)", source.fingerprint,
                  (time.monotonic() - started) * 1000)
            return []
        raise paramiko.AuthenticationException(
            "no identity to offer (no -i, no key in ssh-agent, no ~/.ssh/id_*)"
        )

    def _handshaken(self, transport: Any) -> None:
        if not debugging():
            return
        debug(1, "SSH handshake done in %.1f ms: server %s, cipher %s, MAC %s",
              (time.monotonic() - self.started) * 1000, transport.remote_version,
              transport.local_cipher, transport.local_mac)
        if not self.pinning.asked:
            fp = fingerprint(transport.get_remote_server_key())
            debug(1, "server host key %s is known and matches (%s)", fp, self.pinning.known)

    def refusal(self) -> str:
        """Which keys were refused, for the error line ('' if none was offered)."""
        if not self.refused:
            return ""
        keys = ", key ".join(f"{k.fingerprint} ({k.where})" for k in self.refused)
        return f"refused key {keys}"

    def close(self) -> None:
        if self.agent is not None:
            self.agent.close()


def fingerprint(key: Any) -> str:
    from rshell.trust.keys import blob_fingerprint

    return blob_fingerprint(key.asbytes())
