"""What bench.py, peers.py and load.py share: constants, the error a figure
fails with, process handling and /proc readers.

A module of its own so that the peers and the load worker need not import
bench.py (run as ``__main__``, importing it again would make a second copy,
with a second ``BenchError`` class that ``except`` clauses would not catch).
"""

from __future__ import annotations

import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
MiB = 1 << 20
GiB = 1 << 30


class BenchError(Exception):
    """A figure or a mode cannot be measured; the message says why."""


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def summarize(values: list[float]) -> dict[str, Any]:
    """Median and spread; p10/p90 are the inclusive deciles (min/max for n < 2)."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        deciles = statistics.quantiles(ordered, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = ordered[0]
    return {"median": statistics.median(ordered), "p10": p10, "p90": p90,
            "min": ordered[0], "max": ordered[-1], "n": len(ordered), "samples": values}


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

