"""The bounds rshell is measured against, each in a process of its own (as
rshell's server is), started from the entry script's hidden modes: the raw
sender (``--raw-sender``: a byte count from a buffer over raw TCP or TLS, or
a command's output relayed from a pipe, the relay ceiling), the spawn floor
(``--floor-server``: the least a Python server can do per command) and the
keystroke relay (``--key-relay`` and ``--key-relay-client``: the least a
Python client and server can do per keystroke, over TCP or TLS).  Also the
stream's generator commands, and the throwaway certificate of the TLS peers.
"""

from __future__ import annotations

import datetime
import os
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core import ENTRY, LOOPBACK, BenchError, MiB
from .procs import start_helper, stop_process

#: Chunk the raw baseline sends and receives, preallocated once.
RAW_CHUNK = MiB
#: The relay ceiling's pipe (F_SETPIPE_SZ, as rshell's server widens its pipes;
#: 1 MiB is also the default /proc/sys/fs/pipe-max-size) and its read buffer: a
#: read from a pipe never returns more than the pipe holds, so a bigger buffer
#: would never fill.
RELAY_PIPE = MiB
_F_SETPIPE_SZ = 1031  # Linux
#: What the receiver asks the sender for: a byte count and a command (empty:
#: the raw baseline, from a buffer; else the relay ceiling, that command's output).
_REQUEST = struct.Struct("!QI")
#: The spawn floor's reply: the command's exit status (waitstatus_to_exitcode).
_FLOOR_STATUS = struct.Struct("!i")


# ---- the stream's generator -------------------------------------------------------------


def generator_commands(size: int) -> dict[str, str]:
    """Candidate output generators for the server to run, by name."""
    cmds = {"head": f"head -c {size} /dev/zero"}
    if size % MiB == 0:
        cmds["dd"] = f"dd if=/dev/zero bs=1M count={size // MiB} status=none"
    return cmds


def time_generator(command: str, size: int) -> dict[str, float]:
    """The generator alone: into /dev/null, and into a pipe drained the way the
    server drains it (1 MiB pipe, readv into a 1 MiB buffer).  The second rate
    is the ceiling rshell can reach with this generator."""
    start = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", f"{command} > /dev/null"], check=True)
    devnull = time.perf_counter() - start
    buf = bytearray(MiB)
    start = time.perf_counter()
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, RELAY_PIPE)  # as rshell's server does
    except OSError:
        pass
    got = 0
    while n := os.readv(fd, [buf]):
        got += n
    proc.stdout.close()
    proc.wait()
    piped = time.perf_counter() - start
    if got != size:
        raise BenchError(f"generator {command!r} produced {got} bytes, not {size}")
    return {"devnull_MBps": size / devnull / 1e6, "pipe_MBps": size / piped / 1e6}


def pick_generator(size: int, forced: str) -> tuple[str, dict[str, Any]]:
    """The fastest candidate (by the pipe rate, best of two), unless forced."""
    cmds = generator_commands(size)
    if forced != "auto" and forced not in cmds:
        raise BenchError(f"--generator {forced} cannot produce {size} bytes")
    probes: dict[str, Any] = {}
    for name, cmd in cmds.items():
        runs = [time_generator(cmd, size) for _ in range(2)]
        probes[name] = {"command": cmd,
                        "devnull_MBps": max(r["devnull_MBps"] for r in runs),
                        "pipe_MBps": max(r["pipe_MBps"] for r in runs)}
    name = forced if forced != "auto" else max(probes, key=lambda n: probes[n]["pipe_MBps"])
    return name, probes



@dataclass(frozen=True)
class Output:
    """A stream figure's command output: ``size`` bytes from the fastest
    generator (or the one forced), and ``small`` bytes of it to warm up with."""

    size: int
    name: str
    probes: dict[str, Any]
    small: int

    @classmethod
    def pick(cls, size: int, forced: str, warm_max: int) -> Output:
        name, probes = pick_generator(size, forced)
        return cls(size, name, probes, min(size, warm_max))

    @property
    def command(self) -> str:
        command: str = self.probes[self.name]["command"]
        return command

    @property
    def warm_command(self) -> str:
        return generator_commands(self.small)[self.name]

    def as_json(self) -> dict[str, Any]:
        return {"chosen": self.name, "candidates": self.probes}


