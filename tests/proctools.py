"""Helpers for tests that must prove remote processes are gone: bounded polling
and a /proc scan by process group (the server starts every command as the
leader of its own group, so the group id is the remote shell's ``$$``).

Linux only, like the server's pidfd-based process handling.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; its last verdict."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return bool(condition())
        time.sleep(interval)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid`` from /proc, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is parenthesised and may hold spaces: split after it.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``.

    Zombies are left out: an orphan reparented to PID 1 is that process's to
    reap, and a zombie runs nothing.  The group leader itself is a child of
    the server, whose reaping ``pid_gone`` checks separately.
    """
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        info = _stat(int(name))
        if info is not None and info[1] == pgid and info[0] != "Z":
            members.append(int(name))
    return members


def pid_gone(pid: int) -> bool:
    """True once ``pid`` no longer exists at all, not even as a zombie."""
    return _stat(pid) is None


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


def first_pid(stream: Iterable[tuple[str, bytes]]) -> tuple[Iterator[tuple[str, bytes]], int]:
    """For a command that prints a pid first (``echo $$; ...``): the chunks
    still to come, and that pid (its process group, for a command's shell)."""
    chunks = iter(stream)
    kind, first = next(chunks)
    assert kind == "stdout", (kind, first)
    return chunks, int(first)
