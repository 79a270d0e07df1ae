"""The secure channel, attacked and used: TLS 1.3 only, host key pinning,
challenge-response client authentication bound to nonce and host key, the
opt-outs and their guard rails, and handshakes that stall.

Everything runs against a real server on 127.0.0.1: through the real CLI,
against an ``rshell-server`` subprocess, where a user would be; by hand over
TLS, against the same daemon in this process, where an attacker would be
(``Wire`` speaks the protocol with rshell's own sans-IO codec).  Every key is
generated at test time; every wait is bounded.
"""

from __future__ import annotations

import re
import selectors
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from rshell.protocol.frames import BufferDecoder
from rshell.protocol.messages import Auth, Challenge, Error, Message, Run, Welcome, decode, encode
from rshell.protocol.signing import signed_data
from rshell.trust import keys, tls
from tests.conftest import RSHELL_SERVER, InProcessServer, ServerProcess, base_env, cli
from tests.support.cli import one_line_error
from tests.support.servers import Server
from tests.support.wire import IO_TIMEOUT, Wire, seconds_until_closed

StartServer = Callable[..., ServerProcess]

#: How long the server may take to hang up on a stalled handshake with --auth-timeout 1.
STALL_LIMIT = 3.0


# ---- helpers -----------------------------------------------------------------------


def sign_auth(identity: keys.Identity, challenge: Challenge, host_blob: bytes) -> Auth:
    """An Auth exactly as an honest client that pinned ``host_blob`` would send it."""
    data = signed_data(challenge.nonce, host_blob, identity.public_blob)
    return Auth(identity.public_line, identity.sign(data))


def refused(proc: subprocess.CompletedProcess[bytes]) -> str:
    """Exit 255 with exactly one line on stderr and no traceback; that line."""
    assert proc.returncode == 255, (proc.returncode, proc.stderr)
    return one_line_error(proc.stderr)


def other_fingerprint() -> str:
    """The fingerprint of a fresh key: a host key that is not the server's."""
    return keys.fingerprint(keys.generate("ed25519").public_key())


@pytest.fixture
def identity(home: Path, in_process_server: InProcessServer) -> keys.Identity:
    """The user's authorized key, as the (in-process) server's first start created it."""
    return keys.load_identity(home / "id_ed25519")


# ---- TLS ----------------------------------------------------------------------------


