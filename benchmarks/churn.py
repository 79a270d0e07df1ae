#!/usr/bin/env python3
"""Pre-authentication churn (security issue 11): how many legitimate logins
get through while another source keeps opening connections it never
authenticates, and what the server holds meanwhile.

    python benchmarks/churn.py                      # both scenarios, 15 s each
    python benchmarks/churn.py --scenario storm --seconds 5
    python benchmarks/churn.py --server-flag=--per-source-penalties --server-flag=no

Scenarios (the attacker is a process of its own, its sockets bound to
127.0.0.2, so the server sees another source than the legitimate client):

- ``storm``: 100 threads, each reconnecting as soon as the server cuts it off
  (connect, send nothing, wait for the close);
- ``paced``: 100 sockets reconnecting once a second (each holds its
  connection until cut off or a second has passed, then reconnects on the
  next second).

Meanwhile the legitimate client, on 127.0.0.1 in this process, starts one
login (``rshell.connect(...).run("true")``, connect timeout 5 s) every half
second, the next one never before the last ended.  Reported: logins that
succeeded out of those tried, their latency, the attacker's connections, and
the server's peak descriptors and threads (``/proc``, sampled every 20 ms).

``churn.py attack ...`` is the attacker alone (tests/test_penalties.py runs
it too); it prints ``ready`` once its threads run, and a JSON line of counts
when it ends.  It starts its own
``rshell-server`` on 127.0.0.1 with a temporary ``RSHELL_HOME``, talks to
127.0.0.1 from 127.0.0.2 only, and stops what it started by its own handles.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # rshell_bench beside this file, however it is run
    sys.path.insert(0, str(HERE))

SCENARIOS = {
    "storm": {"threads": 100, "every": 0.0},
    "paced": {"threads": 100, "every": 1.0},
}
#: The legitimate client starts a login this often (seconds).
LOGIN_EVERY = 0.5
LOGIN_CONNECT_TIMEOUT = 5.0
SAMPLE_EVERY = 0.02


# ---- the attacker -----------------------------------------------------------------------


def attack(host: str, port: int, source: str, threads: int, seconds: float, every: float,
           behaviours: list[str]) -> dict[str, int]:
    """``threads`` sockets from ``source`` for ``seconds``: each connects, plays its
    behaviour (``idle``: says nothing; ``garbage``: 64 bytes that are no TLS;
    ``close``: hangs up at once), waits for the server's close (or ``every``
    seconds, if set), and reconnects (at once, or on its next ``every`` mark)."""
    deadline = time.monotonic() + seconds
    counts = {"connections": 0, "failed_connects": 0}
    lock = threading.Lock()

    def one(behaviour: str) -> None:
        made = failed = 0
        while time.monotonic() < deadline:
            started = time.monotonic()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((source, 0))
                sock.settimeout(max(0.05, min(2.0, deadline - started)))
                sock.connect((host, port))
                made += 1
                if behaviour == "garbage":
                    sock.sendall(b"\x16\x03\x01\x00\x00not-tls" * 4 + os.urandom(36))
                if behaviour != "close":
                    hold_until = min(deadline, started + every) if every else deadline
                    _hold(sock, hold_until)
            except OSError:
                failed += 1
            finally:
                sock.close()
            if every:
                time.sleep(max(0.0, min(deadline, started + every) - time.monotonic()))
        with lock:
            counts["connections"] += made
            counts["failed_connects"] += failed

    workers = [threading.Thread(target=one, args=(behaviours[i % len(behaviours)],), daemon=True)
               for i in range(threads)]
    for worker in workers:
        worker.start()
    print("ready", flush=True)
    for worker in workers:
        worker.join(seconds + 5)
    return counts


def _hold(sock: socket.socket, until: float) -> None:
    """Read (and drop) until the server closes the connection or ``until``."""
    while (left := until - time.monotonic()) > 0:
        sock.settimeout(min(left, 1.0))
        try:
            if not sock.recv(4096):
                return
        except TimeoutError:
            continue


# ---- the legitimate client and the sampler ----------------------------------------------


class Peak(threading.Thread):
    """The server's descriptors and threads, sampled until stopped; the peaks."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.fds = self.threads = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(SAMPLE_EVERY):
            try:
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
                with open(f"/proc/{self.pid}/status") as f:
                    threads = next(int(line.split()[1]) for line in f
                                   if line.startswith("Threads:"))
            except (OSError, StopIteration):
                return
            self.fds, self.threads = max(self.fds, fds), max(self.threads, threads)

    def stop(self) -> None:
        self._done.set()
        self.join()


def logins(address: str, seconds: float) -> tuple[int, int, list[float], list[str]]:
    """One login every LOGIN_EVERY s for ``seconds``: (succeeded, tried, the
    successes' seconds, the first failures' reasons)."""
    import rshell

    ok = tried = 0
    took: list[float] = []
    why: list[str] = []
    start = time.monotonic()
    while (now := time.monotonic()) < start + seconds:
        tried += 1
        try:
            with rshell.connect(address, connect_timeout=LOGIN_CONNECT_TIMEOUT) as conn:
                if conn.run("true").exit_code == 0:
                    ok += 1
                    took.append(time.monotonic() - now)
        except rshell.RshellError as exc:
            if len(why) < 3:
                why.append(f"{type(exc).__name__}: {exc}")
        time.sleep(max(0.0, now + LOGIN_EVERY - time.monotonic()))
    return ok, tried, took, why


