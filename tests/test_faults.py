"""Faults (issue 4): children that misbehave, clients and networks that vanish,
a server that is SIGKILLed, and the audit trail that must survive it.

After each fault the server must have reaped everything and hold no more file
descriptors or threads than it did after a warm-up (a leak per fault is a
server that dies of attrition).  Server SIGTERM mid-command is covered by
test_shutdown.py and not repeated here.  Every wait is a bounded poll.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rshell.exec.policy import Limits
from rshell.protocol.messages import Hello, Run, Stdout, Welcome
from tests.conftest import CLIENT_MODE, RSHELL, ServerProcess, base_env, cli, connect
from tests.support.procs import (
    CLEANUP_DEADLINE,
    Usage,
    assert_group_ends,
    describe,
    first_pid,
    pgid_of,
    read_pid,
    running,
    settled,
    usage,
    wait_until,
    write_pid,
)
from tests.support.wire import Wire

#: The server's SIGTERM -> SIGKILL grace (not a flag: the documented default).
KILL_GRACE = Limits().kill_grace
q = shlex.quote


# ---- server resources --------------------------------------------------------------


def warm_up(srv: ServerProcess) -> Usage:
    """Serve one session end to end (lazy imports, caches, the first thread
    of each kind), then measure what an idle server holds."""
    with connect(srv) as conn:
        assert conn.run("echo warm").stdout == b"warm\n"
    srv.wait_for_log(r"disconnected")
    return settled(srv.proc.pid)


def assert_back_to_baseline(srv: ServerProcess, baseline: Usage) -> None:
    """Within a bounded poll the server holds no more fds and threads than at
    ``baseline``, and it still serves."""
    pid = srv.proc.pid

    def recovered() -> bool:
        now = usage(pid)
        return now.fds <= baseline.fds and now.threads <= baseline.threads

    assert wait_until(recovered, CLEANUP_DEADLINE, interval=0.05), (
        f"server leaked: {usage(pid)} after the fault, {baseline} before"
    )
    assert srv.proc.poll() is None


# ---- children that misbehave ---------------------------------------------------------


def test_child_ignoring_sigterm_is_killed_after_the_grace(
    server: ServerProcess, stray: list[int]
) -> None:
    """A command that ignores SIGTERM and overruns its client timeout ends one
    kill grace after the limit, by SIGKILL, with 'timed out'; nothing survives."""
    baseline = warm_up(server)
    with connect(server) as conn:
        started = time.monotonic()
        result = conn.run("trap '' TERM; echo $$; sleep 30", timeout=1)
        elapsed = time.monotonic() - started
    pgid = int(result.stdout)
    stray.append(pgid)
    assert result.error is not None and "timed out" in result.error, result
    assert result.signal == signal.SIGKILL, result
    assert 1 + 0.8 * KILL_GRACE <= elapsed <= 1 + KILL_GRACE + 2, (
        f"ended {elapsed:.2f}s after start; limit 1s + grace {KILL_GRACE:g}s"
    )
    assert_group_ends(pgid)
    assert_back_to_baseline(server, baseline)


def audit_events(path: Path) -> list[dict[str, Any]]:
    """Every whole line of the audit log, parsed."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


@pytest.mark.parametrize("redirect", [" >/dev/null 2>&1 </dev/null", ""],
                         ids=["detached-io", "holds-pipes"])
def test_daemon_that_leaves_its_group_dies_with_the_session(
    start_server: Callable[..., ServerProcess], tmp_path: Path, stray: list[int], redirect: str
) -> None:
    """A command that starts a daemon in its own session returns promptly
    (even if the daemon holds its pipes); the daemon, out of killpg's reach,
    may live while the session does, and is killed when the connection closes,
    with a log line and an audit 'sweep' event naming it."""
    audit = tmp_path / "audit.jsonl"
    srv = start_server("--audit-log", str(audit))
    baseline = warm_up(srv)
    pidfile = tmp_path / "daemon.pid"
    daemon_script = f"{write_pid(pidfile)}; exec sleep 300"
    command = f"echo $$; setsid sh -c {q(daemon_script)}{redirect} & sleep 0.2"
    with connect(srv) as conn:
        started = time.monotonic()
        result = conn.run(command, timeout=10)
        elapsed = time.monotonic() - started
        assert (result.exit_code, result.error) == (0, None), result
        assert elapsed < 3, f"the command took {elapsed:.2f}s: the daemon held it up"
        daemon = read_pid(pidfile)
        stray.append(daemon)
        assert running(daemon), "the daemon must still run here for the test to prove the sweep"
        assert pgid_of(daemon) != int(result.stdout), "the daemon did not leave the group"
    assert wait_until(lambda: not running(daemon), CLEANUP_DEADLINE), (
        "the daemon outlived its session: " + describe([daemon])
    )
    srv.wait_for_log(r"left their command")

    def swept() -> bool:
        return any(e["event"] == "sweep" and daemon in e.get("pids", [])
                   for e in audit_events(audit))

    assert wait_until(swept, CLEANUP_DEADLINE), audit.read_text()
    assert_back_to_baseline(srv, baseline)