def _raw_tls_client(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def test_tls13_is_negotiated(in_process_server: InProcessServer) -> None:
    """A client offering everything it can gets TLS 1.3 and the pinned host key."""
    raw = socket.create_connection(("127.0.0.1", in_process_server.port), timeout=IO_TIMEOUT)
    with _raw_tls_client().wrap_socket(raw) as sock:
        assert sock.version() == "TLSv1.3"
        assert keys.fingerprint(tls.peer_key(sock)) == in_process_server.fingerprint


def test_tls12_is_refused_and_server_survives(
    home: Path, in_process_server: InProcessServer
) -> None:
    """A downgrade to TLS 1.2 fails the handshake; the server keeps serving others."""
    raw = socket.create_connection(("127.0.0.1", in_process_server.port), timeout=IO_TIMEOUT)
    with pytest.raises(ssl.SSLError):
        _raw_tls_client(ssl.TLSVersion.TLSv1_2).wrap_socket(raw)
    raw.close()
    in_process_server.wait_for_log(r"127\.0\.0\.1:\d+: TLS handshake failed")
    proc = cli(home, in_process_server.address, "-c", "echo still-serving")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"still-serving\n"


# ---- client authentication ------------------------------------------------------------


def test_unknown_client_key_is_refused(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    """A key not in authorized_keys gets exit 255, one line, no command, and a log line
    naming the peer and the key."""
    other = tmp_path / "other_key"
    made = cli(home, "keygen", "-f", str(other))
    assert made.returncode == 0, made.stderr
    fp = keys.fingerprint(keys.parse_public(Path(f"{other}.pub").read_text())[0])
    assert fp in made.stdout.decode()
    side = tmp_path / "side-effect"
    proc = cli(home, server.address, "-i", str(other), "-c", f"touch {side}")
    line = refused(proc)
    assert "refused key" in line and fp in line, line
    assert not side.exists()
    server.wait_for_log(
        rf"127\.0\.0\.1:\d+: authentication failed for key {re.escape(fp)}: "
        r"key not in authorized_keys"
    )
    # The authorized key still works: the refusal was about that key only.
    ok = cli(home, server.address, "-c", f"echo ran > {side}")
    assert ok.returncode == 0, ok.stderr
    assert side.read_text() == "ran\n"


def test_hand_made_auth_is_accepted(
    in_process_server: InProcessServer, identity: keys.Identity
) -> None:
    """The baseline for the replay tests: Wire's Auth is what a real client sends."""
    wire = Wire(in_process_server)
    try:
        wire.send(sign_auth(identity, wire.hello(), wire.host_blob))
        assert isinstance(wire.recv(), Welcome)
    finally:
        wire.close()
    in_process_server.wait_for_log(rf"{re.escape(wire.local)}: authenticated with key "
                                   rf"{re.escape(identity.fingerprint)}")


def _captured_auth(server: Server, identity: keys.Identity) -> Auth:
    """A valid Auth from a session that the server accepted."""
    wire = Wire(server)
    try:
        auth = sign_auth(identity, wire.hello(), wire.host_blob)
        wire.send(auth)
        assert isinstance(wire.recv(), Welcome)
    finally:
        wire.close()
    return auth


def test_replayed_auth_is_refused_by_another_session(
    in_process_server: InProcessServer, identity: keys.Identity
) -> None:
    """A signature binds the session's nonce: replaying it in a new session fails."""
    auth = _captured_auth(in_process_server, identity)
    wire = Wire(in_process_server)
    try:
        challenge = wire.hello()
        wire.send(auth)
        wire.refusal("auth-failed")
    finally:
        wire.close()
    assert challenge.nonce, "the server sent an empty nonce"
    in_process_server.wait_for_log(
        rf"{re.escape(wire.local)}: authentication failed for key "
        rf"{re.escape(identity.fingerprint)}: bad signature"
    )


def test_replayed_auth_is_refused_by_a_second_server(
    home: Path, in_process_server: InProcessServer,
    start_in_process: Callable[..., InProcessServer], identity: keys.Identity, tmp_path: Path,
) -> None:
    """Another server that trusts the same key (different host key) refuses the capture."""
    second = start_in_process(
        "--state-dir", str(tmp_path / "second-state"),
        "--authorized-keys", str(home / "server" / "authorized_keys"),
    )
    assert second.fingerprint != in_process_server.fingerprint
    auth = _captured_auth(in_process_server, identity)
    wire = Wire(second)
    try:
        wire.hello()
        wire.send(auth)
        wire.refusal("auth-failed")
    finally:
        wire.close()
    second.wait_for_log(
        rf"{re.escape(wire.local)}: authentication failed for key "
        rf"{re.escape(identity.fingerprint)}: bad signature"
    )
    # The key itself is authorized there: an honest client gets in.
    assert isinstance(_captured_auth(second, identity), Auth)


def test_failed_authentication_is_delayed(
    in_process_server: InProcessServer, identity: keys.Identity
) -> None:
    """A wrong signature is answered no sooner than half a second later."""
    wire = Wire(in_process_server)
    try:
        challenge = wire.hello()
        forged = sign_auth(identity, Challenge(b"\0" * len(challenge.nonce)), wire.host_blob)
        started = time.monotonic()
        wire.send(forged)
        msg = wire.recv()
        elapsed = time.monotonic() - started
        assert isinstance(msg, Error) and msg.code == "auth-failed", msg
        assert wire.recv() is None
    finally:
        wire.close()
    assert elapsed >= 0.5, f"refusal came after only {elapsed:.3f}s"


@pytest.mark.parametrize("after_hello", [False, True], ids=["before-hello", "after-challenge"])
def test_nothing_runs_before_authentication(
    in_process_server: InProcessServer, tmp_path: Path, after_hello: bool
) -> None:
    """A Run instead of Auth is a protocol error, and the command never starts."""
    side = tmp_path / "side-effect"
    wire = Wire(in_process_server)
    try:
        if after_hello:
            wire.hello()
        wire.send(Run(f"touch {side}", cwd="/"))
        wire.refusal("unexpected")
    finally:
        wire.close()
    in_process_server.wait_for_log(rf"{re.escape(wire.local)}: disconnected after 0 command")
    assert not side.exists()


def test_command_pipelined_behind_a_failed_auth_never_runs(
    in_process_server: InProcessServer, tmp_path: Path
) -> None:
    """A Run sent in the same write as an unauthorized Auth is never processed."""
    side = tmp_path / "side-effect"
    stranger = keys.load_identity(_stranger_key(tmp_path))
    wire = Wire(in_process_server)
    try:
        auth = sign_auth(stranger, wire.hello(), wire.host_blob)
        wire.sock.sendall(encode(auth) + encode(Run(f"touch {side}")))
        wire.refusal("auth-failed")
    finally:
        wire.close()
    in_process_server.wait_for_log(
        rf"{re.escape(wire.local)}: authentication failed for key "
        rf"{re.escape(stranger.fingerprint)}: key not in authorized_keys"
    )
    in_process_server.wait_for_log(rf"{re.escape(wire.local)}: disconnected after 0 command")
    assert not side.exists()


def _stranger_key(tmp_path: Path) -> Path:
    """A fresh key pair that no authorized_keys holds."""
    path = tmp_path / "stranger_key"
    keys.write_key_pair(path, keys.generate("ed25519"), "stranger")
    return path


# ---- a relaying man in the middle -------------------------------------------------------


class RelayProxy:
    """Terminates the victim's TLS with its own Ed25519 key and relays every byte
    over its own TLS session to the real server, one connection at a time."""

    def __init__(self, upstream_port: int, state_dir: Path) -> None:
        state_dir.mkdir(mode=0o700)
        self.key = keys.generate("ed25519")
        assert isinstance(self.key, keys.ed25519.Ed25519PrivateKey)
        self.fingerprint = keys.fingerprint(self.key.public_key())
        self._ctx = tls.server_context(self.key, state_dir)
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.to_victim = bytearray()  # what the real server said, as relayed
        self.relayed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            try:
                self._relay(conn)
            except (OSError, ssl.SSLError):
                pass

    def _relay(self, conn: socket.socket) -> None:
        conn.settimeout(IO_TIMEOUT)
        victim = self._ctx.wrap_socket(conn, server_side=True)
        up = socket.create_connection(("127.0.0.1", self._upstream), timeout=IO_TIMEOUT)
        real = tls.client_context().wrap_socket(up)
        self.relayed += 1
        peers = {victim: real, real: victim}
        deadline = time.monotonic() + 20
        with victim, real, selectors.DefaultSelector() as sel:
            for s in peers:
                # Non-blocking reads: a readable socket may carry only a TLS 1.3
                # session ticket, and a blocking recv would then stall the relay.
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
            while not self._stop.is_set() and time.monotonic() < deadline:
                ready = [s for s in peers if s.pending()]
                ready += [k.fileobj for k, _ in sel.select(0.1)]  # type: ignore[misc]
                for src in ready:
                    try:
                        data = src.recv(65536)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        continue
                    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
                        data = b""
                    if not data:
                        return
                    if src is real:
                        self.to_victim += data
                    dst = peers[src]  # type: ignore[index]
                    dst.settimeout(IO_TIMEOUT)
                    dst.sendall(data)
                    dst.setblocking(False)

    def messages_to_victim(self) -> list[Message]:
        dec = BufferDecoder()
        dec.feed(bytes(self.to_victim))
        out = []
        while (frame := dec.next_frame()) is not None:
            out.append(decode(frame[0], bytes(frame[1])))
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(IO_TIMEOUT)
        self._listener.close()


@pytest.fixture
def proxy(server: ServerProcess, tmp_path: Path) -> Iterator[RelayProxy]:
    p = RelayProxy(server.port, tmp_path / "proxy-state")
    yield p
    p.stop()


def test_relaying_mitm_cannot_authenticate(
    home: Path, server: ServerProcess, proxy: RelayProxy, identity: keys.Identity,
    tmp_path: Path,
) -> None:
    """The victim pinned the proxy's key, so its signature binds that key; relayed to
    the real server, it is refused, and the victim's command never runs."""
    known = tmp_path / "victim_known_hosts"
    known.write_text(f"{proxy.address} {proxy.fingerprint}\n")
    side = tmp_path / "side-effect"
    proc = cli(home, proxy.address, "--known-hosts", str(known), "-c", f"touch {side}")
    line = refused(proc)
    assert "refused key" in line and identity.fingerprint in line, line
    assert proxy.relayed == 1
    kinds = [type(m).__name__ for m in proxy.messages_to_victim()]
    assert kinds == ["Challenge", "Error"], kinds
    refusal = proxy.messages_to_victim()[-1]
    assert isinstance(refusal, Error) and refusal.code == "auth-failed"
    server.wait_for_log(
        rf"authentication failed for key {re.escape(identity.fingerprint)}: bad signature"
    )
    assert not side.exists()


def test_relaying_mitm_with_accept_new_cannot_authenticate(
    home: Path, server: ServerProcess, proxy: RelayProxy, tmp_path: Path
) -> None:
    """First contact through the proxy (accept-new pins the proxy's key) fails too."""
    known = tmp_path / "victim_known_hosts"
    side = tmp_path / "side-effect"
    proc = cli(home, proxy.address, "--known-hosts", str(known), "-c", f"touch {side}")
    err = proc.stderr.decode()
    assert proc.returncode == 255, err
    assert "Traceback" not in err
    assert "pinned new host key" in err and proxy.fingerprint in err
    assert "refused key" in err.splitlines()[-1]
    assert known.read_text() == f"{proxy.address} {proxy.fingerprint}\n"
    assert not side.exists()


def test_mitm_is_caught_as_changed_host_key(
    home: Path, server: ServerProcess, proxy: RelayProxy, tmp_path: Path
) -> None:
    """Had the victim pinned the real key for that address, the proxy's key is a change."""
    known = tmp_path / "victim_known_hosts"
    known.write_text(f"{proxy.address} {server.fingerprint}\n")
    before = known.read_bytes()
    side = tmp_path / "side-effect"
    proc = cli(home, proxy.address, "--known-hosts", str(known), "-c", f"touch {side}")
    line = refused(proc)
    assert "CHANGED" in line and proxy.fingerprint in line, line
    assert known.read_bytes() == before
    assert not side.exists()


# ---- host keys ---------------------------------------------------------------------------


def test_unknown_host_is_pinned_with_a_notice(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """Non-interactive first contact: accept-new, announced on stderr, recorded."""
    known = tmp_path / "known_hosts"
    proc = cli(home, server.address, "--known-hosts", str(known), "-c", "echo hi")
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert proc.stdout == b"hi\n"
    assert "pinned new host key" in err and server.fingerprint in err, err
    assert known.read_text() == f"{server.address} {server.fingerprint}\n"
    # Second contact: silent.
    again = cli(home, server.address, "--known-hosts", str(known), "-c", "true")
    assert again.returncode == 0 and again.stderr == b"", again.stderr
    assert known.read_text() == f"{server.address} {server.fingerprint}\n"


def test_strict_host_keys_refuses_unknown_host(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """--strict-host-keys: an unknown host is refused before any command, nothing pinned."""
    known = tmp_path / "known_hosts"
    known.write_text(f"127.0.0.1:1 {other_fingerprint()}\n")
    before = known.read_bytes()
    side = tmp_path / "side-effect"
    proc = cli(home, server.address, "--known-hosts", str(known), "--strict-host-keys",
               "-c", f"touch {side}")
    line = refused(proc)
    assert server.address in line and str(known) in line, line
    assert known.read_bytes() == before
    assert not side.exists()


def test_changed_host_key_is_refused(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    """A changed key is refused loudly, naming the file and line; nothing else changes."""
    known = home / "known_hosts"
    known.write_text(
        "# pins\n"
        f"127.0.0.1:1 {other_fingerprint()}\n"
        f"{server.address} {other_fingerprint()}\n"
    )
    before = known.read_bytes()
    side = tmp_path / "side-effect"
    for extra in ([], ["--accept-new"]):
        proc = cli(home, server.address, *extra, "-c", f"touch {side}")
        line = refused(proc)
        assert "CHANGED" in line and server.fingerprint in line, line
        assert str(known) in line and "line 3" in line, line
        assert known.read_bytes() == before
        assert not side.exists()


@pytest.mark.parametrize("answer", ["no", "yes"])
def test_interactive_unknown_host_prompt(
    server: ServerProcess, tmp_path: Path, terminals: Callable[..., pexpect.spawn], answer: str
) -> None:
    """On a terminal, an unknown host is offered with its fingerprint; the answer rules."""
    known = tmp_path / "known_hosts"
    side = tmp_path / "side-effect"
    child = terminals(server.address, "--known-hosts", str(known),
                      "-c", f"touch {side} && echo ran-remotely", timeout=20)
    child.expect_exact(server.fingerprint)
    child.expect(r"\(yes/no/\[fingerprint\]\)\? ")
    child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    if answer == "no":
        assert child.exitstatus == 255, child.before
        assert not known.exists()
        assert not side.exists()
    else:
        assert child.exitstatus == 0, child.before
        assert "ran-remotely" in (child.before or "")
        assert known.read_text() == f"{server.address} {server.fingerprint}\n"
        assert side.exists()


def test_fingerprint_of_host_and_key_file(home: Path, server: ServerProcess) -> None:
    """``rshell fingerprint`` agrees with the server's log, for the host and the .pub."""
    by_host = cli(home, "fingerprint", server.address)
    assert by_host.returncode == 0, by_host.stderr
    assert server.fingerprint in by_host.stdout.decode().split()
    by_file = cli(home, "fingerprint", str(home / "server" / "host_key.pub"))
    assert by_file.returncode == 0, by_file.stderr
    assert by_file.stdout.decode().split()[:2] == ["256", server.fingerprint]


def test_known_hosts_directory_is_one_line(home: Path, server: ServerProcess,
                                           tmp_path: Path) -> None:
    """A known_hosts path that is a directory: exit 255 and one line naming it."""
    proc = cli(home, server.address, "--known-hosts", str(tmp_path), "-c", "true")
    assert proc.returncode == 255, proc.stderr
    assert str(tmp_path) in one_line_error(proc.stderr)


# ---- opt-outs -------------------------------------------------------------------------------


def test_no_auth_on_non_loopback_is_refused(home: Path) -> None:
    """--no-auth on 0.0.0.0 is a usage error naming the override; it never listens."""
    proc = subprocess.run(
        [RSHELL_SERVER, "--no-auth", "--bind", "0.0.0.0:0"], env=base_env(home),
        stdin=subprocess.DEVNULL, capture_output=True, timeout=20,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "--allow-unauthenticated-remote" in err
    assert "Traceback" not in err
    assert "listening" not in err


def test_no_auth_on_non_loopback_with_override_starts(start_server: StartServer) -> None:
    """The explicit override is honoured, loudly (only started and stopped: never used)."""
    srv = start_server("--no-auth", "--allow-unauthenticated-remote", bind="0.0.0.0:0")
    assert srv.address.startswith("0.0.0.0:")
    srv.wait_for_log(r"WARNING .*AUTHENTICATION DISABLED")
    assert srv.stop() == 0


@pytest.mark.parametrize(
    ("flag", "warning"),
    [("--no-tls", r"WARNING .*TLS DISABLED"), ("--no-auth", r"WARNING .*AUTHENTICATION DISABLED")],
)
def test_opt_outs_warn_at_start(
    home: Path, start_server: StartServer, flag: str, warning: str
) -> None:
    """Each opt-out still works, and says so loudly in the log at every start."""
    srv = start_server(flag)
    srv.wait_for_log(warning)
    args = ["--no-tls"] if flag == "--no-tls" else []
    proc = cli(home, *args, srv.address, "-c", "echo served")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"served\n"


def test_plain_client_against_tls_server_fails_cleanly(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """--no-tls against a TLS server: exit 255 and one error line after the warning."""
    side = tmp_path / "side-effect"
    proc = cli(home, "--no-tls", "--connect-timeout", "5", server.address,
               "-c", f"touch {side}", timeout=20)
    err = proc.stderr.decode()
    assert proc.returncode == 255, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "WARNING: --no-tls" not in line]
    assert len(lines) == 1, err
    assert not side.exists()


def test_no_auth_client_with_no_auth_server_works_and_warns(
    home: Path, start_server: StartServer
) -> None:
    """A client may knowingly talk to a --no-auth server, loudly."""
    srv = start_server("--no-auth")
    proc = cli(home, srv.address, "--no-auth", "-c", "echo ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ok\n"
    assert re.search(rb"^rshell: WARNING: --no-auth", proc.stderr, re.M), proc.stderr


def test_no_auth_client_against_key_server_is_refused(home: Path, server: ServerProcess) -> None:
    """Offering no key to a server that wants one fails fast and says why."""
    proc = cli(home, server.address, "--no-auth", "-c", "echo ok")
    assert proc.returncode == 255, proc.stderr
    assert proc.stdout == b""
    assert "requires a key" in one_line_error(proc.stderr, warnings=True)


def test_key_client_against_no_auth_server_warns(home: Path, start_server: StartServer) -> None:
    """A server that never asked who we are is worth a warning: anyone gets in."""
    srv = start_server("--no-auth")
    proc = cli(home, srv.address, "-c", "echo ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ok\n"
    assert re.search(rb"^rshell: WARNING: .*did not ask who you are", proc.stderr, re.M), \
        proc.stderr


def test_no_tls_client_warns(home: Path, start_server: StartServer) -> None:
    """Plain TCP works only when asked for, and never silently."""
    srv = start_server("--no-tls")
    proc = cli(home, srv.address, "--no-tls", "-c", "echo ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ok\n"
    assert re.search(rb"^rshell: WARNING: --no-tls: .*not authenticated.*encrypted",
                     proc.stderr, re.M), proc.stderr


# ---- stalled handshakes --------------------------------------------------------------------


@pytest.fixture
def impatient(start_in_process: Callable[..., InProcessServer]) -> InProcessServer:
    """A server that gives a handshake one second."""
    return start_in_process("--auth-timeout", "1")


def test_stall_before_tls_is_cut_off(impatient: InProcessServer) -> None:
    """A TCP peer that never starts TLS does not hold a thread for long."""
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=IO_TIMEOUT) as sock:
        local = f"127.0.0.1:{sock.getsockname()[1]}"
        closed = seconds_until_closed(sock, STALL_LIMIT)
        assert closed is not None, f"the server did not close the connection in {STALL_LIMIT}s"
    impatient.wait_for_log(rf"{re.escape(local)}: TLS handshake failed")


def test_stall_after_tls_is_cut_off(impatient: InProcessServer) -> None:
    """TLS done, no Hello: the handshake deadline (from accept) still applies."""
    wire = Wire(impatient)
    try:
        started = time.monotonic()
        msg = wire.recv()
        elapsed = time.monotonic() - started
    finally:
        wire.close()
    assert isinstance(msg, Error) and msg.code == "auth-timeout", msg
    assert elapsed < STALL_LIMIT


def test_stall_after_challenge_is_cut_off(impatient: InProcessServer) -> None:
    """A Challenge never answered: cut off with an auth-timeout Error."""
    wire = Wire(impatient)
    try:
        wire.hello()
        started = time.monotonic()
        wire.refusal("auth-timeout")
        elapsed = time.monotonic() - started
    finally:
        wire.close()
    assert elapsed < STALL_LIMIT
    impatient.wait_for_log(rf"{re.escape(wire.local)}: handshake not completed")


def test_stalled_handshake_does_not_block_others(home: Path, server: ServerProcess) -> None:
    """The TLS handshake runs in the connection's thread: while one peer stalls (for
    the default 10 s), an honest client is served well within its own 5 s limit."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT):
        proc = cli(home, server.address, "--connect-timeout", "5", "-c", "echo served")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"served\n"

