"""The server's limits (issue 4, SPEC §3): connection admission, the bound on
connections still authenticating, idle sessions, commands per connection and
back-pressure against a client that stops reading.

Every test runs a real ``rshell-server`` on 127.0.0.1 and polls for its
conditions with bounded deadlines.  The oversized-frame refusal is already
proven live in test_robustness.py (``length-far-above-maximum``) and at the
1 MiB + 1 boundary in test_frames.py, so it is not repeated here.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rshell import Connection, RshellError
from rshell.errors import ProtocolError
from rshell.protocol.messages import Hello, Welcome
from rshell.server.admission import EVICTABLE_AFTER
from tests.conftest import InProcessServer, ServerProcess, cli, connect
from tests.support.procs import plateau, proc_status, read_pid, wait_until, write_pid
from tests.support.wire import CLOSE_DEADLINE, Wire, seconds_until_closed, still_open

MIB = 1 << 20


# ---- helpers ---------------------------------------------------------------------


def admitted(srv: ServerProcess) -> Connection | None:
    """A new authenticated Connection, or None while the server turns it away."""
    try:
        return connect(srv)
    except RshellError:
        return None


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True if the server closes ``sock`` (EOF or reset) within ``timeout`` seconds."""
    return seconds_until_closed(sock, timeout) is not None


# ---- --max-connections --------------------------------------------------------------


def test_max_connections_refuses_the_fourth_and_spares_the_three(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """At the connection limit a newcomer gets one clear 'busy' line (CLI, exit
    255) or an RshellError (API); the sessions already in are untouched; a slot
    freed by a close is given to the next client."""
    srv = start_server("--max-connections", "3")
    conns = [connect(srv) for _ in range(3)]
    try:
        for i, conn in enumerate(conns):
            assert conn.run(f"echo in-{i}").stdout == f"in-{i}\n".encode()
        assert conns[0].run("cd /tmp").exit_code == 0  # session state, to prove it survives

        proc = cli(home, srv.address, "-c", "echo must-not-run", timeout=20)
        assert proc.returncode == 255, proc
        assert proc.stdout == b""
        lines = proc.stderr.decode().strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "busy" in lines[0].lower() and "Traceback" not in lines[0], lines

        with pytest.raises(RshellError, match="busy") as info:
            connect(srv)
        assert getattr(info.value, "code", None) == "busy"

        assert conns[0].run("pwd").stdout == b"/tmp\n"
        for i, conn in enumerate(conns):
            assert conn.run(f"echo still-{i}").stdout == f"still-{i}\n".encode()

        conns.pop(0).close()

        def newcomer_admitted() -> bool:
            conn = admitted(srv)
            if conn is not None:
                conns.append(conn)
            return conn is not None

        assert wait_until(newcomer_admitted, 10, interval=0.1), (
            "a freed slot was never given to a new client"
        )
        assert conns[-1].run("echo newcomer").stdout == b"newcomer\n"
    finally:
        for conn in conns:
            conn.close()
    srv.wait_for_log(r"rejected: server busy")


#: Refusals tried in a row: the loss is a race, so one try proves little.
TRIES = 200


def test_busy_answer_is_never_lost(start_server: Callable[..., ServerProcess]) -> None:
    """A client turned away must always learn why: 'busy', never a bare
    closed connection (it has sent its Hello by the time the answer comes, so
    a server that closes without reading it resets the connection, and the
    kernel throws the busy frame away).  Many tries make the race visible."""
    srv = start_server("--max-connections", "1")
    with connect(srv) as holder:
        outcomes = []
        for _ in range(TRIES):
            try:
                connect(srv).close()
                outcomes.append("admitted")
            except ProtocolError as exc:
                outcomes.append(exc.code)
            except RshellError as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
        assert holder.run("echo held").stdout == b"held\n"
    lost = [o for o in outcomes if o != "busy"]
    assert not lost, f"{len(lost)} of {TRIES} refusals did not say busy: {lost[:3]}"


# ---- --max-unauthenticated ------------------------------------------------------------


def server_accepted(srv: ServerProcess, sock: socket.socket) -> bool:
    """True once the server process holds the far end of ``sock`` (accepted,
    hence admitted or refused), by matching /proc/net/tcp against its fds."""
    port = sock.getsockname()[1]
    held = set()
    for fd in Path(f"/proc/{srv.proc.pid}/fd").iterdir():
        try:
            held.add(os.readlink(fd))
        except OSError:
            pass  # closed while we looked
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.rsplit(":", 1)[1], 16) == srv.port and \
                int(remote.rsplit(":", 1)[1], 16) == port:
            return f"socket:[{inode}]" in held
    return False