def test_child_closing_its_output_early_is_waited_for(server: ServerProcess) -> None:
    """EOF on both pipes is not the end of the command: the exit status comes
    when the process exits, neither before nor never."""
    baseline = warm_up(server)
    with connect(server) as conn:
        started = time.monotonic()
        result = conn.run("exec >&- 2>&-; sleep 1; exit 3", timeout=20)
        elapsed = time.monotonic() - started
    assert (result.exit_code, result.signal, result.stdout, result.stderr) == (3, None, b"", b"")
    assert 0.9 <= elapsed <= 1 + 2, f"exit reported after {elapsed:.2f}s of a 1s command"
    assert_back_to_baseline(server, baseline)


# ---- clients and networks that vanish --------------------------------------------------

#: Two sleepers in the shell's group, and the group id on stdout and in a file.
SLEEPERS = "sleep 300 & {write}; echo $$; sleep 300; wait"


def cut_raw_session(srv: ServerProcess, pidfile: Path, reset: bool) -> None:
    """Speak the protocol by hand, start the sleepers, then drop the socket
    without a word: FIN, or RST (SO_LINGER 0) like a cut network path."""
    with Wire(srv) as wire:
        wire.send(Hello())
        wire.expect(Welcome)
        wire.send(Run(SLEEPERS.format(write=write_pid(pidfile))))
        wire.expect(Stdout)
        read_pid(pidfile)
        if reset:
            wire.abort()


