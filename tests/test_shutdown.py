"""Graceful shutdown (SPEC §3): on SIGTERM, SIGINT or SIGHUP the server stops accepting,
lets running commands finish within --shutdown-grace, then terminates them
(process group and all), closes idle sessions and exits 0.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rshell import RshellError
from tests.conftest import CLIENT_MODE, RSHELL, ServerProcess, base_env, connect
from tests.support.procs import (
    first_pid,
    group_members,
    kill_group,
    pid_gone,
    read_pid,
    wait_until,
    write_pid,
)

#: How long a clean shutdown may take beyond the grace it was given.
EXIT_DEADLINE = 10.0


def refuses_connections(srv: ServerProcess) -> bool:
    """True when a TCP connect to the server's port is refused (or reset while
    the listener closes under it): nobody accepts there any more."""
    try:
        probe = socket.create_connection(("127.0.0.1", srv.port), timeout=1)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    probe.close()
    return False


def wait_exit(srv: ServerProcess, timeout: float = EXIT_DEADLINE) -> int:
    """The server's exit status, without signalling it again."""
    try:
        return srv.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("server did not exit; log:\n" + srv.log) from None


def test_sigterm_lets_running_command_finish(server: ServerProcess) -> None:
    """SIGTERM closes the door but not the room: the listeners close first (by
    the time the stop is logged, a new connection is refused by the kernel,
    never accepted, answered or run), the running command completes with its
    output and exit status, idle sessions are closed, and the server exits 0."""
    idle = connect(server)
    busy = connect(server)
    try:
        stream = busy.stream("echo started; sleep 2; echo done")
        chunks = iter(stream)
        assert next(chunks) == ("stdout", b"started\n")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_log(r"SIGTERM received: shutting down")
        assert refuses_connections(server), "a connection was accepted after the stop began"
        assert server.proc.poll() is None, "exited without waiting for the running command"
        rest = list(chunks)
        assert rest == [("stdout", b"done\n")]
        result = stream.result
        assert result is not None
        assert (result.exit_code, result.signal, result.error) == (0, None, None)
        assert wait_exit(server) == 0
        assert server.stop() == 0
        with pytest.raises(RshellError):
            idle.run("echo too late")
    finally:
        idle.close()
        busy.close()
    server.wait_for_log(r"disconnected", timeout=1)


def test_sigterm_grace_expires_and_command_is_terminated(start_server: Any) -> None:
    """A command that outlives --shutdown-grace is terminated with its whole
    process group; the client learns why, and the server still exits 0."""
    srv: ServerProcess = start_server("--shutdown-grace", "1")
    outcome: list[object] = []
    with connect(srv) as conn:
        stream = conn.stream("sleep 300 & echo $$; sleep 300; wait")
        chunks, pgid = first_pid(stream)
        try:
            assert wait_until(lambda: len(group_members(pgid)) >= 3, 10)

            def drain() -> None:
                try:
                    outcome.extend([list(chunks), stream.result])
                except RshellError as exc:
                    outcome.append(exc)

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            started = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            reader.join(EXIT_DEADLINE)
            elapsed = time.monotonic() - started
            assert not reader.is_alive(), "the command outlived the shutdown grace"
            assert 0.8 <= elapsed <= 1 + 5, f"ended {elapsed:.2f}s after SIGTERM, grace 1s"
            # The session reports the stop as a command error before closing.
            assert len(outcome) == 2 and outcome[0] == [], outcome
            assert getattr(outcome[1], "error", None) == "server shutting down", outcome
            assert wait_exit(srv) == 0
            assert wait_until(lambda: not group_members(pgid), 5), "survived the shutdown"
            assert wait_until(lambda: pid_gone(pgid), 5), "the shell was never reaped"
        finally:
            survivors = kill_group(pgid)
    assert survivors == "none", survivors


def test_sigterm_is_honoured_while_connections_arrive(start_server: Any) -> None:
    """A SIGTERM that lands while the server is busy (a command running, an idle
    session, new connections coming in) must still start the shutdown: a daemon
    that misses its stop signal gets SIGKILLed by its init system mid-command.
    The race is timing-dependent, so it is tried on several fresh servers."""
    for attempt in range(15):
        srv: ServerProcess = start_server("--shutdown-grace", "0")
        with connect(srv), connect(srv) as busy:
            chunks = iter(busy.stream("echo started; sleep 10"))
            assert next(chunks) == ("stdout", b"started\n")
            srv.proc.send_signal(signal.SIGTERM)
            refused = wait_until(functools.partial(refuses_connections, srv), 3, interval=0.05)
            assert refused, f"attempt {attempt}: SIGTERM missed while connections arrived"
        assert wait_exit(srv) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_server_exits_zero_promptly(server: ServerProcess, sig: signal.Signals) -> None:
    """With only idle sessions there is nothing to wait for: a prompt exit 0,
    whichever of the two signals an init system or a terminal sends."""
    idle = connect(server)
    try:
        started = time.monotonic()
        server.proc.send_signal(sig)
        assert wait_exit(server, 5) == 0
        assert time.monotonic() - started < 3
        with pytest.raises(RshellError):
            idle.run("echo too late")
    finally:
        idle.close()


def test_sighup_is_a_graceful_stop(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    """A hang-up (closed terminal) lets the running command finish and deliver
    its output, then the server exits 0 and leaves no process behind."""
    pidfile = tmp_path / "pid"
    client = subprocess.Popen(
        [RSHELL, *CLIENT_MODE, server.address, "-c",
         f"{write_pid(pidfile)}; sleep 1; echo done"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=base_env(home),
    )
    try:
        pgid = read_pid(pidfile)
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log(r"SIGHUP received: shutting down")
        out, err = client.communicate(timeout=15)
        assert wait_exit(server, 15) == 0, server.log
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert out == b"done\n", err
    assert client.returncode == 0, err
    # Checked at once: a server that has exited has nothing left to clean up.
    assert not group_members(pgid), kill_group(pgid)
    assert pid_gone(pgid)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_kill_grace_after_shutdown_does_not_spin(start_server: Any) -> None:
    """A command that ignores SIGTERM is SIGKILLed a second after the shutdown
    grace; the session waits for that second on its timer, not in a busy loop
    (a spent shutdown deadline once made every poll return at once)."""
    srv: ServerProcess = start_server("--shutdown-grace", "0.2")
    with connect(srv) as conn:
        # Kept: a dropped iterator would abandon the command (and close the connection).
        _running, pgid = first_pid(conn.stream("trap '' TERM; echo $$; sleep 300"))
        try:
            before = _cpu_seconds(srv.proc.pid)
            started = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            assert wait_until(lambda: not group_members(pgid), EXIT_DEADLINE)
            spent = _cpu_seconds(srv.proc.pid) - before
            elapsed = time.monotonic() - started
            assert elapsed >= 1.0, f"SIGKILL came {elapsed:.2f}s after SIGTERM, before the grace"
            assert spent < 0.5, f"the server used {spent:.2f}s of CPU in {elapsed:.2f}s of waiting"
            assert wait_exit(srv) == 0
        finally:
            survivors = kill_group(pgid)
    assert survivors == "none", survivors
