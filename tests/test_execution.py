"""Starting a command when the system says no: the command fails, the session
and the server do not, and nothing is left behind (no descriptor, no process).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from rshell.exec.child import Child, StartError
from tests.conftest import ServerProcess, connect
from tests.proctools import first_pid, group_members, pid_gone, wait_until


def open_fds() -> set[int]:
    """This process's descriptors, once garbage left by earlier tests (a socket
    or epoll object nobody closed) is collected: only Child's count here."""
    import gc

    gc.collect()
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_no_descriptors_left_is_a_start_error() -> None:
    """With the descriptor limit reached between the pipes, Child raises
    StartError (a command error, Exit 127), and closes the pipe it had made."""
    code = r"""
import os, resource, sys
from rshell.exec.child import Child, StartError
before = set(os.listdir("/proc/self/fd"))
free = os.dup(0)  # the lowest free descriptor number
os.close(free)
resource.setrlimit(resource.RLIMIT_NOFILE, (free + 3, free + 3))  # room for one pipe only
try:
    Child("true")
except StartError as exc:
    print("StartError:", exc)
after = set(os.listdir("/proc/self/fd"))
print("leaked:", sorted(after - before))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert "StartError: cannot start: Too many open files" in out, out
    assert "leaked: []" in out, out


def test_a_started_child_that_cannot_be_watched_is_killed_and_reaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the pidfd cannot be had after the spawn (EMFILE, faked: it cannot be
    provoked at exactly that point), the command is killed and reaped at once
    rather than left running unwatched, and no descriptor leaks."""
    spawned: list[int] = []
    real_spawn = os.posix_spawn

    def spy(*args: Any, **kwargs: Any) -> int:
        pid = real_spawn(*args, **kwargs)
        spawned.append(pid)
        return pid

    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "posix_spawn", spy)
    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    before = open_fds()
    with pytest.raises(StartError, match="cannot start: Too many open files"):
        Child("sleep 30", stdin=True)
    monkeypatch.undo()
    assert len(spawned) == 1
    assert pid_gone(spawned[0]), "the command was left running"
    with pytest.raises(ChildProcessError):
        os.waitpid(spawned[0], os.WNOHANG)  # already reaped: no zombie left
    assert open_fds() == before


def test_server_started_with_sigchld_ignored_still_reports_exit_codes(
    start_server: Any,
) -> None:
    """An ignored SIGCHLD is inherited across exec; the server resets it, or
    the kernel would reap every command before the server could ask."""
    ignore_sigchld = [sys.executable, "-c",
                      "import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
                      "os.execv(sys.argv[1], sys.argv[1:])"]
    srv: ServerProcess = start_server(launcher=ignore_sigchld)
    with connect(srv) as conn:
        assert conn.run("exit 3").exit_code == 3
        assert conn.run("true").exit_code == 0
    assert wait_until(lambda: srv.proc.poll() is None, 1)


def _killed_or_gone(pid: int) -> bool:
    """True if ``pid`` is gone, dead, or has SIGKILL pending (sent, not yet acted on)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except FileNotFoundError:
        return True
    if status["State"].split()[0] in ("Z", "X"):
        return True
    kill_bit = 1 << (9 - 1)
    return any(int(status[mask], 16) & kill_bit for mask in ("SigPnd", "ShdPnd"))


def test_a_stopped_commands_stragglers_are_killed_before_its_exit(server: ServerProcess) -> None:
    """PROTOCOL.md 7.6: when a command is stopped (here by its timeout), what is
    left of its group is SIGKILLed before Exit is sent, so the client never
    hears that a command is over while part of it still runs."""
    command = ("sh -c 'trap \"\" TERM; echo $$; exec sleep 30 >/dev/null 2>&1' & "
               "sleep 30")
    with connect(server) as conn:
        stream = conn.stream(command, timeout=0.5)
        chunks, straggler = first_pid(stream)
        assert list(chunks) == []
        assert stream.result is not None and stream.result.error == "timed out after 0.5 s"
        assert _killed_or_gone(straggler), f"{straggler} was still running when Exit came"
    assert wait_until(lambda: pid_gone(straggler), 5)


def test_a_timeout_stops_a_background_job_the_leader_left_running(
    start_server: Any,
) -> None:
    """The leader exits at once, a background job of its group keeps writing:
    the command still times out, the job is stopped, and the client hears
    the timeout, not its own deadline."""
    srv: ServerProcess = start_server("--timeout", "1")
    with connect(srv) as conn:
        started = time.monotonic()
        result = conn.run("echo $$; (while :; do echo x; sleep 0.1; done) & exit 0", timeout=10)
        elapsed = time.monotonic() - started
    assert result.error == "timed out after 1 s", result
    assert elapsed < 4, f"took {elapsed:.1f}s: the writer kept the command alive"
    leader = int(result.stdout.split()[0])
    assert wait_until(lambda: not group_members(leader), 5), "the background job survived"