def kill_cli_mid_command(home: Path, srv: ServerProcess, pidfile: Path) -> None:
    proc = subprocess.Popen(
        [RSHELL, *CLIENT_MODE, srv.address, "-c", SLEEPERS.format(write=write_pid(pidfile))],
        env=base_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        read_pid(pidfile)
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.parametrize("how", ["cli-killed", "socket-closed", "socket-reset"])
def test_client_gone_mid_command_ends_the_process_group(
    home: Path, start_server: Callable[..., ServerProcess], tmp_path: Path,
    stray: list[int], how: str
) -> None:
    """However the client disappears mid-command (its process SIGKILLed, its
    socket closed or reset without a word), the command's whole group is
    terminated and reaped, and the server's fds and threads come back down."""
    # A raw client cannot sign; loopback --no-auth lets it speak the protocol.
    srv = start_server() if how == "cli-killed" else start_server("--no-auth")
    baseline = warm_up(srv)
    pidfile = tmp_path / "pgid"
    if how == "cli-killed":
        kill_cli_mid_command(home, srv, pidfile)
    else:
        cut_raw_session(srv, pidfile, reset=how == "socket-reset")
    pgid = int(pidfile.read_text())
    stray.append(pgid)
    assert_group_ends(pgid)
    srv.wait_for_log(r"error=connection ended")
    assert_back_to_baseline(srv, baseline)


# ---- a server that dies ------------------------------------------------------------------


def test_server_sigkill_mid_command(
    home: Path, start_server: Callable[..., ServerProcess], tmp_path: Path, stray: list[int]
) -> None:
    """SIGKILL to the server mid-command: the CLI ends at once with exit 255 and
    one line on stderr; the command, which nobody could stop, outlives the
    server, and the next server started on the same state kills it first
    thing.  A server on another state (another instance, another test run on
    this host) leaves it alone.  (The dead server's fds and threads died with it.)"""
    srv = start_server()
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(
        [RSHELL, *CLIENT_MODE, srv.address, "-c", f"{write_pid(pidfile)}; exec sleep 300"],
        env=base_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        sleeper = read_pid(pidfile)
        stray.append(sleeper)
        srv.proc.kill()
        killed = time.monotonic()
        srv.proc.wait(5)  # reaped, as an init system would: a zombie counts as alive
        out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 255, (proc.returncode, err)
    assert out == b""
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err.decode(), err
    assert elapsed < 3, f"the client took {elapsed:.2f}s to notice the server died"
    assert running(sleeper), "expected the command to outlive a SIGKILLed server"

    elsewhere = start_server("--state-dir", str(tmp_path / "another-state"))
    assert "left by a server that died" not in elsewhere.log, elsewhere.log
    assert running(sleeper), "a server on another state killed this state's orphan"
    again = start_server()
    found = again.wait_for_log(r"left by a server that died: \[([\d, ]*)\]")
    assert str(sleeper) in found.group(1).split(", "), found.group(0)
    assert wait_until(lambda: not running(sleeper), CLEANUP_DEADLINE), describe([sleeper])
    with connect(again) as conn:
        assert conn.run("echo fresh").stdout == b"fresh\n"


# ---- the audit trail ------------------------------------------------------------------------


def fingerprint(home: Path, path: Path) -> str:
    proc = cli(home, "fingerprint", str(path))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode().split()[1]


def wait_for_event(path: Path, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """All events, once one satisfies ``match``."""
    assert wait_until(lambda: any(match(e) for e in audit_events(path)), CLEANUP_DEADLINE), (
        path.read_text() if path.exists() else "no audit log"
    )
    return audit_events(path)


def test_audit_log_records_sessions_and_survives_sigkill(
    home: Path, start_server: Callable[..., ServerProcess], tmp_path: Path, stray: list[int]
) -> None:
    """--audit-log: one JSON object per line per event, in order, with the key
    fingerprint on authentication (ok or failed) and exit, signal, bytes and
    duration per command; each line is written at once, so a SIGKILLed server
    has already recorded the command it was running."""
    audit = tmp_path / "audit.jsonl"
    srv = start_server("--audit-log", str(audit))
    baseline = warm_up(srv)
    with connect(srv) as conn:
        assert conn.run("echo audited").exit_code == 0
        assert conn.run("echo oops >&2; exit 3").exit_code == 3
        audited = wait_for_event(audit, lambda e: e["event"] == "command-end")
    peer = next(e["peer"] for e in reversed(audited) if e["event"] == "connect")
    events = wait_for_event(audit, lambda e: e["event"] == "disconnect" and e["peer"] == peer)

    other = tmp_path / "stranger"
    made = cli(home, "keygen", "-f", str(other))
    assert made.returncode == 0, made.stderr
    refused = cli(home, srv.address, "-i", str(other), "-c", "echo must-not-run")
    assert refused.returncode == 255 and refused.stdout == b"", refused
    events = wait_for_event(audit, lambda e: e["event"] == "auth" and e["ok"] is False)

    session = [e for e in events if e.get("peer") == peer]
    assert [e["event"] for e in session] == [
        "connect", "auth", "command-start", "command-end", "command-start", "command-end",
        "disconnect",
    ], session
    auth, start1, end1, start2, end2 = session[1:6]
    assert auth["ok"] is True and auth["key"] == fingerprint(home, home / "id_ed25519")
    assert start1["command"] == "echo audited" and start2["command"] == "echo oops >&2; exit 3"
    assert (end1["exit_code"], end1["signal"], end1["stdout_bytes"], end1["stderr_bytes"]) == (
        0, None, len(b"audited\n"), 0)
    assert (end2["exit_code"], end2["signal"], end2["stdout_bytes"], end2["stderr_bytes"]) == (
        3, None, 0, len(b"oops\n"))
    assert all(isinstance(e["duration"], float) and e["duration"] >= 0 for e in (end1, end2))
    times = [e["time"] for e in session]
    assert times == sorted(times)

    failed = next(e for e in events if e["event"] == "auth" and e["ok"] is False)
    assert failed["key"] == fingerprint(home, other)
    stranger = [e["event"] for e in audit_events(audit) if e.get("peer") == failed["peer"]]
    assert stranger[:2] == ["connect", "auth"] and "command-start" not in stranger, stranger
    assert_back_to_baseline(srv, baseline)

    # SIGKILL mid-command: the command's start is already on disk, whole.
    with connect(srv) as conn:
        chunks, sleeper = first_pid(conn.stream("echo $$; exec sleep 300"))
        stray.append(sleeper)
        srv.proc.kill()
        srv.proc.wait(10)
    text = audit.read_text()
    assert text.endswith("\n"), "a torn last line"
    last = json.loads(text.splitlines()[-1])
    assert (last["event"], last["command"], last["pid"]) == (
        "command-start", "echo $$; exec sleep 300", sleeper), last
