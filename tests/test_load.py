"""Load: 200 concurrent authenticated TLS connections to one real
``rshell-server`` on loopback, each running a mix of commands whose every byte
is checked.

Why: a server with a thread per connection has to prove it keeps every
session's bytes apart and complete when many run at once -- zero lost, zero
corrupted, zero hung -- and gives its threads back afterwards.  Connections
are ramped in (TLS handshakes are CPU-bound and the CI machine has two cores),
then all of them hold a session open at the same time (a barrier) before any
command runs.  Every wait is bounded: connect and command timeouts, a barrier
timeout, a deadline on the whole run.

Figures (``load.json``, tests/figures.py): commands/s, p50/p99 command
latency, bytes checked, and the server's peak RSS and thread count, sampled
from /proc every 50 ms.  ``RSHELL_SOAK=N`` runs N rounds of the command mix
per connection (the connection count stays 200: concurrency is the point).
"""

from __future__ import annotations

import functools
import hashlib
import random
import shlex
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rshell
from tests.conftest import ServerProcess, connect
from tests.figures import proc_status, soak, thread_count, write_figures
from tests.proctools import wait_until

CLIENTS = 200
ROUNDS = max(1, round(soak()))
#: TLS handshakes in flight at once while connections ramp in.
RAMP = 8
CONNECT_TIMEOUT = 30.0
#: Per command; the client gives up 5 s past it (Connection.run's backstop).
COMMAND_TIMEOUT = 30.0
#: Everything, ramp included; far above the ~20 s a CI run takes.
RUN_DEADLINE = 120.0 * ROUNDS
SAMPLE_EVERY = 0.05
SETTLE = 20.0
KIB = 1024


@functools.cache
def seq_output(prefix: str, lines: int) -> bytes:
    """What ``seq -f PREFIX-%g 1 LINES`` prints (integers stay plain below 1e6)."""
    assert lines < 1_000_000
    return "".join(f"{prefix}-{k}\n" for k in range(1, lines + 1)).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Command:
    """One command of the mix and everything its result must be."""

    name: str
    command: str
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    error: str | None = None
    stdin: bytes | None = None
    env: dict[str, str] | None = None
    cwd_after: str | None = None  # the session directory the Exit must report