def scenario(name: str, seconds: float, flags: tuple[str, ...], bin_dir: Path) -> dict[str, Any]:
    """One scenario against a fresh server: the figures as a dict."""
    import subprocess

    from rshell_bench.contenders import Rig
    from rshell_bench.procs import stop_process

    spec = SCENARIOS[name]
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="rshell-churn-") as tmp:
        rig = Rig(Path(tmp), bin_dir, stack)
        server = rig.start_server(flags, "server.log")
        stack.callback(server.stop)
        rig.pin(server.address)
        port = int(server.address.rsplit(":", 1)[1])
        idle = (len(os.listdir(f"/proc/{server.proc.pid}/fd")),
                _threads(server.proc.pid))
        peak = Peak(server.proc.pid)
        peak.start()
        attacker = subprocess.Popen(
            [sys.executable, __file__, "attack", "--port", str(port),
             "--threads", str(spec["threads"]), "--every", str(spec["every"]),
             "--seconds", str(seconds + 1.0)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=rig.env)
        stack.callback(stop_process, attacker, 5.0)
        assert attacker.stdout is not None
        if attacker.stdout.readline().strip() != "ready":
            raise SystemExit("the attacker did not start")
        ok, tried, took, why = logins(server.address, seconds)
        out, _ = attacker.communicate(timeout=30)
        peak.stop()
        log = server.log_path.read_text(errors="replace")
    took.sort()
    return {
        "scenario": name, "seconds": seconds, "flags": list(flags),
        "logins_ok": ok, "logins_tried": tried,
        "login_rate": round(ok / tried, 3) if tried else 0.0,
        "login_s_median": round(took[len(took) // 2], 3) if took else None,
        "login_s_max": round(took[-1], 3) if took else None,
        "attacker": json.loads(out.strip().splitlines()[-1]) if out.strip() else {},
        "server_idle_fds": idle[0], "server_idle_threads": idle[1],
        "server_peak_fds": peak.fds, "server_peak_threads": peak.threads,
        "log_lines": len(log.splitlines()),
        "log_kinds": _log_kinds(log),
        "failures": why,
    }


def _log_kinds(log: str, top: int = 6) -> dict[str, int]:
    """The server's most frequent log lines, addresses and numbers blanked."""
    kinds = Counter(re.sub(r"[0-9a-f.:\[\]]*\d[0-9a-f.:\[\]]*", "#", line.split(" ", 3)[-1])
                    for line in log.splitlines())
    return dict(kinds.most_common(top))


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    atk = sub.add_parser("attack", help="the attacker alone; prints its counts as JSON")
    atk.add_argument("--host", default="127.0.0.1")
    atk.add_argument("--port", type=int, required=True)
    atk.add_argument("--source", default="127.0.0.2")
    atk.add_argument("--threads", type=int, default=100)
    atk.add_argument("--seconds", type=float, default=15.0)
    atk.add_argument("--every", type=float, default=0.0,
                     help="reconnect at most this often per socket (0: as soon as cut off)")
    atk.add_argument("--behaviour", default="idle",
                     help="comma-separated, one per thread in turn: idle, garbage, close")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "both"], default="both")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--server-flag", action="append", default=[], metavar="FLAG",
                        help="passed to rshell-server, repeatable (--server-flag=--x)")
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "attack":
        counts = attack(args.host, args.port, args.source, args.threads, args.seconds,
                        args.every, args.behaviour.split(","))
        print(json.dumps(counts), flush=True)
        return 0
    names = list(SCENARIOS) if args.scenario == "both" else [args.scenario]
    results = []
    for name in names:
        print(f"  .. {name}: {args.seconds:g} s", file=sys.stderr, flush=True)
        results.append(scenario(name, args.seconds, tuple(args.server_flag), args.bin_dir))
    print(f"{'scenario':8} {'logins':>8} {'rate':>6} {'median s':>9} {'max s':>6} "
          f"{'attacker conns':>15} {'peak fds':>9} {'peak threads':>13} {'log lines':>10}")
    for r in results:
        print(f"{r['scenario']:8} {r['logins_ok']:>3}/{r['logins_tried']:<4} "
              f"{r['login_rate']:>6.0%} {r['login_s_median'] or 0:>9.3f} "
              f"{r['login_s_max'] or 0:>6.2f} {r['attacker'].get('connections', 0):>15} "
              f"{r['server_peak_fds']:>9} {r['server_peak_threads']:>13} {r['log_lines']:>10}")
        for reason in r["failures"]:
            print(f"         failed: {reason}")
        for kind, n in r["log_kinds"].items():
            print(f"         {n:>7} x log: {kind[:100]}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
