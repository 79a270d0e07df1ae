"""Figure 5, memory (mode all): what one idle authenticated connection costs
the server, ``mem_conns`` connections held open by a load worker process.

Owns the figure: rshell's VmRSS and PSS per connection (a fresh server per
sample), sshd's summed PSS of its process tree; and ``Holder``, the load
worker that holds the connections.
"""

from __future__ import annotations

import json
import select
import statistics
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core import BENCH_DIR, BenchError, MiB, Probe, Side, bind, progress, run_rounds
from .openssh import SshdProcess
from .procs import children, comm, process_tree, stop_process, tree_pss, vm_rss, wait_for
from .stats import ISSUE6, Target, absolute, all_figure, compare

if TYPE_CHECKING:
    from .modes import AllRig


class Holder:
    """A load.py ``hold`` process: its connections are open and authenticated
    once it has said so, and stay open until ``release``."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, timeout: float) -> None:
        with open(log, "ab") as sink:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, cwd=BENCH_DIR,
                                         stdout=subprocess.PIPE, stderr=sink, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        data = json.loads(line) if line.startswith("{") else {"error": line or "no answer"}
        if not data.get("ready"):
            self.release()
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise BenchError(f"load.py hold: {data.get('error', data)}"
                             + "".join(f"\n    | {line}" for line in tail))
        self.seconds = float(data["seconds"])

    def release(self) -> None:
        """Close its stdin: it closes its connections and exits."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
            self.proc.wait(60)
        except (OSError, subprocess.TimeoutExpired):
            stop_process(self.proc, 5.0)


def rshell_probe(rig: AllRig, pss_out: list[float]) -> Probe:
    """A sample: a fresh secure-default server, pinned (and the first
    connection's one-off costs paid), its VmRSS delta per held connection in
    MiB; the PSS delta goes to ``pss_out``."""
    conns = rig.plan.mem_conns

    def sample() -> float:
        server = rig.start_server(rig.limits, f"memory-server-{len(pss_out)}.log")
        try:
            rig.pin(server.address)  # and the first connection's one-off costs
            pid = server.proc.pid
            wait_for(lambda: not children(pid), 30, "rshell-server to reap its commands")
            rss0, pss0 = vm_rss(pid), tree_pss(pid)[0]
            holder = Holder(rig.load_argv("hold", "rshell", conns, server.address), rig.env,
                            rig.workdir / "load-hold.log", 300)
            try:
                wait_for(lambda: not children(pid), 30, "rshell-server to reap its commands")
                rss1, pss1 = vm_rss(pid), tree_pss(pid)[0]
            finally:
                holder.release()
        finally:
            server.stop()
        pss_out.append((pss1 - pss0) / conns / MiB)
        return (rss1 - rss0) / conns / MiB
    return sample, None


def sshd_probe(rig: AllRig, side: Side, sshd: SshdProcess) -> Probe:
    """A sample: the summed PSS delta of sshd's process tree per connection
    held by asyncssh, in MiB; the processes per connection go to the side."""
    conns, pid = rig.plan.mem_conns, sshd.proc.pid
    per_conn: list[float] = []
    side.extra["processes_per_connection"] = per_conn
    # Connections this process keeps open to sshd for the other figures.
    held = sum(peer is not None for peer in (rig.paramiko, rig.asyncssh))

    def sample() -> float:
        wait_for(lambda: len(children(pid)) == held, 60,
                 "sshd's connections from earlier figures and samples to end")
        pss0, count0 = tree_pss(pid)
        holder = Holder(rig.load_argv("hold", "asyncssh", conns), rig.env,
                        rig.workdir / "load-hold.log", 300)
        try:
            # Every session's shell gone: only sshd's own processes stay.
            wait_for(lambda: all(comm(p) == "sshd" for p in process_tree(pid)), 30,
                     "sshd's sessions to end")
            pss1, count1 = tree_pss(pid)
        finally:
            holder.release()
        per_conn.append((count1 - count0) / conns)
        return (pss1 - pss0) / conns / MiB
    return sample, None


def in_all(rig: AllRig) -> dict[str, Any]:
    """What one idle authenticated connection costs the server: ``mem_conns``
    connections held open by a load.py process, each having run one ``true``.

    rshell: a fresh secure-default server per sample (so that no earlier
    connection left its memory to reuse), VmRSS before and after; PSS too,
    to compare with sshd.  sshd forks per connection: the summed PSS of its
    process tree before and after (shared pages counted once)."""
    n, conns = rig.plan.mem_samples, rig.plan.mem_conns
    pss_rshell: list[float] = []
    rss = bind(Side("rshell_rss", "rshell tls RSS", f"server VmRSS delta / {conns} idle "
                    "authenticated connections (fresh secure-default server per sample)", n=n),
               rshell_probe(rig, pss_rshell))
    sshd_side = Side("sshd_pss", "sshd PSS", f"summed PSS of sshd's process tree, delta / "
                     f"{conns} idle authenticated asyncssh connections", n=n)
    rig.bind_peer(sshd_side, "sshd", lambda sshd: sshd_probe(rig, sshd_side, sshd))
    if sshd_side.error is None and rig.asyncssh is None:
        sshd_side.error = f"needs asyncssh to hold the connections: {rig.errors['asyncssh']}"
    sides = [rss, sshd_side]
    progress(f"all: memory, {n} rounds of {conns} idle connections: rshell, sshd")
    rounds = run_rounds(sides, "memory", 0)
    pss = Side("rshell_pss", "rshell tls PSS", "server PSS delta / connections (the same "
               "samples as RSS)", n=n, samples=pss_rshell, rounds=list(rss.rounds))
    sides.insert(1, pss)
    comparisons = [absolute(rss, statistics.median(rss.samples) if rss.samples else None,
                            "MiB/connection", [Target("<", 0.5, ISSUE6)],
                            "server VmRSS per idle authenticated connection"),
                   compare(pss, sshd_side, [])]
    return all_figure("MiB/connection", rounds, sides, comparisons, connections=conns)
