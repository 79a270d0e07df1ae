"""Opening a native connection: TCP, TLS 1.3 with the host key pinned,
Hello/Welcome, and key authentication bound to the server's identity.

The host-key verdict is client.hostkeys'; the identity is found as ssh finds
one (``-i``, ``$RSHELL_HOME/id_ed25519``, ``~/.ssh/id_*``).  Cryptography is
imported only here, and only when TLS or a key is used.

Must not import click, paramiko, or the server side.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rshell.client.hostkeys import Decision, HostKeyPolicy
from rshell.client.native import NativeBackend
from rshell.client.options import ConnectOptions, host_and_port
from rshell.errors import (
    AuthenticationFailed,
    ConnectionClosed,
    ConnectionFailed,
    HostKeyError,
    KeyFileError,
    LocalProtocolError,
    RemoteProtocolError,
)
from rshell.paths import DEFAULT_PORT, rshell_home
from rshell.protocol.messages import Auth, Challenge, Hello, Message, Welcome
from rshell.protocol.signing import signed_data
from rshell.transport import Stream, edge, tune

if TYPE_CHECKING:
    from rshell.trust.keys import Identity

DEFAULT_IDENTITIES = ("id_ed25519", "~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


def open_native(target: str, options: ConnectOptions, policy: HostKeyPolicy) -> NativeBackend:
    """Connect, pin and authenticate to an rshell server at ``target``."""
    backend = NativeBackend(*host_and_port(target, options.port, DEFAULT_PORT))
    try:
        handshake(backend, options, policy)
    except BaseException:
        backend.close()
        raise
    return backend


def handshake(backend: NativeBackend, options: ConnectOptions, policy: HostKeyPolicy) -> None:
    """Open ``backend``'s connection and authenticate; the server's Welcome
    fills in its ``home``, ``server`` and ``user``."""
    # Load (and ask the passphrase of) the identity before the clock runs:
    # a slow typist must not lose the handshake to --auth-timeout.
    identity = find_identity(options, required=False) if options.auth else None
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
                blob = b""
            backend.attach(Stream(sock, backend.address))
        except BaseException:
            sock.close()
            raise
        break
    welcome = _hello(backend, deadline, options, identity, blob)
    backend.home = welcome.cwd
    backend.server, backend.user = welcome.server, welcome.user


def _connect(backend: NativeBackend, timeout: float) -> socket.socket:
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
    return sock


def _tls(backend: NativeBackend, sock: socket.socket, deadline: float,
         options: ConnectOptions, policy: HostKeyPolicy) -> tuple[socket.socket, bytes | None]:
    """TLS 1.3 handshake, then the host key the server proved it holds, judged
    by the policy: (the TLS socket, the key's blob; None if the user was asked)."""
    from rshell.trust import keys, known_hosts, tls

    address = backend.address
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
    try:
        try:
            blob = tls.peer_key_blob(wrapped)
        except ValueError as exc:
            raise HostKeyError(f"{address}: {exc}") from None
        fp = backend.host_fingerprint = keys.blob_fingerprint(blob)
        path = Path(options.known_hosts or rshell_home() / "known_hosts")
        pin = known_hosts.lookup(path, address)
        decision = policy.decide(address, fp, pin.fingerprint if pin else None, str(path),
                                 fix=f"remove line {pin.line} of {path}" if pin else "")
        if decision is not Decision.KNOWN:
            known_hosts.add(path, address, fp)
    except BaseException:
        wrapped.close()
        raise
    return wrapped, None if decision is Decision.PIN_ASKED else blob


def _hello(backend: NativeBackend, deadline: float, options: ConnectOptions,
           identity: Identity | None, host_blob: bytes) -> Welcome:
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
    if isinstance(welcome, Challenge):
        if not options.auth:
            raise AuthenticationFailed(
                f"{backend.address} requires a key, and --no-auth offers none"
            )
        identity = identity or find_identity(options, required=True)
        assert identity is not None
        welcome = _authenticate(backend, welcome, deadline, identity, host_blob)
    elif options.auth:
        warn = options.on_warning or _stderr_warning
        warn(f"{backend.address} did not ask who you are (it runs with --no-auth): "
             "anyone who can reach it runs commands there")
    if not isinstance(welcome, Welcome):
        raise LocalProtocolError(
            f"server sent {type(welcome).__name__} during the handshake", "unexpected"
        )
    return welcome


def _authenticate(backend: NativeBackend, challenge: Challenge, deadline: float,
                  identity: Identity, host_blob: bytes) -> Message:
    data = signed_data(challenge.nonce, host_blob, identity.public_blob)
    backend.write(Auth(identity.public_line, identity.sign(data)))
    try:
        return backend.until_message(deadline, "authentication")
    except RemoteProtocolError as exc:
        if exc.code == "auth-failed":
            raise AuthenticationFailed(
                f"{backend.address} refused key {identity.fingerprint} ({identity.path})"
            ) from None
        raise


def find_identity(options: ConnectOptions, required: bool) -> Identity | None:
    """The key to sign with; None if there is none and it is not required
    yet (a --no-auth server never asks)."""
    from rshell.trust import keys

    ask = options.passphrase_callback()
    if options.identity is not None:
        return keys.load_identity(options.identity, ask)
    for name in DEFAULT_IDENTITIES:
        path = rshell_home() / name if "/" not in name else Path(name).expanduser()
        if path.exists():
            return keys.load_identity(path, ask)
    if not required:
        return None
    raise KeyFileError(
        f"no identity found ({rshell_home() / 'id_ed25519'} or ~/.ssh/id_*); "
        "create one with: rshell keygen"
    )


def _stderr_warning(message: str) -> None:
    import sys

    from rshell.client.screen import visible

    sys.stderr.write(f"rshell: WARNING: {visible(message)}\n")