# ---- the raw sender and the relay ceiling ----------------------------------------------


class RawPeer:
    """The baselines' sender: this script in ``--raw-sender`` mode, in its own
    process (as rshell's server is), serving one transfer per connection: from
    a buffer (the raw transfer), or a command's output relayed from a pipe (the
    relay ceiling)."""

    def __init__(self, tls_files: tuple[Path, Path] | None) -> None:
        argv = [sys.executable, str(ENTRY), "--raw-sender"]
        self.client_ctx: ssl.SSLContext | None = None
        if tls_files is not None:
            cert, key = tls_files
            argv += ["--raw-cert", str(cert), "--raw-key", str(key)]
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.load_verify_locations(cert)
            self.client_ctx = ctx
        self.proc, self.port = start_helper(argv, "raw sender")
        self.buf = bytearray(RAW_CHUNK)
        self.info: dict[str, str] = {}

    def transfer(self, size: int, command: str = "") -> float:
        """Seconds from connect to the last of ``size`` bytes received: sent from
        a buffer, or, given a ``command``, that command's output relayed."""
        request = _REQUEST.pack(size, len(cmd := command.encode())) + cmd
        view = memoryview(self.buf)
        start = time.perf_counter()
        sock: socket.socket = socket.create_connection((LOOPBACK, self.port), timeout=60)
        try:
            if self.client_ctx is not None:
                tls = self.client_ctx.wrap_socket(sock, server_hostname="localhost")
                sock = tls
                cipher = tls.cipher()
                self.info = {"version": str(tls.version()), "cipher": cipher[0] if cipher else "?"}
            sock.sendall(request)
            got = 0
            recv_into = sock.recv_into
            while got < size:
                n = recv_into(view)
                if not n:
                    what = f"relay of {command!r}" if command else "raw sender"
                    raise BenchError(f"{what} closed after {got} of {size} bytes")
                got += n
            elapsed = time.perf_counter() - start
        finally:
            sock.close()
        return elapsed

    def stop(self) -> None:
        stop_process(self.proc, 5.0)


def raw_sender_main(cert: str | None, key: str | None) -> int:
    """Accept, read the request, send that many bytes, close; until killed.

    With no command, from one preallocated buffer with ``sendall`` (the raw
    transfer).  With a command, the relay ceiling: run it as rshell's server
    does (``/bin/sh -c``, stdout a pipe), and relay the pipe to the socket."""
    view = memoryview(bytearray(max(RAW_CHUNK, RELAY_PIPE)))

    def transfer(conn: socket.socket) -> None:
        head = recv_exact(conn, _REQUEST.size)
        if len(head) < _REQUEST.size:
            return
        left, cmd_len = _REQUEST.unpack(head)
        command = recv_exact(conn, cmd_len).decode()
        if command:
            relay_command(command, conn, view[:RELAY_PIPE])
            return
        while left:
            n = min(left, RAW_CHUNK)
            conn.sendall(view[:n])
            left -= n
    return serve(cert, key, transfer)


