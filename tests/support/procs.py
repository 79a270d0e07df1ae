"""Processes, from the outside: bounded polls, a /proc scan by process group
(the server starts every command as the leader of its own group, so the
group id is the remote shell's ``$$``), pid files a remote command writes,
and what /proc says about a process's descriptors, threads and memory.

Linux only, like the server's pidfd-based process handling.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: How long a server may take to end, reap and forget a command's processes.
CLEANUP_DEADLINE = 10.0


# ---- polls ------------------------------------------------------------------------


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; its last verdict."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return bool(condition())
        time.sleep(interval)


def plateau(sample: Callable[[], T], still: float = 0.3, timeout: float = CLEANUP_DEADLINE,
            ) -> T | None:
    """The value ``sample`` settles at (unchanged for ``still`` seconds), or None
    if it keeps changing for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    value, since = sample(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = sample()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return value
    return None


# ---- process groups ----------------------------------------------------------------


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (state, ppid, pgrp, ...), None once gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is parenthesised and may hold spaces: split after it.
    return raw[raw.rindex(b")") + 2 :].decode().split()


def asleep_in_select(pid: int) -> bool:
    """``pid`` is blocked in select/poll (readline waiting for a key, say).

    CPython's readline checks for signals only when its select() is
    interrupted: a Ctrl-C that lands between one key's echo and the next
    select() is noticed only at the next key.  A human never types that fast;
    a test must wait for this before pressing Ctrl-C at a prompt."""
    fields = stat_fields(pid)
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
    return fields is not None and fields[0] == "S" and ("select" in wchan or "poll" in wchan)


def signal_pending(pid: int, signum: int) -> bool:
    """``signum`` sent to ``pid`` and not yet delivered (thread or process wide)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    masks = re.findall(r"^(?:SigPnd|ShdPnd):\s+([0-9a-f]+)", text, re.M)
    return any(int(mask, 16) & (1 << (signum - 1)) for mask in masks)


def handled(pid: int, signum: int, timeout: float = 5) -> None:
    """Wait until ``signum`` was delivered to ``pid`` and its Python handler
    has run (the process sleeps in select/poll again): a second signal sent
    sooner could merge with the first.  For a signal sent with kill(): a
    terminal's key becomes a signal only later (wait for its echo first)."""
    assert wait_until(lambda: not signal_pending(pid, signum), timeout), "never delivered"
    assert wait_until(lambda: asleep_in_select(pid), timeout), "never back to its wait"


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie is its new parent's to reap)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def pgid_of(pid: int) -> int:
    fields = stat_fields(pid)
    assert fields is not None, f"{pid} is gone"
    return int(fields[2])


def _pids() -> Iterator[int]:
    return (int(name) for name in os.listdir("/proc") if name.isdigit())


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``.

    Zombies are left out: an orphan reparented to PID 1 is that process's to
    reap, and a zombie runs nothing.  The group leader itself is a child of
    the server, whose reaping ``pid_gone`` checks separately.
    """
    members = []
    for pid in _pids():
        fields = stat_fields(pid)
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(pid)
    return members


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (zombies included: they are unreaped)."""
    found = []
    for child in _pids():
        fields = stat_fields(child)
        if fields is not None and int(fields[1]) == pid:
            found.append(child)
    return found


def pid_gone(pid: int) -> bool:
    """True once ``pid`` no longer exists at all, not even as a zombie."""
    return stat_fields(pid) is None


def describe(pids: list[int]) -> str:
    """``pid:cmdline`` for each pid, for assertion messages."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        out.append(f"{pid}:{cmd}")
    return ", ".join(out) or "none"


def kill_group(pgid: int) -> str:
    """SIGKILL whatever still lives in ``pgid`` (cleanup after a failed check,
    so a buggy server leaves no sleepers behind); ``describe`` of what it found."""
    survivors = group_members(pgid)
    found = describe(survivors)
    if survivors:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return found


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def assert_group_ends(pgid: int, timeout: float = CLEANUP_DEADLINE) -> None:
    """Every process of the group is gone, and the leader has been reaped."""
    if not wait_until(lambda: not group_members(pgid), timeout):
        raise AssertionError("remote processes survived: " + kill_group(pgid))
    assert wait_until(lambda: pid_gone(pgid), timeout), "the leader was never reaped"


def started_by_rshell(pid: int) -> bool:
    """True if ``pid`` runs with a server's session marker in its environment
    (so cleanup never kills a stranger that inherited a recycled pid)."""
    try:
        return b"RSHELL_SESSION=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


# ---- pids a remote command reports ------------------------------------------------------


def first_pid(stream: Iterable[tuple[str, bytes]]) -> tuple[Iterator[tuple[str, bytes]], int]:
    """For a command that prints a pid first (``echo $$; ...``): the chunks
    still to come, and that pid (its process group, for a command's shell)."""
    chunks = iter(stream)
    kind, first = next(chunks)
    assert kind == "stdout", (kind, first)
    return chunks, int(first)


def write_pid(path: Path) -> str:
    """Shell text that writes ``$$`` to ``path`` atomically (never half a number)."""
    tmp = shlex.quote(f"{path}.tmp")
    return f"echo $$ > {tmp} && mv {tmp} {shlex.quote(str(path))}"


def read_pid(path: Path, timeout: float = 10) -> int:
    """The pid a remote command wrote to ``path`` (with ``write_pid``, or any
    way that leaves a whole number)."""
    def written() -> bool:
        try:
            return path.read_text().strip().isdigit()
        except FileNotFoundError:
            return False

    assert wait_until(written, timeout), f"{path} never got a pid: the command never ran"
    return int(path.read_text())


# ---- a process's resources ---------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """Threads, VmRSS and VmHWM (bytes) of ``pid`` from /proc/PID/status."""
    text = Path(f"/proc/{pid}/status").read_text()
    out = {}
    for key in ("Threads", "VmRSS", "VmHWM"):
        match = re.search(rf"^{key}:\s+(\d+)", text, re.M)
        assert match, f"no {key} in /proc/{pid}/status"
        out[key] = int(match.group(1)) * (1024 if key.startswith("Vm") else 1)
    return out


def thread_count(pid: int) -> int:
    return proc_status(pid)["Threads"]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> list[str]:
    """What each open descriptor of ``pid`` points at, for assertion messages."""
    out = []
    for name in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{name}->{os.readlink(f'/proc/{pid}/fd/{name}')}")
        except OSError:
            pass  # closed while we looked
    return out


@dataclass(frozen=True)
class Usage:
    """What a server process holds: open descriptors and threads."""

    fds: int
    threads: int


def usage(pid: int) -> Usage:
    return Usage(fd_count(pid), thread_count(pid))


def settled(pid: int, still: float = 0.3, timeout: float = CLEANUP_DEADLINE) -> Usage:
    """``usage`` once it has stopped changing for ``still`` seconds."""
    found = plateau(lambda: usage(pid), still, timeout)
    if found is None:
        raise AssertionError(f"resources of {pid} never settled: last {usage(pid)}")
    return found