def mix(i: int, r: int, workdir: Path, home: str) -> list[Command]:
    """Ten commands for connection ``i``, round ``r``; tokens make any cross-talk
    between sessions visible."""
    tok = f"c{i}r{r}"
    rng = random.Random(f"load:{i}:{r}")
    big_lines = rng.randrange(64 * KIB, 1024 * KIB) // (len(tok) + 7)
    small = rng.randrange(4 * KIB, 256 * KIB)
    yes_bytes = 64 * KIB + rng.randrange(64 * KIB)
    code = 1 + (i + r) % 100
    return [
        Command("echo", f"echo {tok}", stdout=f"{tok}\n".encode()),
        Command("big", f"seq -f '{tok}-%g' 1 {big_lines}", stdout=seq_output(tok, big_lines)),
        Command("cat", "cat", stdin=(stdin := rng.randbytes(small)), stdout=stdin),
        Command("exit", f"exit {code}", exit_code=code, error=f"exit status {code} with no output"),
        Command("streams", f"printf {tok}-out; printf {tok}-err >&2",
                stdout=f"{tok}-out".encode(), stderr=f"{tok}-err".encode()),
        Command("env", 'printf %s "$LOAD_TOKEN"', env={"LOAD_TOKEN": tok},
                stdout=tok.encode()),
        Command("yes", f"yes {tok} | head -c {yes_bytes}",
                stdout=((tok + "\n") * (yes_bytes // len(tok) + 1)).encode()[:yes_bytes]),
        Command("cd", f"cd {shlex.quote(str(workdir))}", cwd_after=str(workdir)),
        Command("pwd", "pwd", stdout=f"{workdir}\n".encode(), cwd_after=str(workdir)),
        Command("cd-home", "cd", cwd_after=home),
    ]


@dataclass
class Tally:
    """What the client threads report, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    connected: int = 0
    served: int = 0  # connections whose every command checked out
    commands: int = 0
    bytes_expected: int = 0
    bytes_received: int = 0
    corrupted: int = 0
    hung: int = 0
    first_start: float = float("inf")
    last_end: float = 0.0

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def check(cmd: Command, result: rshell.Result, cwd: str) -> str | None:
    """None if the result is exactly what ``cmd`` must produce, else why not."""
    if result.stdout != cmd.stdout:
        return (f"stdout {len(result.stdout)}B sha {sha(result.stdout)[:12]}, expected "
                f"{len(cmd.stdout)}B sha {sha(cmd.stdout)[:12]}")
    if result.stderr != cmd.stderr:
        return f"stderr {result.stderr[:100]!r}, expected {cmd.stderr!r}"
    if (result.exit_code, result.signal, result.error) != (cmd.exit_code, None, cmd.error):
        return f"exit {result.exit_code}/{result.signal}/{result.error!r}, expected {cmd.exit_code}"
    if cmd.cwd_after is not None and cwd != cmd.cwd_after:
        return f"session cwd {cwd!r}, expected {cmd.cwd_after!r}"
    return None


def client(i: int, server: ServerProcess, tmp_path: Path, ramp: threading.Semaphore,
           barrier: threading.Barrier, tally: Tally) -> None:
    """Connect (ramped), wait for every other client, run ROUNDS x the mix."""
    workdir = tmp_path / f"client-{i}"
    workdir.mkdir()
    try:
        with ramp:
            conn = connect(server, connect_timeout=CONNECT_TIMEOUT)
    except Exception as exc:  # reported; the barrier must not wait for us
        barrier.abort()
        tally.fail(f"client {i}: connect: {type(exc).__name__}: {exc}")
        return
    with conn:
        with tally.lock:
            tally.connected += 1
        try:
            barrier.wait(timeout=RUN_DEADLINE / 2)
        except threading.BrokenBarrierError:
            tally.fail(f"client {i}: not all {CLIENTS} clients connected")
            return
        ok = True
        for r in range(ROUNDS):
            for cmd in mix(i, r, workdir, conn.home):
                started = time.perf_counter()
                try:
                    result = conn.run(cmd.command, stdin=cmd.stdin, env=cmd.env,
                                      timeout=COMMAND_TIMEOUT)
                except (rshell.CommandTimeout, rshell.ConnectionFailed) as exc:
                    with tally.lock:
                        tally.hung += 1
                    tally.fail(f"client {i} {cmd.name}: {type(exc).__name__}: {exc}")
                    return
                ended = time.perf_counter()
                problem = check(cmd, result, conn.cwd)
                with tally.lock:
                    tally.commands += 1
                    tally.latencies.append(ended - started)
                    tally.first_start = min(tally.first_start, started)
                    tally.last_end = max(tally.last_end, ended)
                    tally.bytes_expected += len(cmd.stdout) + len(cmd.stderr)
                    tally.bytes_received += len(result.stdout) + len(result.stderr)
                    if problem is not None:
                        tally.corrupted += 1
                if problem is not None:
                    ok = False
                    tally.fail(f"client {i} {cmd.name} ({cmd.command[:60]!r}): {problem}")
        if ok:
            with tally.lock:
                tally.served += 1


class Sampler:
    """Peak RSS and thread count of a process, from /proc every SAMPLE_EVERY s."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self.peak_threads = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                status = proc_status(self.pid)
            except (OSError, AssertionError):
                return  # the process is gone: the test reports that itself
            self.peak_rss = max(self.peak_rss, status["VmHWM"], status["VmRSS"])
            self.peak_threads = max(self.peak_threads, status["Threads"])
            self.samples += 1
            if self._stop.wait(SAMPLE_EVERY):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def run_clients(target: Callable[[int], None], deadline: float) -> list[str]:
    """Start CLIENTS threads on ``target``; names of those still alive at ``deadline``."""
    threads = [threading.Thread(target=target, args=(i,), name=f"load-{i}", daemon=True)
               for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threads if t.is_alive()]


def test_load_200_concurrent_connections(start_server: Any, tmp_path: Path) -> None:
    """200 sessions at once, ten checked commands each: zero errors, every
    connection served, and the server's threads back to baseline after."""
    server: ServerProcess = start_server("--max-connections", "300",
                                         "--max-unauthenticated", "300")
    pid = server.proc.pid
    threads_base = thread_count(pid)
    tally = Tally()
    ramp = threading.Semaphore(RAMP)
    barrier = threading.Barrier(CLIENTS)
    started = time.monotonic()
    with Sampler(pid) as sampler:
        hung_threads = run_clients(
            lambda i: client(i, server, tmp_path, ramp, barrier, tally),
            started + RUN_DEADLINE)
    elapsed = time.monotonic() - started
    alive = server.proc.poll() is None
    settled = alive and wait_until(lambda: thread_count(pid) <= threads_base, SETTLE, 0.1)
    threads_after = thread_count(pid) if alive else -1
    log = server.log

    window = max(tally.last_end - tally.first_start, 1e-9)
    lat = sorted(tally.latencies)
    figures: dict[str, Any] = {
        "soak": soak(), "clients": CLIENTS, "rounds": ROUNDS, "commands_per_round": 10,
        "connected": tally.connected, "connections_served": tally.served,
        "commands": tally.commands, "seconds_total": round(elapsed, 2),
        "seconds_commands": round(window, 2),
        "commands_per_second": round(tally.commands / window, 1),
        "latency_ms": {"p50": round(percentile(lat, 50) * 1000, 2),
                       "p99": round(percentile(lat, 99) * 1000, 2),
                       "max": round((lat[-1] if lat else 0) * 1000, 2)},
        "bytes_expected": tally.bytes_expected, "bytes_received": tally.bytes_received,
        "bytes_lost": tally.bytes_expected - tally.bytes_received,
        "corrupted": tally.corrupted, "hung": tally.hung + len(hung_threads),
        "errors": len(tally.failures),
        "server": {"peak_rss_bytes": sampler.peak_rss, "peak_threads": sampler.peak_threads,
                   "threads_baseline": threads_base, "threads_after": threads_after,
                   "samples": sampler.samples},
    }
    path = write_figures("load.json", figures)
    print(f"\nload: {tally.served}/{CLIENTS} connections, {tally.commands} commands in "
          f"{window:.1f}s = {figures['commands_per_second']}/s, p50 "
          f"{figures['latency_ms']['p50']} ms p99 {figures['latency_ms']['p99']} ms, "
          f"{tally.bytes_received} bytes checked, errors {len(tally.failures)}, server peak "
          f"RSS {sampler.peak_rss / 2**20:.0f} MiB threads {sampler.peak_threads} "
          f"(baseline {threads_base}, after {threads_after}) -> {path}")

    assert alive, "the server died:\n" + log[-3000:]
    assert not hung_threads, f"{len(hung_threads)} client(s) still running at the deadline"
    assert not tally.failures, (f"{len(tally.failures)} error(s):\n"
                                + "\n".join(tally.failures[:20]))
    assert tally.served == CLIENTS and tally.commands == CLIENTS * ROUNDS * 10, figures
    assert tally.bytes_received == tally.bytes_expected, figures
    assert sampler.peak_threads >= CLIENTS + threads_base, (
        f"peak of {sampler.peak_threads} server threads: the {CLIENTS} sessions never "
        "overlapped")
    assert "Traceback" not in log, log[-3000:]
    assert settled, f"server threads {threads_base} -> {threads_after} after {SETTLE}s"