def serve(cert: str | None, key: str | None, handle: Callable[[socket.socket], None]) -> int:
    """Print the port, then accept and ``handle`` one connection at a time, over
    TLS with a certificate; until SIGTERM.  Every connection gets TCP_NODELAY,
    as rshell's sockets do: over TLS, where each 16 KiB record is a write of
    its own, it is faster, and a baseline must be the best Python can do."""
    srv = socket.create_server((LOOPBACK, 0))
    ctx = server_context(cert, key)
    print(srv.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if ctx is not None:
                conn = ctx.wrap_socket(conn, server_side=True)
            handle(conn)
        except OSError:
            pass  # the peer went away; serve the next one
        finally:
            conn.close()


def server_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """TLS 1.3 with the throwaway certificate, as rshell's server speaks it; None
    without one (raw TCP)."""
    if not (cert and key):
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


def recv_exact(conn: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer if the peer closed first."""
    data = b""
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            break
        data += more
    return data


def relay_command(command: str, conn: socket.socket, view: memoryview) -> None:
    """The relay ceiling: ``command`` writes into a 1 MiB pipe; a loop of
    ``readv`` into one preallocated pipe-sized buffer and ``sendall`` moves it
    to the socket, with nothing else per chunk (no framing, no polling, no
    accounting).  A server that runs commands behind a pipe cannot do less."""
    import fcntl

    r, w = os.pipe()
    try:
        fcntl.fcntl(r, _F_SETPIPE_SZ, RELAY_PIPE)  # before the command starts writing
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size: the default pipe still works
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                                stdout=w)
    finally:
        os.close(w)
    try:
        readv, send, bufs = os.readv, conn.sendall, [view]
        while n := readv(r, bufs):
            send(view[:n])
    finally:
        os.close(r)  # an unfinished command gets SIGPIPE
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

# ---- the spawn floor: the least a Python server can do per command ----------------------


class FloorPeer:
    """The round trip's floor: this script in ``--floor-server`` mode, in its own
    process (as rshell's server is), and one open TCP connection to it.  A
    request is the command's text, the reply its exit status (4 bytes); one
    request at a time, so one ``recv`` reads one request."""

    def __init__(self) -> None:
        argv = [sys.executable, str(ENTRY), "--floor-server"]
        self.proc, self.port = start_helper(argv, "spawn floor server")
        try:
            self.sock = socket.create_connection((LOOPBACK, self.port), timeout=30)
        except OSError as exc:
            stop_process(self.proc, 5.0)
            raise BenchError(f"spawn floor server: cannot connect: {exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def run(self, command: bytes = b"true") -> int:
        """Send ``command``, block for its exit status."""
        self.sock.sendall(command)
        reply = recv_exact(self.sock, _FLOOR_STATUS.size)
        if len(reply) < _FLOOR_STATUS.size:
            raise BenchError(f"spawn floor server closed the connection ({reply!r})")
        status: int = _FLOOR_STATUS.unpack(reply)[0]
        return status

    def checked(self) -> None:
        """One ``true``, which must exit 0."""
        if (status := self.run()) != 0:
            raise BenchError(f"spawn floor: 'true' exited {status}")

    def stop(self) -> None:
        self.sock.close()
        stop_process(self.proc, 5.0)


#: What the floor does per command, for the JSON and the table's notes.
FLOOR_WHAT = ("a minimal server process (bench.py --floor-server) over one open TCP "
              "connection (TCP_NODELAY both ends): per request, two os.pipe(), "
              "os.posix_spawn('/bin/sh', ['/bin/sh', '-c', cmd], setsid=True; stdin "
              "/dev/null, stdout/stderr the pipes), pidfd_open, one epoll until both pipes "
              "hit EOF and the pidfd fired, waitpid, exit status back in 4 bytes; no "
              "framing, JSON, TLS, auth, limits or logging")


def floor_server_main() -> int:
    """Accept, then for each request (a command's text, one ``recv``) run it as
    cheaply as a Python server can and send back its exit status; until killed."""
    srv = socket.create_server((LOOPBACK, 0))
    print(srv.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    buf = bytearray(64 * 1024)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while request := conn.recv(65536):
                status = floor_spawn(request.decode(), buf)
                conn.sendall(_FLOOR_STATUS.pack(status))
        except OSError:
            pass  # the client went away; serve the next one
        finally:
            conn.close()


def floor_spawn(command: str, buf: bytearray) -> int:
    """Run ``command`` the least costly way a Python server can and still do
    what any server must: its own session, stdin /dev/null, stdout and stderr
    pipes drained to EOF (and discarded), its exit seen through a pidfd in the
    same epoll as the pipes, then reaped.  The exit code (negative: a signal)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(
            "/bin/sh", ["/bin/sh", "-c", command], os.environ,
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, out_w, 1),
                          (os.POSIX_SPAWN_DUP2, err_w, 2)],
            setsid=True)
    finally:
        os.close(out_w)
        os.close(err_w)
    pidfd = os.pidfd_open(pid)
    poller = select.epoll()
    try:
        for fd in (out_r, err_r, pidfd):
            poller.register(fd, select.EPOLLIN)
        pipes, exited, bufs = {out_r, err_r}, False, [buf]
        while pipes or not exited:
            for fd, _ in poller.poll():
                if fd == pidfd:
                    exited = True
                    poller.unregister(pidfd)
                elif not os.readv(fd, bufs):
                    poller.unregister(fd)
                    pipes.discard(fd)
        _, status = os.waitpid(pid, 0)
    finally:
        poller.close()
        for fd in (out_r, err_r, pidfd):
            os.close(fd)
    return os.waitstatus_to_exitcode(status)



# ---- the keystroke relay: the least a Python client and server can do per keystroke ------


class KeyRelay:
    """The keystroke's floor: this script in ``--key-relay`` mode, in its own
    process, runs ``command`` on a pty for each connection and relays bytes
    between the pty and the socket; ``client_argv`` is its client (on a local
    pty, as ``rshell -tt`` is), which relays its terminal, raw, to the socket.
    Nothing else either side: no framing, protocol, authentication, limits,
    logging or escapes.  Over TLS 1.3 (``tls_files``) or raw TCP."""

    def __init__(self, command: str, tls_files: tuple[Path, Path] | None) -> None:
        argv = [sys.executable, str(ENTRY), "--key-relay", command]
        self.client = [sys.executable, str(ENTRY)]
        if tls_files is not None:
            cert, key = tls_files
            argv += ["--raw-cert", str(cert), "--raw-key", str(key)]
            self.client += ["--raw-cert", str(cert)]
        self.proc, port = start_helper(argv, "keystroke relay")
        self.client += ["--key-relay-client", str(port)]

    def stop(self) -> None:
        stop_process(self.proc, 5.0)


#: What the keystroke relay is, for the JSON and the table's notes.
KEY_RELAY_WHAT = ("a bare relay, client and server in Python (bench.py --key-relay-client "
                  "on a local pty, raw; --key-relay running the command on a pty): one epoll "
                  "loop each side, os.read/os.write on the terminal, recv_into/sendall on the "
                  "socket (TCP_NODELAY both ends); no framing, protocol, authentication, "
                  "limits, logging or escapes")


def key_relay_main(command: str, cert: str | None, key: str | None) -> int:
    """Accept, run ``command`` on a pty, relay until either side ends; the next."""
    return serve(cert, key, lambda conn: relay_pty(command, conn))


def relay_pty(command: str, conn: socket.socket) -> None:
    import pty

    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its terminal
        try:
            os.execv("/bin/sh", ["/bin/sh", "-c", command])
        finally:
            os._exit(127)
    try:
        relay(conn, master, master)
    finally:
        os.close(master)  # the command gets SIGHUP
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def relay(conn: socket.socket, read_fd: int, write_fd: int) -> None:
    """Bytes from ``read_fd`` to ``conn`` and back to ``write_fd``, until either
    ends (EOF, or EIO from a pty whose other side closed)."""
    poller = select.epoll()
    sock_fd = conn.fileno()
    poller.register(sock_fd, select.EPOLLIN)
    poller.register(read_fd, select.EPOLLIN)
    buf = bytearray(64 * 1024)
    view = memoryview(buf)
    try:
        while True:
            for fd, _ in poller.poll():
                if fd == sock_fd:
                    n = conn.recv_into(buf)
                    if not n:
                        return
                    done = 0
                    while done < n:
                        done += os.write(write_fd, view[done:n])
                else:
                    data = os.read(read_fd, 64 * 1024)
                    if not data:
                        return
                    conn.sendall(data)
    except OSError:
        return
    finally:
        poller.close()


def key_relay_client_main(port: int, cert: str | None) -> int:
    """The relay's client: this terminal raw (as ``rshell -tt`` makes it), its
    keystrokes to the socket and what comes back to stdout."""
    import termios
    import tty

    conn = socket.create_connection((LOOPBACK, port), timeout=30)
    conn.settimeout(None)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cert)
        conn = ctx.wrap_socket(conn, server_hostname="localhost")
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        relay(conn, 0, 1)
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
        conn.close()
    return 0


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed Ed25519 certificate for localhost/127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None)
    )
    cert_path, key_path = directory / "bench-cert.pem", directory / "bench-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path

