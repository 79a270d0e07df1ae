"""Who the ``ssh://`` backend trusts and who it claims to be: the host key
pinned in OpenSSH's known_hosts (``Pinning``, over client.hostkeys' one set
of decisions), the keys offered, in ssh's order (``Keys``), and where a
target leads once ``~/.ssh/config`` has had its say (``destination``).

One of the doors to paramiko (with ssh._paramiko, server, channel, client).
Must not import the server side or the engine.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Generator, Sequence
from typing import Any, NamedTuple, Protocol

import paramiko

from rshell.client.hostkeys import HostKeyPolicy
from rshell.client.options import ConnectOptions, debug, debugging
from rshell.errors import ConfigError, KeyFileError
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
    """The keys offered, as ssh offers them: ``-i``, then ``files`` (the
    config's IdentityFile, in order; one that does not exist is skipped
    without a word, as ssh skips it), then ssh-agent's (through paramiko's
    agent client), then the key files found (``DEFAULT_KEY_FILES``, only
    when neither ``-i`` nor the config named a key: ssh's rule), each loaded
    only when its turn comes, a key met twice offered once.  SSH lets one
    connection try several (sshd's MaxAuthTries bounds them).  Each offer
    and verdict goes to the debug log."""

    def __init__(self, backend: Backend, options: ConnectOptions, pinning: Pinning,
                 files: Sequence[str] = ()) -> None:
        super().__init__(ssh_config=None)
        self.backend, self.options, self.pinning = backend, options, pinning
        self.files = tuple(files)
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
        for path in self.files:
            if not os.path.exists(path):
                debug(1, "%s (IdentityFile): no such file; skipped", path)
                continue
            try:
                yield self._load(path, required=False), path
            except KeyFileError as exc:
                debug(1, "skipping %s: %s", path, exc)
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
        if identity is not None or self.files:
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
        files = "no IdentityFile found" if self.files else "no ~/.ssh/id_*"
        raise paramiko.AuthenticationException(
            f"no identity to offer (no -i, no key in ssh-agent, {files})"
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


# ---- ~/.ssh/config ----------------------------------------------------------------------

#: The user's ssh_config.  From ``$HOME`` (ssh reads the passwd entry's home):
#: a test or a sandbox that moves HOME moves it too, as it moves ~/.ssh's keys.
USER_CONFIG = "~/.ssh/config"
#: Read no further: a config is text a person wrote, not a stream (/dev/zero).
MAX_CONFIG = 16 * 1024 * 1024
#: Keywords that would route the connection elsewhere; not followed, so said.
_UNFOLLOWED = {"proxyjump": "ProxyJump", "proxycommand": "ProxyCommand"}


class Destination(NamedTuple):
    """Where an ``ssh://`` target leads and as whom, the config applied."""

    user: str
    host: str  #: after HostName: the host dialled and named in known_hosts
    port: int
    identity_files: tuple[str, ...]  #: the config's IdentityFile, expanded, in order
    unfollowed: tuple[str, ...]  #: keywords that apply but are not followed (ProxyJump)


def destination(user: str | None, host: str, port: int | None) -> Destination:
    """What ssh would do with ``[user@]host[:port]``: what was written wins
    (``user@``, ``:port`` or ``-p``), then ``~/.ssh/config`` (HostName, User,
    Port, IdentityFile, looked up under ``host`` as written, first value
    wins as in ssh_config(5)), then the defaults (this account, 22).  No
    config file is no config; one that cannot be read, is unsafe or cannot
    be parsed is a ConfigError naming it, as ssh refuses to start over it."""
    path = os.path.expanduser(USER_CONFIG)
    config = _read_config(path)
    if config is None:
        return Destination(user or getpass.getuser(), host, port or 22, (), ())
    try:
        found = config.lookup(host)
    except Exception as exc:  # noqa: BLE001  # Match/Canonicalize raise what they meet
        why = f"{exc.args[0]} is not set" if isinstance(exc, KeyError) else exc
        raise ConfigError(f"{path}: cannot apply it to {host}: {why}") from None
    real = _text(path, found, "hostname") or host
    named = _text(path, found, "user")
    files = tuple(os.path.expanduser(f) for f in found.get("identityfile") or ())
    unfollowed = tuple(name for key, name in _UNFOLLOWED.items()
                       if found.get(key) not in (None, "none"))
    if "include" in found:
        debug(1, "%s: Include is not followed (paramiko's parser reads one file)", path)
    configured = _config_port(path, found)  # checked even when -p wins, as ssh checks it
    return Destination(user or named or getpass.getuser(), real,
                       port or configured or 22, files, unfollowed)


def _read_config(path: str) -> paramiko.SSHConfig | None:
    """``path`` parsed, None if there is none; ssh's owner and mode rule
    (yours or root's, writable by nobody else) before a line is read."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            st = os.fstat(f.fileno())
            if st.st_uid not in (0, os.getuid()) or st.st_mode & 0o022:
                raise ConfigError(f"bad owner or permissions on {path}")
            text = f.read(MAX_CONFIG + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(text) > MAX_CONFIG:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG // (1024 * 1024)} MiB")
    try:
        return paramiko.SSHConfig.from_text(text)
    except (paramiko.SSHException, ValueError) as exc:  # ConfigParseError; shlex's quotes
        raise ConfigError(f"{path}: {exc}") from None


def _text(path: str, found: dict[str, Any], key: str) -> str | None:
    """A value that will go on the wire: it must be text (a comment need not)."""
    value = found.get(key)
    if not value:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ConfigError(f"{path}: the {key} for this host is not UTF-8") from None
    return str(value)


def _config_port(path: str, found: dict[str, Any]) -> int | None:
    value = found.get("port")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 5
            and 1 <= int(value) <= 65535):
        raise ConfigError(f"{path}: bad Port {value[:20]!r}")
    return int(value)