def idle_flood(srv: ServerProcess, count: int) -> list[socket.socket]:
    """``count`` TCP connections that never say a word, each accepted by the
    server before this returns (so its admission clock runs)."""
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(count)]
    assert wait_until(lambda: all(server_accepted(srv, s) for s in socks), 5), (
        "the server never accepted the idle connections"
    )
    return socks


def age_past_eviction(since: float) -> None:
    """Let connections admitted at ``since`` become evictable.  The age is the
    condition itself here, so waiting it out is no stand-in for a poll."""
    time.sleep(max(0.0, since + EVICTABLE_AFTER + 0.2 - time.monotonic()))


def test_idle_flood_cannot_lock_out_a_real_client(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """With every authenticating slot held by silent sockets for over
    EVICTABLE_AFTER, a real client still gets in: the oldest silent one, and
    only it, is cut off to make room."""
    srv = start_server("--max-unauthenticated", "4")
    flood = idle_flood(srv, 4)
    try:
        age_past_eviction(time.monotonic())
        proc = cli(home, srv.address, "-c", "echo got-in", timeout=20)
        assert (proc.returncode, proc.stdout) == (0, b"got-in\n"), proc.stderr
        assert closed_by_server(flood[0], CLOSE_DEADLINE), "the oldest idle socket was kept"
        assert all(still_open(s) for s in flood[1:]), "younger idle sockets were cut too"
        # The next real clients need no eviction at all: three slots are held.
        with connect(srv) as conn:
            assert conn.run("echo api-too").stdout == b"api-too\n"
    finally:
        for s in flood:
            s.close()
    srv.wait_for_log(r"cut off a connection still authenticating")


def test_evicted_connections_give_back_their_connection_slot(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """Waves of silent sockets, each wave evicting the last: the evicted ones
    must really go, or they keep counting against --max-connections until
    --auth-timeout and a real client is refused 'busy' after all."""
    srv = start_server("--max-connections", "4", "--max-unauthenticated", "2",
                       "--auth-timeout", "30")
    socks: list[socket.socket] = []
    try:
        socks += idle_flood(srv, 2)
        age_past_eviction(time.monotonic())
        socks += idle_flood(srv, 2)  # evicts the first wave
        age_past_eviction(time.monotonic())
        proc = cli(home, srv.address, "-c", "echo got-in", timeout=20)
        assert (proc.returncode, proc.stdout) == (0, b"got-in\n"), proc.stderr
        assert all(closed_by_server(s, CLOSE_DEADLINE) for s in socks[:3]), (
            "evicted connections were left open (they still hold a thread and a slot)"
        )
    finally:
        for s in socks:
            s.close()


def test_burst_of_fresh_connections_is_answered_busy(
    start_server: Callable[..., ServerProcess]
) -> None:
    """Four connections opened just now fill the authenticating bound; a fifth
    at once is told 'busy' (too soon to evict anyone), and the four are kept."""
    srv = start_server("--max-unauthenticated", "4")
    opened = time.monotonic()
    flood = idle_flood(srv, 4)
    try:
        with pytest.raises(RshellError, match="busy") as info:
            connect(srv)
        assert time.monotonic() - opened < EVICTABLE_AFTER, (
            "inconclusive: the flood aged past the eviction threshold before the 5th came"
        )
        assert getattr(info.value, "code", None) == "busy"
        assert all(still_open(s) for s in flood), "a fresh connection was evicted"
    finally:
        for s in flood:
            s.close()


# ---- --idle-timeout ----------------------------------------------------------------------


def test_idle_session_gets_idle_timeout_error_frame(
    start_in_process: Callable[..., InProcessServer]
) -> None:
    """On the wire: a session that sends nothing after its Welcome receives one
    Error frame with code 'idle-timeout' about --idle-timeout later, then EOF."""
    srv = start_in_process("--idle-timeout", "1", "--no-auth")
    with Wire(srv, timeout=1 + CLOSE_DEADLINE) as wire:
        wire.send(Hello())
        wire.expect(Welcome)
        welcomed = time.monotonic()
        wire.refusal("idle-timeout")
    elapsed = time.monotonic() - welcomed
    assert 0.8 <= elapsed <= 1 + 2, f"closed {elapsed:.2f}s after the Welcome (limit 1s)"


def test_idle_api_connection_is_closed_and_says_why(
    start_server: Callable[..., ServerProcess]
) -> None:
    """Through the API: after the idle limit the next run() raises an
    RshellError that names the idle timeout, not a bare connection error."""
    srv = start_server("--idle-timeout", "1")
    conn = connect(srv)
    opened = time.monotonic()
    try:
        srv.wait_for_log(r"idle for 1 s without a command", timeout=1 + CLOSE_DEADLINE)
        assert time.monotonic() - opened >= 0.8
        with pytest.raises(RshellError, match="idle"):
            conn.run("echo too-late")
    finally:
        conn.close()


def test_running_command_is_not_cut_by_idle_timeout(
    start_server: Callable[..., ServerProcess]
) -> None:
    """The idle limit counts time between commands only: a silent command
    twice as long as the limit runs to completion, and the idle clock starts
    afresh when it ends (the session is not closed at once for the time the
    command took)."""
    srv = start_server("--idle-timeout", "1")
    with connect(srv) as conn:
        result = conn.run("sleep 2; echo survived")
        ended = time.monotonic()
        assert (result.exit_code, result.error, result.stdout) == (0, None, b"survived\n")
        srv.wait_for_log(r"idle for 1 s without a command", timeout=1 + CLOSE_DEADLINE)
        idle = time.monotonic() - ended
        assert idle >= 0.8, (
            f"closed as idle {idle:.2f}s after a long command ended (limit 1s): the idle "
            "clock ran during the command"
        )


# ---- --max-commands --------------------------------------------------------------------


def test_max_commands_per_connection(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The command past --max-commands is a 'limit' protocol error and never
    runs; the connection is over, and a new one starts afresh."""
    srv = start_server("--max-commands", "3")
    marker = tmp_path / "fourth-ran"
    with connect(srv) as conn:
        for i in range(3):
            assert conn.run(f"echo {i}").stdout == f"{i}\n".encode()
        with pytest.raises(ProtocolError) as info:
            conn.run(f"touch {shlex.quote(str(marker))}")
        assert info.value.code == "limit", info.value
        with pytest.raises(RshellError):
            conn.run("echo after-limit")
    assert not marker.exists(), "the command beyond the limit was executed"
    srv.wait_for_log(r"disconnected after \d+ command")
    with connect(srv) as fresh:
        for i in range(3):
            assert fresh.run(f"echo fresh-{i}").stdout == f"fresh-{i}\n".encode()


# ---- back-pressure -------------------------------------------------------------------


def rss(pid: int) -> int:
    return proc_status(pid)["VmRSS"]


def proc_io(pid: int, field: str) -> int:
    match = re.search(rf"^{field}: (\d+)$", Path(f"/proc/{pid}/io").read_text(), re.M)
    assert match, f"no {field} for {pid}"
    return int(match.group(1))


TOTAL = 2 << 30  # 2 GiB


def test_client_that_stops_reading_blocks_the_command_not_the_server_memory(
    server: ServerProcess, tmp_path: Path, stray: list[int]
) -> None:
    """A client that stops reading while its command writes 2 GiB: the writer
    blocks on its pipe after a bounded amount, the server's RSS stays bounded,
    and once the client reads again every byte arrives."""
    pid_server = server.proc.pid
    pidfile = tmp_path / "pid"
    command = f"{write_pid(pidfile)}; exec head -c {TOTAL} /dev/zero"
    with connect(server) as conn:
        assert conn.run("true").exit_code == 0  # warm-up: buffers the server keeps anyway
        base_rss = rss(pid_server)
        stream = conn.stream(command)
        chunks = iter(stream)
        kind, first = next(chunks)
        assert kind == "stdout"
        received = len(first)
        writer = read_pid(pidfile)
        stray.append(writer)  # a failed test must not leave a writer running

        rss_seen: list[int] = []

        def written() -> int:
            rss_seen.append(rss(pid_server))
            return proc_io(writer, "wchar")

        stalled_at = plateau(written, still=0.5, timeout=15)
        assert stalled_at is not None, "the command kept writing to a client that reads nothing"
        assert stalled_at < 128 * MIB, f"{stalled_at / MIB:.0f} MiB in flight before it blocked"
        grown = max(rss_seen) - base_rss
        assert grown < 64 * MIB, f"server RSS grew {grown / MIB:.0f} MiB for a stalled client"

        for kind, chunk in chunks:
            assert kind == "stdout"
            received += len(chunk)
        result = stream.result
    assert result is not None
    assert (result.exit_code, result.signal, result.error) == (0, None, None)
    assert received == TOTAL, f"{TOTAL - received} bytes lost"
    assert rss(pid_server) - base_rss < 64 * MIB
