"""The processes a benchmark starts, and what /proc says about them.

Owns: stopping a process by its own handle, bounded waits for a condition,
running a whole process and timing it, starting a helper that reports its
port, the descriptor limit, and the /proc readers (children, process tree,
RSS, PSS) the memory figure needs.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .core import BenchError


def stop_process(proc: subprocess.Popen[Any], grace: float) -> int | None:
    """End one process we started, by its own handle; never by name."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 10 ms until it holds; BenchError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def run_cli(argv: list[str], env: dict[str, str], what: str) -> float:
    """Run one process to completion; its wall time in seconds, or BenchError."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BenchError(f"{what}: `{' '.join(argv)}` exited {proc.returncode}"
                         + (f": {err[-1]}" if err else ""))
    return elapsed


def start_helper(argv: list[str], what: str) -> tuple[subprocess.Popen[str], int]:
    """Start a helper process that prints the port it listens on."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        stop_process(proc, 5.0)
        raise BenchError(f"{what} did not start (said {line!r})")
    return proc, int(line)


def raise_nofile(wanted: int) -> int:
    """Lift the soft RLIMIT_NOFILE towards ``wanted`` (up to the hard limit), so
    hundreds of sockets (and the children that inherit the limit) do not run
    out of descriptors; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


# ---- /proc ------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's), empty if it is gone."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children(current)
    return tree


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def vm_rss(pid: int) -> int:
    """Resident set size in bytes (``VmRSS`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages divided among their users),
    0 if the process is gone: what a set of forked processes really costs."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_pss(pid: int) -> tuple[int, int]:
    """Summed PSS of ``pid`` and its descendants, and how many processes."""
    tree = process_tree(pid)
    return sum(pss(p) for p in tree), len(tree)

