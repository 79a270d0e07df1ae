"""Opening a native connection: TCP, TLS 1.3 with the host key pinned,
Hello/Welcome, and key authentication bound to the server's identity.

The host-key verdict is client.hostkeys'; the identities are tried as ssh
tries them: ``-i``, then the keys of ``ssh-agent`` (client.agent), then the
first key file found (``$RSHELL_HOME/id_ed25519``, ``~/.ssh/id_*``).  The
protocol takes one ``Auth`` per connection (docs/PROTOCOL.md 4.4), so a
refused key costs a new connection, at most ``MAX_AUTH_TRIES`` in all.
Cryptography is imported only here, and only when TLS or a key is used.
What happens is said on the debug log (``rshell -v``: options.debug).

Must not import click, paramiko, or the server side.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rshell.client.hostkeys import Decision, HostKeyPolicy
from rshell.client.native import NativeBackend
from rshell.client.options import ConnectOptions, debug, debugging, host_and_port
from rshell.errors import (
    AuthenticationFailed,
    ConnectionClosed,
    ConnectionFailed,
    HostKeyError,
    KeyFileError,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureRefused,
)
from rshell.paths import DEFAULT_PORT, rshell_home
from rshell.protocol.messages import Auth, Challenge, Hello, Message, Welcome
from rshell.protocol.signing import signed_data
from rshell.transport import Stream, edge, tune

if TYPE_CHECKING:
    from rshell.client.agent import Agent, AgentKey
    from rshell.trust.keys import Identity

    Signer = Identity | AgentKey

DEFAULT_IDENTITIES = ("id_ed25519", "~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
#: Keys offered to one server, one connection each (ssh's MaxAuthTries spirit).
MAX_AUTH_TRIES = 5


class _Refused(Exception):
    """The server refused the key offered on this connection."""


def open_native(target: str, options: ConnectOptions, policy: HostKeyPolicy) -> NativeBackend:
    """Connect, pin and authenticate to an rshell server at ``target``."""
    host, port = host_and_port(target, options.port, DEFAULT_PORT)
    started = time.monotonic()
    # Load (and ask the passphrase of) the identity before the clock runs:
    # a slow typist must not lose the handshake to --auth-timeout.
    identities = Identities(options)
    try:
        identity = identities.next() if options.auth else None
        refused: list[Signer] = []
        while True:
            backend = NativeBackend(host, port)
            try:
                handshake(backend, options, policy, identity, identities)
            except _Refused:
                backend.close()
                assert identity is not None
                refused.append(identity)
                identity = identities.next() if len(refused) < MAX_AUTH_TRIES else None
                if identity is None:
                    raise AuthenticationFailed(_refusal(backend.address, refused, identities)) \
                        from None
                continue
            except BaseException:
                backend.close()
                raise
            debug(1, "session to %s open in %.1f ms", backend.address, _ms(started))
            return backend
    finally:
        identities.close()


def _refusal(address: str, refused: list[Signer], identities: Identities) -> str:
    keys = ", key ".join(f"{key.fingerprint} ({key.path})" for key in refused)
    more = f" (stopped after {MAX_AUTH_TRIES} keys)" if identities.next() is not None else ""
    return f"{address} refused key {keys}{more}"


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000


def handshake(backend: NativeBackend, options: ConnectOptions, policy: HostKeyPolicy,
              identity: Signer | None, identities: Identities) -> None:
    """Open ``backend``'s connection and authenticate with ``identity`` (the
    next of ``identities`` if none was found yet and the server asks); the
    server's Welcome fills in its ``home``, ``server`` and ``user``.  Raises
    _Refused if the server refuses the key."""
    while True:
        deadline = time.monotonic() + options.connect_timeout
        sock = _connect(backend, options.connect_timeout)
        try:
            if options.tls:
                sock, blob = _tls(backend, sock, deadline, options, policy)
                if blob is None:
                    # Answering took the user's time, not the handshake's: the
                    # server's clock ran on, so start afresh with the key pinned.
                    sock.close()
                    continue
            else:
                debug(1, "no TLS: nothing is encrypted and the server is not authenticated")
                blob = b""
            backend.attach(Stream(sock, backend.address))
        except BaseException:
            sock.close()
            raise
        break
    welcome = _hello(backend, deadline, options, identity, identities, blob)
    backend.home = welcome.cwd
    backend.server, backend.user = welcome.server, welcome.user
    backend.features = frozenset(welcome.features)
    debug(2, "welcome from %s: user %s, home %s", welcome.server, welcome.user, welcome.cwd)


def _connect(backend: NativeBackend, timeout: float) -> socket.socket:
    debug(1, "connecting to %s port %d", backend.host, backend.port)
    started = time.monotonic()
    with edge(f"connecting to {backend.address}"):
        try:
            # An ASCII name as bytes: getaddrinfo then skips Python's idna
            # codec, whose import (with stringprep) costs a cold start ~2 ms.
            name = backend.host
            host: str | bytes = name.encode() if name.isascii() else name
            sock = socket.create_connection(
                (host, backend.port), timeout=timeout)  # type: ignore[arg-type]  # bytes work
        except socket.gaierror as exc:
            raise ConnectionFailed(f"cannot resolve {name}: {exc.strerror}") from None
    tune(sock)
    if debugging():
        peer = sock.getpeername()
        debug(1, "connected to %s port %d (TCP, %.1f ms)", peer[0], peer[1], _ms(started))
    return sock


def _tls(backend: NativeBackend, sock: socket.socket, deadline: float,
         options: ConnectOptions, policy: HostKeyPolicy) -> tuple[socket.socket, bytes | None]:
    """TLS 1.3 handshake, then the host key the server proved it holds, judged
    by the policy: (the TLS socket, the key's blob; None if the user was asked)."""
    from rshell.trust import keys, known_hosts, tls

    address = backend.address
    started = time.monotonic()
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        with edge(f"TLS handshake with {address}"):
            wrapped = tls.client_context().wrap_socket(sock)
    except ConnectionFailed as exc:
        if "WRONG_VERSION_NUMBER" in str(exc) or "record layer" in str(exc):
            raise ConnectionFailed(
                f"{address} does not speak TLS (a --no-tls server? then use "
                "--no-tls too, knowing nothing is encrypted)"
            ) from None
        raise
    if debugging():
        cipher = wrapped.cipher()
        debug(1, "%s, cipher %s (%.1f ms)", wrapped.version(), cipher[0] if cipher else "?",
              _ms(started))
    try:
        try:
            blob = tls.peer_key_blob(wrapped)
        except ValueError as exc:
            raise HostKeyError(f"{address}: {exc}") from None
        fp = backend.host_fingerprint = keys.blob_fingerprint(blob)
        debug(1, "server host key: %s", fp)
        path = Path(options.known_hosts or rshell_home() / "known_hosts")
        pin = known_hosts.lookup(path, address)
        decision = policy.decide(address, fp, pin.fingerprint if pin else None, str(path),
                                 fix=f"remove line {pin.line} of {path}" if pin else "")
        if decision is Decision.KNOWN:
            debug(1, "host %s is known and matches (%s:%s)", address, path,
                  pin.line if pin else "?")
        else:
            known_hosts.add(path, address, fp)
            debug(1, "host %s was unknown: %s, pinned in %s", address,
                  "accepted by you" if decision is Decision.PIN_ASKED else "accepted (new)",
                  path)
    except BaseException:
        wrapped.close()
        raise
    return wrapped, None if decision is Decision.PIN_ASKED else blob


def _hello(backend: NativeBackend, deadline: float, options: ConnectOptions,
           identity: Signer | None, identities: Identities, host_blob: bytes) -> Welcome:
    started = time.monotonic()
    backend.write(Hello(client="rshell/0.1.0"))
    try:
        welcome = backend.until_message(deadline, "handshake")
    except ConnectionClosed:
        if options.tls:
            raise
        raise ConnectionClosed(
            f"{backend.address} closed the connection during the handshake (does it "
            "expect TLS? then drop --no-tls)"
        ) from None
    debug(2, "hello answered with %s (%.1f ms)", type(welcome).__name__, _ms(started))
    if isinstance(welcome, Challenge):
        if not options.auth:
            raise AuthenticationFailed(
                f"{backend.address} requires a key, and --no-auth offers none"
            )
        identity = identity or identities.next()
        if identity is None:
            raise KeyFileError(
                f"no identity found (no -i, no key in ssh-agent, no "
                f"{rshell_home() / 'id_ed25519'} or ~/.ssh/id_*); create one with: rshell keygen"
            )
        welcome = _authenticate(backend, welcome, deadline, identity, host_blob)
    elif options.auth:
        debug(1, "the server asked for no key")
        warn = options.on_warning or _stderr_warning
        warn(f"{backend.address} did not ask who you are (it runs with --no-auth): "
             "anyone who can reach it runs commands there")
    if not isinstance(welcome, Welcome):
        raise LocalProtocolError(
            f"server sent {type(welcome).__name__} during the handshake", "unexpected"
        )
    return welcome


def _authenticate(backend: NativeBackend, challenge: Challenge, deadline: float,
                  identity: Signer, host_blob: bytes) -> Message:
    started = time.monotonic()
    debug(1, "offering key %s (%s)", identity.fingerprint, identity.path)
    data = signed_data(challenge.nonce, host_blob, identity.public_blob)
    try:
        signature = identity.sign(data)
    except SignatureRefused as exc:  # the next key may do, as ssh goes on
        debug(1, "%s; trying the next key", exc)
        raise _Refused from None
    backend.write(Auth(identity.public_line, signature))
    try:
        answer = backend.until_message(deadline, "authentication")
    except RemoteProtocolError as exc:
        if exc.code == "auth-failed":
            debug(1, "key %s refused (%.1f ms)", identity.fingerprint, _ms(started))
            raise _Refused from None
        raise
    debug(1, "key %s accepted (%.1f ms)", identity.fingerprint, _ms(started))
    return answer


class Identities:
    """The keys to offer, in ssh's order (``-i``, the agent's, the first key
    file found), each loaded only when its turn comes; a key met twice (a
    file whose key the agent holds) is offered once, and its file is not
    even opened (no passphrase asked for a key the agent has)."""

    def __init__(self, options: ConnectOptions) -> None:
        self.options = options
        self.seen: set[bytes] = set()
        self.agent: Agent | None = None
        self._each = self._all()

    def next(self) -> Signer | None:
        """The next key to offer, None once there is none."""
        return next(self._each, None)

    def _all(self) -> Iterator[Signer]:
        from rshell.trust import keys

        options = self.options
        ask = options.passphrase_callback()
        if options.identity is not None:
            yield from self._fresh(keys.load_identity(options.identity, ask))
        held = _agent_keys()
        self.agent = held[0].agent if held else None
        for key in held:
            yield from self._fresh(key)
        if options.identity is not None:
            return
        for name in DEFAULT_IDENTITIES:
            path = rshell_home() / name if "/" not in name else Path(name).expanduser()
            if path.exists():
                if self._public_half_seen(path):
                    debug(2, "skipping %s: its key was offered already", path)
                else:
                    yield from self._fresh(keys.load_identity(path, ask))
                return

    def close(self) -> None:
        """Hang up on the agent, if it was asked."""
        if self.agent is not None:
            self.agent.close()

    def _fresh(self, key: Signer) -> Iterator[Signer]:
        if key.public_blob in self.seen:
            debug(2, "skipping %s (%s): offered already", key.fingerprint, key.path)
            return
        self.seen.add(key.public_blob)
        debug(2, "identity %s (%s)", key.fingerprint, key.path)
        yield key

    def _public_half_seen(self, path: Path) -> bool:
        import base64
        import binascii

        try:
            fields = Path(f"{path}.pub").read_text().split()
            return len(fields) > 1 and base64.b64decode(fields[1]) in self.seen
        except (OSError, UnicodeDecodeError, binascii.Error):
            return False


def _agent_keys() -> list[AgentKey]:
    """The agent's keys; without ``$SSH_AUTH_SOCK`` the agent's module is not
    even imported (a cold one-shot without an agent pays nothing for it)."""
    import os

    if not os.environ.get("SSH_AUTH_SOCK"):
        debug(2, "no ssh-agent (SSH_AUTH_SOCK is not set)")
        return []
    from rshell.client.agent import agent_keys

    return agent_keys()


def _stderr_warning(message: str) -> None:
    import sys

    from rshell.client.screen import visible

    sys.stderr.write(f"rshell: WARNING: {visible(message)}\n")
