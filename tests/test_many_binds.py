"""rshell-server with hundreds of listeners (issue 15: fleets run 1,000
loopback "hosts" as a few servers with hundreds of ``--bind`` each): every
listener serves, and starting and stopping take well under a second
whatever their number, a stop still letting running commands finish.

The old daemon ran socketserver's ``serve_forever`` in a thread per
listener and stopped them one ``shutdown`` at a time: with 300 listeners a
SIGTERM took 4-5 s on an idle 2-core machine (16 s for 500; it grows with the
square of the number), spinning on every core meanwhile.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import rshell
from rshell.client.api import RunStream
from tests.conftest import InProcessServer, ServerProcess, cli
from tests.support.procs import wait_until

StartServer = Callable[..., ServerProcess]
Chunk = tuple[str, bytes]

#: Listeners per server: the "hundreds of --bind" of a fleet test rig.
BINDS = 300
#: Spawn to every listener logged, a fresh home's keys generated included
#: (0.25 s here, before and after issue 15).  Generous for a loaded CI
#: machine; a per-listener cost of 15 ms would still break it.
START_DEADLINE = 5.0
#: SIGTERM to exit, nothing running.  The promise is "well under a second"
#: (0.06 s here); 2 s leaves room for a loaded machine and is still far from
#: the old daemon's 4-5 s for 300 listeners.
STOP_DEADLINE = 2.0
#: How long a command given to a stopping server runs.
DRAIN_SECONDS = 2.0

_NATIVE = re.compile(r"INFO listening on ([^\s\"]+)")
_SSH = re.compile(r"INFO ssh listening on ([^\s\"]+)")


def _binds(count: int) -> list[str]:
    return [arg for _ in range(count) for arg in ("--bind", "127.0.0.1:0")]


def _many(start_server: StartServer, *flags: str) -> tuple[ServerProcess, list[str], float]:
    """A server with BINDS listeners on port 0: it, their addresses (each
    pinned in known_hosts) and the seconds from spawn to the last one logged."""
    started = time.monotonic()
    srv = start_server(*_binds(BINDS - 1), *flags)  # the fixture adds the first
    listed = wait_until(lambda: len(_NATIVE.findall(srv.log)) >= BINDS, 30)
    took = time.monotonic() - started
    assert listed, srv.log
    addresses = _NATIVE.findall(srv.log)
    assert len(set(addresses)) == BINDS, "port 0 gave two listeners the same port"
    for address in addresses[1:]:  # the fixture pinned the first
        srv.pin(srv.home, address, srv.fingerprint)
    return srv, addresses, took


def _answer(address: str) -> rshell.Result:
    with rshell.connect(address, strict_host_keys=True, connect_timeout=20) as conn:
        return conn.run(f"echo served {address}", timeout=20)


def _refuses(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        probe = socket.create_connection((host, int(port)), timeout=2)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    probe.close()
    return False


def _ssh_banner(address: str) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.settimeout(10)
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    return data


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_exit(srv: ServerProcess, timeout: float) -> int:
    try:
        return srv.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server still running {timeout}s after SIGTERM") from None


def test_every_listener_serves_and_sigterm_exits_at_once(
    home: Path, start_server: StartServer,
) -> None:
    """300 native listeners (and two SSH ones beside them) start within the
    bound; every native one runs a command for the real client (the API for
    all, the CLI for a sample), every SSH one greets; then SIGTERM ends the
    process, exit 0, within the bound."""
    srv, addresses, took = _many(
        start_server, "--ssh-bind", "127.0.0.1:0", "--ssh-bind", "127.0.0.1:0")
    assert took < START_DEADLINE, f"{BINDS} listeners took {took:.2f}s to start"

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(_answer, addresses))
    for address, result in zip(addresses, results, strict=True):
        assert (result.exit_code, result.error) == (0, None), (address, result)
        assert result.stdout == f"served {address}\n".encode(), (address, result)
    for address in (addresses[0], addresses[BINDS // 2], addresses[-1]):
        run = cli(home, address, "-c", "echo $RSHELL_CLIENT")
        assert run.returncode == 0 and run.stdout.startswith(b"127.0.0.1:"), run.stderr
    assert wait_until(lambda: len(_SSH.findall(srv.log)) == 2, 10), srv.log
    ssh_addresses = _SSH.findall(srv.log)
    for address in ssh_addresses:
        assert _ssh_banner(address).startswith(b"SSH-2.0-"), address
    if shutil.which("ssh"):
        _ssh_command(srv, ssh_addresses[-1])

    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert _wait_exit(srv, 30) == 0, srv.log
    took = time.monotonic() - started
    assert took < STOP_DEADLINE, f"{BINDS} listeners took {took:.2f}s to stop"
    srv.wait_for_log(r"stopped in")


def _ssh_command(srv: ServerProcess, address: str) -> None:
    """The real OpenSSH client runs a command through an SSH listener that
    shares the accept loop with the native ones."""
    host, port = address.rsplit(":", 1)
    run = subprocess.run(
        ["ssh", "-p", port, "-i", str(srv.home / "id_ed25519"), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
         "-o", f"UserKnownHostsFile={srv.home / 'ssh_known_hosts'}", "-o", "LogLevel=ERROR",
         "-F", "/dev/null", f"tester@{host}", "echo over ssh"],
        capture_output=True, stdin=subprocess.DEVNULL, timeout=60,
    )
    assert (run.returncode, run.stdout) == (0, b"over ssh\n"), run.stderr


def _started(conns: list[rshell.Connection]) -> Iterator[tuple[int, RunStream, Iterator[Chunk]]]:
    """A command on each connection, each seen running: (index, stream, its chunks to come)."""
    for i, conn in enumerate(conns):
        stream = conn.stream(f"echo started; sleep {DRAIN_SECONDS}; echo done {i}")
        chunks = iter(stream)
        assert next(chunks) == ("stdout", b"started\n")
        yield i, stream, chunks


def test_stop_drains_commands_on_several_listeners(start_server: StartServer) -> None:
    """SIGTERM while commands run on six of 300 listeners: every listener
    refuses connections at once, each command finishes with its output and
    status, the server neither spins meanwhile nor lingers after the last
    one ends, and exits 0."""
    srv, addresses, _ = _many(start_server)
    chosen = addresses[:: BINDS // 6]
    conns = [rshell.connect(a, strict_host_keys=True, connect_timeout=20) for a in chosen]
    try:
        running = list(_started(conns))
        cpu_before = _cpu_seconds(srv.proc.pid)
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_for_log(r"SIGTERM received: shutting down \(grace \S+, 6 session")
        still_open = [a for a in addresses if not _refuses(a)]
        assert not still_open, f"{len(still_open)} listeners still accept after the stop began"
        for i, stream, chunks in running:
            assert list(chunks) == [("stdout", f"done {i}\n".encode())], i
            result = stream.result
            assert result is not None and (result.exit_code, result.error) == (0, None), i
        ended = time.monotonic()
        spent = _cpu_seconds(srv.proc.pid) - cpu_before
        assert spent < 0.5, f"the stopping server used {spent:.2f}s of CPU while it drained"
        assert _wait_exit(srv, 30) == 0, srv.log
        lingered = time.monotonic() - ended
        assert lingered < STOP_DEADLINE, f"exited {lingered:.2f}s after the last command ended"
    finally:
        for conn in conns:
            conn.close()


def test_daemon_stop_with_many_listeners_is_quick(
    start_in_process: Callable[..., InProcessServer],
) -> None:
    """The daemon itself (no process start or exit in the figure): with 300
    listeners and nothing running, the graceful stop returns in well under a
    second, and every listener is closed afterwards."""
    srv = start_in_process(*_binds(BINDS - 1))
    addresses = srv.daemon.addresses
    assert len(set(addresses)) == BINDS
    assert _answer(srv.address).ok
    started = time.monotonic()
    srv.stop()
    took = time.monotonic() - started
    assert took < 1.0, f"Daemon.stop took {took:.2f}s for {BINDS} listeners"
    assert all(_refuses(a) for a in addresses)
