"""Client load driven from a process of its own, one JSON line on stdout.

Mode all starts one of these per sample, for rshell and for each SSH peer
alike, so that every side's client starts from the same fresh state and
none shares the measuring process (its GIL, its event loop, its garbage).
Run from benchmarks/:

    python -m rshell_bench.load run  --peer rshell|paramiko|asyncssh --address H:P \
        --conns 50 --commands 20
    python -m rshell_bench.load hold --peer rshell|asyncssh --address H:P --conns 200

``run`` (the concurrency figure): ``--conns`` clients at once, each its own
connection running ``true`` ``--commands`` times in a row; timed inside this
process (imports done) from the start signal (connects included) to the
last result.  rshell and paramiko: one thread per connection (each its own
``rshell.connect`` / ``SSHClient``); asyncssh: every connection on one event
loop, as it is meant to be used.  A command counts as an error when its exit
status is not 0 or it raised; when a connection fails, its remaining
commands count as errors too, so ok + errors is always conns x commands.

``hold`` (the memory figure): open ``--conns`` authenticated connections, run
``true`` once on each, print ``{"ready": true, ...}``, then keep them all
open until stdin reaches EOF, and close them.

rshell reads its key and pinned host keys from ``RSHELL_HOME``; the SSH
peers take ``--key`` and ``--known-hosts``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core import BenchError
from .peers import asyncssh_connect, import_asyncssh, ssh_client, ssh_exec
from .procs import raise_nofile

#: Error messages kept as examples in the output (the count is always exact).
EXAMPLES = 5


@dataclass
class Tally:
    """What one connection (or all of them) got."""

    ok: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)
    connect_s: list[float] = field(default_factory=list)

    def fail(self, count: int, what: str) -> None:
        self.errors += count
        if len(self.examples) < EXAMPLES and what not in self.examples:
            self.examples.append(what)

    def add(self, other: Tally) -> None:
        self.ok += other.ok
        self.errors += other.errors
        self.connect_s += other.connect_s
        for what in other.examples:
            self.fail(0, what)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


# ---- run: the concurrency figure --------------------------------------------------------


class Client:
    """One blocking connection of a threaded peer: open, run ``true`` (its
    exit status), close."""

    def __init__(self, peer: str, args: argparse.Namespace) -> None:
        self.peer, self.args = peer, args
        if peer == "rshell":
            import rshell

            self._connect: Callable[..., Any] = rshell.connect

    def open(self) -> Any:
        if self.peer == "rshell":
            return self._connect(self.args.address, connect_timeout=60.0)
        return ssh_client(self.args.address, self.args.key, "sshd",
                          known_hosts=self.args.known_hosts)

    def true(self, conn: Any) -> tuple[int, str]:
        if self.peer == "rshell":
            result = conn.run("true")
            return result.exit_status, result.error or ""
        return ssh_exec(conn, "true"), ""

    @staticmethod
    def close(conn: Any) -> None:
        conn.close()


def run_threads(args: argparse.Namespace) -> dict[str, Any]:
    """One thread per connection, all released at once by one event."""
    client = Client(args.peer, args)
    go = threading.Event()
    tallies = [Tally() for _ in range(args.conns)]
    ends = [0.0] * args.conns

    def worker(i: int) -> None:
        tally = tallies[i]
        go.wait()
        t0 = time.perf_counter()
        done = 0
        try:
            conn = client.open()
            tally.connect_s.append(time.perf_counter() - t0)
            try:
                while done < args.commands:
                    status, error = client.true(conn)
                    done += 1
                    if status == 0:
                        tally.ok += 1
                    else:
                        tally.fail(1, f"exit status {status} {error}".strip())
            finally:
                ends[i] = time.perf_counter()
                client.close(conn)
        except Exception as exc:  # a failed connect or command: the rest are errors
            tally.fail(args.commands - done, describe(exc))
            ends[i] = ends[i] or time.perf_counter()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(args.conns)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    go.set()
    deadline = start + args.timeout
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    hung = sum(t.is_alive() for t in threads)
    total = combine(args, tallies, hung)
    end = time.perf_counter() if hung else max(ends)
    return summary(args, total, end - start, hung)


def run_asyncssh(args: argparse.Namespace) -> dict[str, Any]:
    """Every connection a task on one event loop, all started at once."""
    asyncssh = import_asyncssh()

    ends: list[float] = []

    async def one(tally: Tally) -> None:
        t0 = time.perf_counter()
        done = 0
        try:
            conn = await asyncssh_connect(args.address, args.key, args.known_hosts)
            tally.connect_s.append(time.perf_counter() - t0)
            try:
                while done < args.commands:
                    result = await conn.run("true")
                    done += 1
                    if result.exit_status == 0:
                        tally.ok += 1
                    else:
                        tally.fail(1, f"exit status {result.exit_status}")
            finally:
                ends.append(time.perf_counter())
                conn.close()
                await conn.wait_closed()
        except (TimeoutError, OSError, asyncssh.Error, BenchError) as exc:
            tally.fail(args.commands - done, describe(exc))
            ends.append(time.perf_counter())

    async def main() -> tuple[Tally, float, int]:
        tallies = [Tally() for _ in range(args.conns)]
        tasks = [asyncio.ensure_future(one(t)) for t in tallies]
        start = time.perf_counter()
        _, pending = await asyncio.wait(tasks, timeout=args.timeout)
        elapsed = (time.perf_counter() if pending else max(ends)) - start
        for task in pending:
            task.cancel()
        return combine(args, tallies, len(pending)), elapsed, len(pending)

    total, elapsed, hung = asyncio.run(main())
    return summary(args, total, elapsed, hung)


def combine(args: argparse.Namespace, tallies: list[Tally], hung: int) -> Tally:
    """All connections' tallies in one; a connection still running at the
    deadline counts its unfinished commands as errors."""
    total = Tally()
    for tally in tallies:
        total.add(tally)
    if hung:
        total.fail(0, f"{hung} connections still running after {args.timeout:g} s")
        total.errors = args.conns * args.commands - total.ok
    return total


def summary(args: argparse.Namespace, total: Tally, seconds: float, hung: int) -> dict[str, Any]:
    connects = total.connect_s or [0.0]
    return {"peer": args.peer, "connections": args.conns,
            "commands_per_connection": args.commands,
            "commands": args.conns * args.commands, "ok": total.ok, "errors": total.errors,
            "hung_connections": hung, "error_examples": total.examples,
            "seconds": seconds, "commands_per_s": total.ok / seconds,
            "connect_s": {"median": statistics.median(connects), "max": max(connects)}}


# ---- hold: the memory figure ------------------------------------------------------------


def hold_rshell(args: argparse.Namespace) -> int:
    import rshell

    def open_one(_: int) -> Any:
        conn = rshell.connect(args.address, connect_timeout=60.0)
        result = conn.run("true")
        if result.exit_status != 0:
            raise BenchError(f"'true' exited {result.exit_status} {result.error or ''}")
        return conn

    conns: list[Any] = []
    start = time.perf_counter()
    try:
        # A few threads: handshakes overlap a little, the server sees a ramp.
        with ThreadPoolExecutor(8) as pool:
            conns += pool.map(open_one, range(args.conns))
        ready(len(conns), time.perf_counter() - start)
        sys.stdin.read()
    finally:
        for conn in conns:
            conn.close()
    return 0


def hold_asyncssh(args: argparse.Namespace) -> int:
    async def main() -> None:
        gate = asyncio.Semaphore(16)  # logins in flight: well under MaxStartups

        async def open_one() -> Any:
            async with gate:
                conn = await asyncssh_connect(args.address, args.key, args.known_hosts)
                result = await conn.run("true")
                if result.exit_status != 0:
                    raise BenchError(f"'true' exited {result.exit_status}")
                return conn

        start = time.perf_counter()
        conns = await asyncio.gather(*(open_one() for _ in range(args.conns)))
        try:
            ready(len(conns), time.perf_counter() - start)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        finally:
            for conn in conns:
                conn.close()
            await asyncio.gather(*(c.wait_closed() for c in conns))

    asyncio.run(main())
    return 0


def ready(count: int, seconds: float) -> None:
    print(json.dumps({"ready": True, "connections": count, "seconds": seconds}), flush=True)


# ---- command line -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("run", "hold"))
    p.add_argument("--peer", choices=("rshell", "paramiko", "asyncssh"), required=True)
    p.add_argument("--address", required=True, help="HOST:PORT (127.0.0.1 only)")
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--commands", type=int, default=20)
    p.add_argument("--key", type=Path, help="SSH peers: the private key")
    p.add_argument("--known-hosts", type=Path, help="SSH peers: the pinned host key")
    p.add_argument("--timeout", type=float, default=180.0, help="run: whole-run limit (s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.address.startswith("127.0.0.1:"):
        print(json.dumps({"error": f"{args.address}: loopback only"}), flush=True)
        return 2
    raise_nofile(4 * args.conns + 256)
    try:
        if args.action == "hold":
            if args.peer == "paramiko":
                raise BenchError("hold: rshell or asyncssh")
            return hold_rshell(args) if args.peer == "rshell" else hold_asyncssh(args)
        out = run_asyncssh(args) if args.peer == "asyncssh" else run_threads(args)
    except Exception as exc:  # reported to mode all, which fails this peer only
        print(json.dumps({"error": describe(exc)}), flush=True)
        return 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
