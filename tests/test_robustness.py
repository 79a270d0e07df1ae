"""The server under stress and abuse: huge outputs, many clients, clients that
vanish mid-command, garbage on the wire and handshakes that never come.

Every test runs against a real server on 127.0.0.1 and polls for its
conditions with a bounded deadline: an ``rshell-server`` subprocess where the
process is the subject (its memory, its children), the same daemon in this
process for garbage on the wire, spoken by hand through tests/support/wire.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import shlex
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import CLIENT_MODE, RSHELL, InProcessServer, ServerProcess, base_env, connect
from tests.support.procs import (
    assert_group_ends,
    describe,
    group_members,
    kill_group,
    proc_status,
    read_pid,
    wait_until,
    write_pid,
)
from tests.support.wire import (
    CLOSE_DEADLINE,
    HEADER,
    T_ERROR,
    T_HELLO,
    T_RUN,
    error_code,
    frame,
    parse_frames,
    raw_connect,
    read_until_closed,
)

# ---- large output --------------------------------------------------------------------

SEED = 20240501
MIB = 1 << 20
SIZE_MIB = 300
#: Writes SIZE_MIB MiB of seeded Mersenne Twister output; the same interpreter
#: runs it on the server side, so the test can recompute the digest.
GENERATE = shlex.join([
    sys.executable, "-c",
    f"import random, sys; r = random.Random({SEED}); w = sys.stdout.buffer.write\n"
    f"for _ in range({SIZE_MIB}): w(r.randbytes({MIB}))",
])


@functools.cache
def expected_digest() -> str:
    rng = random.Random(SEED)
    h = hashlib.sha256()
    for _ in range(SIZE_MIB):
        h.update(rng.randbytes(MIB))
    return h.hexdigest()


def test_large_output_streams_complete_and_in_order_through_api(server: ServerProcess) -> None:
    """300 MiB reach an on_stdout callback whole and in order, and the server
    never holds it all: the streaming promise of SPEC §3, checked end to end."""
    h = hashlib.sha256()
    received = 0

    def sink(chunk: bytes | memoryview) -> None:
        nonlocal received
        h.update(chunk)
        received += len(chunk)

    started = time.monotonic()
    with connect(server) as conn:
        result = conn.run(GENERATE, on_stdout=sink, timeout=60)
    elapsed = time.monotonic() - started
    assert (result.exit_code, result.error, result.stderr) == (0, None, b"")
    assert result.stdout == b"", "streamed output must not also be collected"
    assert received == SIZE_MIB * MIB
    assert h.hexdigest() == expected_digest()
    assert elapsed < 15, f"{SIZE_MIB} MiB took {elapsed:.1f}s"
    assert proc_status(server.proc.pid)["VmHWM"] < 200 * MIB, "server buffered the output"


def test_large_output_through_cli_to_file(home: Path, server: ServerProcess,
                                          tmp_path: Path) -> None:
    """The real CLI writes the same 300 MiB to a file unaltered (no text-mode
    translation, no lost tail at exit)."""
    out = tmp_path / "out.bin"
    started = time.monotonic()
    with out.open("wb") as f:
        proc = subprocess.run(
            [RSHELL, *CLIENT_MODE, server.address, "-c", GENERATE], stdin=subprocess.DEVNULL,
            stdout=f, stderr=subprocess.PIPE, env=base_env(home), timeout=60,
        )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert b"error" not in proc.stderr.lower(), proc.stderr
    assert out.stat().st_size == SIZE_MIB * MIB
    h = hashlib.sha256()
    with out.open("rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    assert h.hexdigest() == expected_digest()
    assert elapsed < 15, f"{SIZE_MIB} MiB took {elapsed:.1f}s"


# ---- many clients ----------------------------------------------------------------------

N_CLIENTS = 50


def test_fifty_concurrent_clients(server: ServerProcess, tmp_path: Path) -> None:
    """50 connections open at once, each running several commands, get exactly
    their own output, exit status and working directory: sessions share nothing."""
    barrier = threading.Barrier(N_CLIENTS)

    def client(i: int) -> None:
        workdir = tmp_path / f"client-{i}"
        workdir.mkdir()
        with connect(server, connect_timeout=20) as conn:
            barrier.wait(timeout=30)  # every connection is open before any command
            r = conn.run(f"cd {shlex.quote(str(workdir))}")
            assert (r.exit_code, r.error) == (0, None), r
            r = conn.run(f"printf 'out-{i}'; printf 'err-{i}' >&2; exit {i % 5}")
            assert (r.exit_code, r.stdout, r.stderr) == (i % 5, f"out-{i}".encode(),
                                                         f"err-{i}".encode())
            n = 5000 + 37 * i
            r = conn.run(f"seq 1 {n}; pwd")
            want = "".join(f"{k}\n" for k in range(1, n + 1)) + f"{workdir}\n"
            assert (r.exit_code, r.stderr) == (0, b"")
            assert r.stdout == want.encode()

    with ThreadPoolExecutor(N_CLIENTS) as pool:
        futures = [pool.submit(client, i) for i in range(N_CLIENTS)]
        failures = []
        for i, fut in enumerate(futures):
            exc = fut.exception(timeout=60)
            if exc is not None:
                failures.append(f"client {i}: {exc!r}")
    assert not failures, "\n".join(failures)
    assert server.proc.poll() is None


# ---- clients that vanish -----------------------------------------------------------------

#: Starts two sleepers in the shell's process group and reports the group id.
SLEEPERS = "sleep 300 & {write}; sleep 300; wait"
VANISH_DEADLINE = 5.0


def _wait_for_group(pgid: int) -> None:
    """Until the shell and both sleepers run (so the test proves they die)."""
    assert wait_until(lambda: len(group_members(pgid)) >= 3, 10), describe(group_members(pgid))


def test_killed_cli_leaves_no_remote_process(home: Path, server: ServerProcess,
                                             tmp_path: Path) -> None:
    """SIGKILL to the CLI mid-command: the server sees the connection drop and
    terminates the command's whole process group, background jobs included."""
    pidfile = tmp_path / "pgid"
    command = SLEEPERS.format(write=write_pid(pidfile))
    proc = subprocess.Popen(
        [RSHELL, *CLIENT_MODE, server.address, "-c", command], env=base_env(home),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        pgid = read_pid(pidfile)
        _wait_for_group(pgid)
        proc.kill()
        proc.wait(5)
        assert_group_ends(pgid, VANISH_DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if pidfile.exists():
            kill_group(int(pidfile.read_text()))
    server.wait_for_log(r"error=connection ended")
    assert server.proc.poll() is None


@pytest.mark.parametrize("command", [
    "sleep 300 & echo $$; sleep 300; wait",
    # Everything ignores SIGTERM: only the SIGKILL after the grace ends it.
    "trap '' TERM; sleep 300 & echo $$; sleep 300; wait",
    # The leader dies of SIGTERM; a background job that ignores it must not outlive it.
    "(trap '' TERM; sleep 300) & echo $$; sleep 300; wait",
], ids=["plain", "all-ignore-sigterm", "job-ignores-sigterm"])
def test_closed_api_connection_leaves_no_remote_process(server: ServerProcess,
                                                        command: str) -> None:
    """Closing a Connection while a command streams ends that command's whole
    process group on the server too, and the server keeps serving."""
    conn = connect(server)
    stream = conn.stream(command)
    kind, chunk = next(iter(stream))
    assert kind == "stdout"
    pgid = int(chunk)
    try:
        _wait_for_group(pgid)
        conn.close()
        assert_group_ends(pgid, VANISH_DEADLINE)
    finally:
        conn.close()
        kill_group(pgid)
    with connect(server) as again:
        assert again.run("echo still-here").stdout == b"still-here\n"


# ---- garbage on the wire ---------------------------------------------------------------

_rng = random.Random(4242)
GARBAGE = {
    "length-far-above-maximum": (HEADER.pack(0xFFFFFFFF, T_HELLO), {"frame-too-large"}),
    "unknown-type": (frame(0xEE, _rng.randbytes(16)), {"unknown-type"}),
    "hello-not-json": (frame(T_HELLO, b"\xff" + _rng.randbytes(40)), {"malformed"}),
    "random-bytes": (_rng.randbytes(200),
                     {"frame-too-large", "unknown-type", "malformed", "unexpected"}),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_gets_protocol_error_and_close(in_process_server: InProcessServer,
                                               name: str) -> None:
    """Garbage earns an Error frame with a code, then a closed connection; a
    session opened before, and one opened after, are undisturbed (SPEC §6)."""
    payload, codes = GARBAGE[name]
    server = in_process_server
    with connect(server) as bystander:
        assert bystander.run("echo before").stdout == b"before\n"
        with raw_connect(server) as sock:
            sock.sendall(payload)
            reply = read_until_closed(sock)
        assert error_code(reply) in codes
        assert bystander.run("echo after").stdout == b"after\n"
    with connect(server) as fresh:
        assert fresh.run("echo fresh").stdout == b"fresh\n"


def test_run_before_handshake_is_refused_and_not_executed(in_process_server: InProcessServer,
                                                          tmp_path: Path) -> None:
    """A well-formed Run sent before any handshake is a protocol error and never
    runs: no command runs before authentication (SPEC §6)."""
    server = in_process_server
    marker = tmp_path / "must-not-exist"
    run = json.dumps({"command": f"touch {shlex.quote(str(marker))}", "stdin": False})
    with raw_connect(server) as sock:
        sock.sendall(frame(T_RUN, run.encode()))
        reply = read_until_closed(sock)
    assert error_code(reply) == "unexpected"
    with connect(server) as conn:  # a full round trip: the refused Run had its chance
        assert conn.run("echo ok").stdout == b"ok\n"
    assert not marker.exists()


def test_random_garbage_flood(start_in_process: Callable[..., InProcessServer]) -> None:
    """Twenty connections of random bytes at once (some announce frames they
    never complete): each is closed within auth-timeout plus a margin, with at
    most an Error frame, and a real client works throughout.  (All from one
    address: per-source penalties would refuse the flood before its parser.)"""
    srv = start_in_process("--auth-timeout", "1", "--per-source-penalties", "no")
    rng = random.Random(99)
    blobs = [rng.randbytes(rng.randrange(1, 3000)) for _ in range(5)]  # huge lengths, mostly
    for _ in range(15):  # plausible headers: known and unknown types, short and long bodies
        kind = rng.choice([1, 2, 3, 4, 10, 11, 12, 13, 20, 22, 23, 30, rng.randrange(256)])
        length = rng.choice([0, rng.randrange(64), rng.randrange(4096), rng.randrange(MIB)])
        sent = min(length, 4096)
        sent = rng.choice([sent, rng.randrange(sent + 1)])  # whole, or cut short
        blobs.append(HEADER.pack(length, kind) + rng.randbytes(sent))

    def abuse(blob: bytes) -> bytes:
        try:
            sock = raw_connect(srv)
        except (ssl.SSLEOFError, ConnectionResetError):
            # The auth timeout covers the TLS handshake too: on a loaded
            # machine twenty at once can outlast its second, and the server
            # closes them there, before any frame; closed with nothing.
            return b""
        with sock:
            sock.sendall(blob)
            return read_until_closed(sock, 1 + CLOSE_DEADLINE)

    with connect(srv) as bystander, ThreadPoolExecutor(len(blobs)) as pool:
        futures = [pool.submit(abuse, blob) for blob in blobs]
        assert bystander.run("echo during").stdout == b"during\n"
        replies = [fut.result(timeout=2 + CLOSE_DEADLINE) for fut in futures]
    for reply in replies:
        assert [kind for kind, _ in parse_frames(reply)] in ([], [T_ERROR]), reply
    with connect(srv) as conn:
        assert conn.run("echo after").stdout == b"after\n"


# ---- stalled handshakes ---------------------------------------------------------------------

@pytest.mark.parametrize("opening", [b"", b"\x00\x00"], ids=["silent", "partial-header"])
def test_stalled_handshake_is_cut_off(start_in_process: Callable[..., InProcessServer],
                                      opening: bytes) -> None:
    """A peer that connects and then stalls holds a thread and a socket: the
    server must drop it after --auth-timeout, not before, and serve others."""
    srv = start_in_process("--auth-timeout", "1")
    started = time.monotonic()
    with raw_connect(srv) as sock:
        sock.sendall(opening)
        with connect(srv) as other:  # a stalled peer blocks nobody
            assert other.run("echo meanwhile").stdout == b"meanwhile\n"
        reply = read_until_closed(sock, 1 + CLOSE_DEADLINE)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.9, f"cut off after {elapsed:.2f}s, before --auth-timeout"
    assert [kind for kind, _ in parse_frames(reply)] in ([], [T_ERROR]), reply
    srv.wait_for_log(r"handshake not completed|auth.*tim", timeout=5)


# ---- logs --------------------------------------------------------------------------------

def test_log_lines_for_connection_command_and_disconnect(server: ServerProcess) -> None:
    """Operators reconstruct a session from the log: its connection, each
    command with exit status and duration, and its end, in that order and
    one line each (SPEC §3 Logs)."""
    with connect(server) as conn:
        assert conn.run("echo log-marker-7; exit 3").exit_code == 3
    peer = server.wait_for_log(r"connection from (\S+)").group(1)
    assert peer.startswith("127.0.0.1:")
    command = re.escape(peer) + r".*log-marker-7.*exit=3\b.*duration=\d+(\.\d+)?s"
    server.wait_for_log(command)
    server.wait_for_log(re.escape(peer) + r".*disconnect")
    lines = server.log.splitlines()
    connected = [i for i, x in enumerate(lines) if f"connection from {peer}" in x]
    commands = [i for i, x in enumerate(lines) if re.search(command, x)]
    ended = [i for i, x in enumerate(lines) if re.search(re.escape(peer) + ".*disconnect", x)]
    assert len(connected) == 1, f"connection logged {len(connected)} times:\n{server.log}"
    assert len(commands) == 1, f"command logged {len(commands)} times:\n{server.log}"
    assert len(ended) == 1, f"disconnect logged {len(ended)} times:\n{server.log}"
    assert connected[0] < commands[0] < ended[0], server.log


def test_json_log_lines_carry_their_facts_as_fields(
    start_server: Callable[..., ServerProcess]
) -> None:
    """--log-format json: a log shipper reads the peer, the key, the command,
    its exit, bytes and duration as keys, not out of the text; both
    listeners write them through the same Recorder (exec/record.py)."""
    server = start_server("--log-format", "json")
    with connect(server) as conn:
        assert conn.run("printf abc; exit 3").exit_code == 3
    server.wait_for_log(r'"event": "disconnect"')
    lines = [json.loads(line) for line in server.log.splitlines()]
    by_event = {line["event"]: line for line in lines if "event" in line}
    assert set(by_event) == {"connect", "auth", "command-end", "disconnect"}, lines
    peer = by_event["connect"]["peer"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", peer)
    for line in by_event.values():
        assert line["peer"] == peer and line["via"] == "rshell" and line["session"], line
        assert {"time", "level", "message"} <= set(line), line
    assert by_event["auth"]["ok"] is True
    assert by_event["auth"]["key"].startswith("SHA256:")
    end = by_event["command-end"]
    assert (end["command"], end["exit_code"], end["signal"], end["stdout_bytes"],
            end["stderr_bytes"]) == ("printf abc; exit 3", 3, None, 3, 0), end
    assert isinstance(end["duration"], float) and end["duration"] >= 0
    assert by_event["disconnect"]["commands"] == 1
