"""The client API: ``connect()`` and ``Connection.run() -> Result``.

The CLI, the prompt and batch mode are thin layers over this module.  One
connection runs any number of commands, one at a time.  A single loop per
command multiplexes the socket, the local stdin source and a wake-up pipe:
it is the only writer to the socket, so stdin forwarding can never deadlock
against output, and ``send_signal`` (safe from another thread or a signal
handler) only queues the signal and wakes the loop.

Must not import click, paramiko, or the server side.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

from rshell.client.stdin import Pump, StdinSource, pump_for
from rshell.errors import (
    AuthenticationFailed,
    CommandFailed,
    CommandTimeout,
    ConnectionClosed,
    ConnectionFailed,
    HostKeyError,
    KeyFileError,
    LocalProtocolError,
    RemoteProtocolError,
    RshellError,
    UsageError,
)
from rshell.paths import DEFAULT_PORT, format_hostport, parse_hostport, rshell_home
from rshell.protocol.frames import STDIN_CHUNK, BufferDecoder
from rshell.protocol.messages import (
    Auth,
    Challenge,
    Exit,
    Hello,
    Message,
    Run,
    Signal,
    Stderr,
    Stdin,
    StdinEof,
    Stdout,
    Welcome,
)
from rshell.protocol.signing import signed_data
from rshell.protocol.states import ClientProtocol, State
from rshell.result import Result
from rshell.transport import Stream, edge, tune

if TYPE_CHECKING:
    from rshell.trust.keys import Identity

_READ, _WRITE = select.EPOLLIN, select.EPOLLOUT
#: Stop pulling stdin while this much is queued for the server.
_HIGH_WATER = 4 * STDIN_CHUNK
#: How long past its own time limit we wait for the server's verdict.
_BACKSTOP = 5.0

Callback = Callable[[bytes | memoryview], object]
#: Asked about an unknown host key: (address, fingerprint) -> trust it?
AskHost = Callable[[str, str], bool]
Passphrase = str | Callable[[str], str | None] | None
DEFAULT_IDENTITIES = ("id_ed25519", "~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


def connect(
    target: str,
    *,
    port: int | None = None,
    identity: str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    known_hosts: str | os.PathLike[str] | None = None,
    strict_host_keys: bool = False,
    accept_new: bool = False,
    ask: AskHost | None = None,
    connect_timeout: float = 10.0,
    tls: bool = True,
    auth: bool = True,
    on_warning: Callable[[str], None] | None = None,
) -> Connection:
    """Open an authenticated session to ``target`` (``host``, ``host:port``, ``[v6]:port``,
    or ``ssh://[user@]host[:port]`` for any sshd, keys and ~/.ssh/known_hosts as ssh's).

    Uses the CLI's files: the identity (``-i``, else ``$RSHELL_HOME/id_ed25519``,
    else ``~/.ssh/id_*``) and ``$RSHELL_HOME/known_hosts``.  An unknown host
    key is refused with ``strict_host_keys``, offered to ``ask`` if given
    (unless ``accept_new``), and otherwise pinned with a notice on stderr; a
    changed one is always refused.  ``auth=False`` offers no key (for a
    ``--no-auth`` server); a server that asks for none while we offer one is
    reported through ``on_warning`` (default: stderr).
    """
    if target.startswith("ssh://"):
        # Any sshd, through paramiko: the same run() -> Result, duck-typed.
        from rshell.ssh.client import connect_ssh

        return cast("Connection", connect_ssh(
            target, port=port, identity=identity, passphrase=passphrase,
            strict_host_keys=strict_host_keys, accept_new=accept_new, ask=ask,
            connect_timeout=connect_timeout,
        ))
    host, parsed_port = parse_hostport(target, port or DEFAULT_PORT)
    if port is not None and parse_hostport(target, 0, listen=True)[1] not in (0, port):
        raise UsageError(f"-p {port} contradicts the port in {target!r}")
    conn = Connection(host, parsed_port)
    conn._auth = auth
    conn._warn = on_warning or _stderr_warning
    conn._identity_path = identity
    conn._passphrase = passphrase
    conn._known_hosts = Path(known_hosts) if known_hosts else rshell_home() / "known_hosts"
    conn._host_policy = (strict_host_keys, accept_new, ask)
    conn._open(connect_timeout, tls)
    return conn


def _stderr_warning(message: str) -> None:
    sys.stderr.write(f"rshell: WARNING: {message}\n")


def _check_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """Refuse locally what the server would refuse by dropping the connection."""
    if env is None:
        return None
    checked = dict(env)
    for name, value in checked.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise UsageError(f"env must map str to str, not {name!r}: {value!r}")
        if not name or "=" in name or "\0" in name + value:
            raise UsageError(f"invalid environment variable {name!r}")
    return checked


class Connection:
    """An open session to one server; see ``run``.

    Attributes: ``host``, ``port``, ``cwd`` (the session's directory as of the
    last command), ``server`` and ``user`` (as the server announced them).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.address = format_hostport(host, port)
        self.cwd = ""
        self.home = ""
        self.server = ""
        self.user = ""
        self._proto = ClientProtocol(decoder=BufferDecoder(frames=8))
        self._stream: Stream | None = None
        self._sel: select.epoll | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._signals: deque[int] = deque()
        self._broken: RshellError | None = None
        self._identity_path: str | os.PathLike[str] | None = None
        self._passphrase: Passphrase = None
        self._known_hosts = rshell_home() / "known_hosts"
        self._host_policy: tuple[bool, bool, AskHost | None] = (False, False, None)
        #: The server's host key fingerprint, once TLS has proven it (None without TLS).
        self.host_fingerprint: str | None = None
        self._host_blob = b""
        self._loaded_identity: Identity | None = None
        self._auth = True
        self._warn: Callable[[str], None] = _stderr_warning
        self._asked = False  # the user was asked about the host key just now

    # ---- connection lifecycle ----------------------------------------------------

    def _open(self, timeout: float, tls: bool) -> None:
        # Load (and ask the passphrase of) the identity before the clock runs:
        # a slow typist must not lose the handshake to --auth-timeout.
        if self._auth and self._loaded_identity is None:
            self._loaded_identity = self._identity(required=False)
        deadline = time.monotonic() + timeout
        with edge(f"connecting to {self.address}"):
            try:
                # An ASCII name as bytes: getaddrinfo then skips Python's idna
                # codec, whose import (with stringprep) costs a cold start ~2 ms.
                host: str | bytes = self.host.encode() if self.host.isascii() else self.host
                sock = socket.create_connection(
                    (host, self.port), timeout=timeout)  # type: ignore[arg-type]  # bytes work
            except socket.gaierror as exc:
                raise ConnectionFailed(f"cannot resolve {self.host}: {exc.strerror}") from None
            except BaseException:
                self.close()
                raise
        tune(sock)
        try:
            if tls:
                sock = self._tls(sock, deadline)
                if self._asked:
                    # Answering took the user's time, not the handshake's: the
                    # server's clock ran on, so start afresh with the key pinned.
                    self._asked = False
                    sock.close()
                    return self._open(timeout, tls)
            self._stream = Stream(sock, self.address)
            sel = self._sel = select.epoll()
            sel.register(sock.fileno(), _READ)
            sel.register(self._wake_r, _READ)
            self._write(Hello(client="rshell/0.1.0"))
            try:
                welcome = self._until_message(deadline, "handshake")
            except ConnectionClosed:
                if tls:
                    raise
                raise ConnectionClosed(
                    f"{self.address} closed the connection during the handshake (does it "
                    "expect TLS? then drop --no-tls)"
                ) from None
            if isinstance(welcome, Challenge):
                if not self._auth:
                    raise AuthenticationFailed(
                        f"{self.address} requires a key, and --no-auth offers none"
                    )
                welcome = self._authenticate(welcome, deadline)
            elif self._auth:
                self._warn(
                    f"{self.address} did not ask who you are (it runs with --no-auth): "
                    "anyone who can reach it runs commands there"
                )
            if not isinstance(welcome, Welcome):
                raise LocalProtocolError(
                    f"server sent {type(welcome).__name__} during the handshake", "unexpected"
                )
            self.cwd = self.home = welcome.cwd
            self.server, self.user = welcome.server, welcome.user
        except BaseException:
            sock.close()
            self.close()
            raise

    def _tls(self, sock: socket.socket, deadline: float) -> socket.socket:
        """TLS 1.3 handshake, then pin the host key the server proved it holds."""
        from rshell.trust import keys, tls

        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            with edge(f"TLS handshake with {self.address}"):
                wrapped = tls.client_context().wrap_socket(sock)
        except ConnectionFailed as exc:
            if "WRONG_VERSION_NUMBER" in str(exc) or "record layer" in str(exc):
                raise ConnectionFailed(
                    f"{self.address} does not speak TLS (a --no-tls server? then use "
                    "--no-tls too, knowing nothing is encrypted)"
                ) from None
            raise
        try:
            self._host_blob = tls.peer_key_blob(wrapped)
        except ValueError as exc:
            wrapped.close()
            raise HostKeyError(f"{self.address}: {exc}") from None
        self.host_fingerprint = keys.blob_fingerprint(self._host_blob)
        try:
            self._check_host_key(self.host_fingerprint)
        except BaseException:
            wrapped.close()
            raise
        return wrapped

    def _check_host_key(self, fp: str) -> None:
        from rshell.trust import known_hosts as knownhosts

        path = self._known_hosts
        strict, accept_new, ask = self._host_policy
        pin = knownhosts.lookup(path, self.address)
        if pin is not None:
            if pin.fingerprint == fp:
                return
            raise HostKeyError(
                f"WARNING: HOST KEY FOR {self.address} HAS CHANGED (now {fp}, pinned "
                f"{pin.fingerprint}): someone may be intercepting this connection; refusing. "
                f"If the change is expected, remove line {pin.line} of {path}"
            )
        if strict:
            raise HostKeyError(
                f"host key for {self.address} ({fp}) is not in {path} and strict host key "
                "checking is on"
            )
        if ask is not None and not accept_new:
            if not ask(self.address, fp):
                raise HostKeyError(f"host key for {self.address} not accepted")
            self._asked = True
        else:
            sys.stderr.write(f"rshell: pinned new host key for {self.address} ({fp}) in {path}\n")
        knownhosts.add(path, self.address, fp)

    def _authenticate(self, challenge: Challenge, deadline: float) -> Message:
        identity = self._loaded_identity or self._identity(required=True)
        assert identity is not None
        data = signed_data(challenge.nonce, self._host_blob, identity.public_blob)
        self._write(Auth(identity.public_line, identity.sign(data)))
        try:
            return self._until_message(deadline, "authentication")
        except RemoteProtocolError as exc:
            if exc.code == "auth-failed":
                raise AuthenticationFailed(
                    f"{self.address} refused key {identity.fingerprint} ({identity.path})"
                ) from None
            raise

    def _identity(self, required: bool) -> Identity | None:
        """The key to sign with; None if there is none and it is not required
        yet (a --no-auth server never asks)."""
        from rshell.trust import keys

        passphrase = self._passphrase
        ask = (lambda _prompt: passphrase) if isinstance(passphrase, str) else passphrase
        if self._identity_path is not None:
            return keys.load_identity(self._identity_path, ask)
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

    def close(self) -> None:
        """Close the connection; a running command on the server is terminated."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if self._wake_r >= 0:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._stream is None

    # ---- commands ------------------------------------------------------------------

    def send_signal(self, signum: int) -> None:
        """Deliver a signal to the running command; safe from any thread or signal
        handler.  Ignored when no command is running."""
        self._signals.append(signum)
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass

    def run(
        self,
        command: str,
        *,
        stdin: StdinSource = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = False,
        on_stdout: Callback | None = None,
        on_stderr: Callback | None = None,
    ) -> Result:
        """Run one command to completion and return its Result.

        Output streamed to a callback is not kept in the Result (so gigabytes
        can pass through in constant memory); otherwise it is collected.
        Any exit status returns a Result; ``check=True`` raises CommandFailed
        when ``result.ok`` is false.
        """
        out = bytearray() if on_stdout is None else None
        err = bytearray() if on_stderr is None else None
        events = self._exchange(command, stdin, cwd, env, timeout)
        try:
            while True:
                msg = next(events)
                if isinstance(msg, Stdout):
                    if out is None:
                        on_stdout(msg.data)  # type: ignore[misc]
                    else:
                        out += msg.data
                elif err is None:
                    on_stderr(msg.data)  # type: ignore[misc]
                else:
                    err += msg.data
        except StopIteration as stop:
            exit_msg: Exit = stop.value
        result = self._result(command, exit_msg, bytes(out or b""), bytes(err or b""))
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def stream(
        self,
        command: str,
        *,
        stdin: StdinSource = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> RunStream:
        """Iterate over ``("stdout" | "stderr", bytes)`` chunks as they arrive;
        the ``result`` attribute is set once the iterator is exhausted."""
        return RunStream(self, command, self._exchange(command, stdin, cwd, env, timeout))

    def _result(self, command: str, msg: Exit, out: bytes, err: bytes) -> Result:
        self.cwd = msg.cwd or self.cwd
        return Result(
            command=command, exit_code=msg.exit_code, signal=msg.signal, stdout=out,
            stderr=err, error=msg.error, duration=msg.duration, host=self.address,
        )

    # ---- the engine ------------------------------------------------------------------

    def _check_usable(self) -> Stream:
        if self._broken is not None:
            raise ConnectionFailed(f"connection to {self.address} is unusable: {self._broken}")
        if self._stream is None:
            raise ConnectionFailed(f"connection to {self.address} is closed")
        if self._proto.state is not State.READY:
            raise RshellError("another command is still running on this connection")
        return self._stream

    def _exchange(
        self,
        command: str,
        stdin: StdinSource,
        cwd: str | None,
        env: Mapping[str, str] | None,
        timeout: float | None,
    ) -> Generator[Stdout | Stderr, None, Exit]:
        stream = self._check_usable()
        assert self._sel is not None
        pump = pump_for(stdin)
        self._signals.clear()
        self._write(Run(command, cwd, _check_env(env), timeout, pump is not None))
        deadline = time.monotonic() + timeout + _BACKSTOP if timeout else None
        registered_fd = None
        try:
            while True:
                if pump is not None:
                    pump = self._pump_stdin(pump, stream)
                can_send = self._proto.stdin_credit > 0 and stream.queued < _HIGH_WATER
                want_fd = pump.fd if pump is not None and can_send else None
                if want_fd != registered_fd:
                    if registered_fd is not None:
                        self._sel.unregister(registered_fd)
                    if want_fd is not None:
                        self._sel.register(want_fd, _READ)
                    registered_fd = want_fd
                busy = pump is not None and pump.fd is None and can_send
                msg = self._poll(deadline, busy=busy)
                while msg is not None:
                    if isinstance(msg, Exit):
                        decoder = self._proto.decoder
                        decoder.release()  # an idle connection keeps no megabytes
                        return msg
                    if isinstance(msg, (Stdout, Stderr)):
                        yield msg
                    msg = self._proto.next_event()
        except GeneratorExit:
            self._abandon(ConnectionFailed("command abandoned before it finished"))
            raise
        except RshellError as exc:
            self._abandon(exc)
            raise
        finally:
            if registered_fd is not None and self._sel is not None:
                self._sel.unregister(registered_fd)

    def _abandon(self, exc: RshellError) -> None:
        """The connection's state is unknown now: nobody may use it again."""
        self._broken = exc
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _pump_stdin(self, pump: Pump, stream: Stream) -> Pump | None:
        proto = self._proto
        while proto.stdin_credit > 0 and stream.queued < _HIGH_WATER and pump.ready:
            data = pump.read(min(proto.stdin_credit, STDIN_CHUNK))
            if data is None:
                pump.close()
                self._write(StdinEof())
                return None
            if not data:
                break
            self._write(Stdin(data))
        return pump

    def _write(self, msg: Message) -> None:
        assert self._stream is not None
        try:
            frame = self._proto.send(msg)
        except LocalProtocolError as exc:
            if exc.code == "frame-too-large":  # a command, cwd and env too big to send
                raise UsageError(str(exc)) from None
            raise
        self._stream.write(frame)
        self._stream.flush()

    def _until_message(self, deadline: float, what: str) -> Message:
        while True:
            msg = self._poll(deadline, what=what)
            if msg is not None:
                return msg

    def _poll(
        self, deadline: float | None, busy: bool = False, what: str = "command"
    ) -> Message | None:
        """Wait for socket, signals or stdin; return the first complete message."""
        stream = self._stream
        assert stream is not None and self._sel is not None
        msg = self._proto.next_event()
        if msg is not None:
            return msg
        if not stream.pending():
            if busy:
                wait: float | None = 0.0
            elif deadline is None:
                wait = None
            else:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise CommandTimeout(f"{what} on {self.address} timed out")
            sock_fd = stream.fileno()
            if stream.queued:
                self._sel.modify(sock_fd, _READ | _WRITE)
            events = self._sel.poll(-1 if wait is None else wait)
            if stream.queued:
                self._sel.modify(sock_fd, _READ)
            ready = {fd for fd, _ in events}
            if self._wake_r in ready:
                self._on_wake()
            if stream.queued:
                stream.flush()
            if sock_fd not in ready:
                return None
        decoder = self._proto.decoder
        n = stream.recv_into(decoder.writable())
        if n is None:
            raise ConnectionClosed(f"connection to {self.address} closed by the server")
        decoder.commit(n)
        return self._proto.next_event()

    def _on_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        while self._signals:
            signum = self._signals.popleft()
            if self._proto.state is State.RUNNING:
                self._write(Signal(signum))


class RunStream:
    """Iterator over one command's output; ``result`` once it is exhausted."""

    def __init__(
        self, conn: Connection, command: str, events: Generator[Stdout | Stderr, None, Exit]
    ) -> None:
        self._conn = conn
        self._command = command
        self._events = events
        self.result: Result | None = None

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        try:
            while True:
                msg = next(self._events)
                yield ("stdout" if isinstance(msg, Stdout) else "stderr"), bytes(msg.data)
        except StopIteration as stop:
            self.result = self._conn._result(self._command, stop.value, b"", b"")
