"""Figure 4, concurrency (mode all): ``conc_conns`` clients at once, each its
own connection running ``true`` ``conc_commands`` times, in commands/s, with
every failed command counted.

Owns the figure: rshell against asyncssh and paramiko to sshd, each side's
load driven from a fresh load worker process per sample (rshell_bench.load).
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

from .core import BENCH_DIR, BenchError, Probe, Side, bind, progress, run_rounds
from .stats import ISSUE6, Target, absolute, all_figure, compare

if TYPE_CHECKING:
    from .modes import AllRig


def driver(rig: AllRig, side: Side, peer: str) -> Probe:
    """A sample: one load worker run for ``peer``, its commands/s; every run's
    figures (but the peer's name) kept in the side's ``runs``."""
    runs: list[dict[str, Any]] = side.extra.setdefault("runs", [])
    plan = rig.plan
    argv = [*rig.load_argv("run", peer, plan.conc_conns), "--commands",
            str(plan.conc_commands)]

    def sample() -> float:
        try:
            proc = subprocess.run(argv, env=rig.env, stdin=subprocess.DEVNULL, cwd=BENCH_DIR,
                                  capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise BenchError(f"load.py {peer} did not finish in 300 s") from None
        lines = proc.stdout.strip().splitlines()
        data = json.loads(lines[-1]) if lines else {"error": proc.stderr.strip()[-300:]}
        if "error" in data or proc.returncode != 0:
            raise BenchError(f"load.py {peer} (exit {proc.returncode}): "
                             f"{data.get('error', '?')}")
        runs.append({k: v for k, v in data.items() if k != "peer"})
        return float(data["commands_per_s"])
    return sample, None


def in_all(rig: AllRig) -> dict[str, Any]:
    """``conc_conns`` clients at once, each its own connection running ``true``
    ``conc_commands`` times, driven from a fresh load.py process per sample
    (rshell and paramiko: a thread per connection; asyncssh: one event loop);
    commands/s from the start (connects included) to the last result."""
    plan = rig.plan
    n, conns, commands = plan.conc_samples, plan.conc_conns, plan.conc_commands
    what = f"{conns} connections x {commands} x 'true', load.py in a fresh process"
    rsh = Side("rshell", "rshell tls", f"{what}: a thread per connection, each its own "
               f"rshell.connect (secure default, --shell {rig.shell})", n=n)
    assh = Side("asyncssh", "asyncssh", f"{what}: {conns} connections on one event loop, "
                "conn.run('true') each", n=n)
    para = Side("paramiko", "paramiko", f"{what}: a thread per connection, each its own "
                "SSHClient, exec_command per command", n=n)
    sides = [bind(rsh, driver(rig, rsh, "rshell")),
             rig.bind_peer(assh, "asyncssh", lambda _: driver(rig, assh, "asyncssh")),
             rig.bind_peer(para, "paramiko", lambda _: driver(rig, para, "paramiko"))]
    progress(f"all: concurrency, {n} rounds of {conns} x {commands}: "
             + ", ".join(s.label for s in sides))
    rounds = run_rounds(sides, "concurrency", 0)
    errors = {s.name: sum(r["errors"] for r in s.extra.get("runs", [])) for s in sides}
    for side in sides:
        side.extra["errors"] = errors[side.name]
    comparisons = [compare(rsh, assh, [Target(">", 1.0, ISSUE6)]),
                   compare(rsh, para, [Target(">", 1.0, ISSUE6)]),
                   absolute(rsh, errors["rshell"] if rsh.samples else None, "errors",
                            [Target("==", 0, ISSUE6)],
                            "commands that failed (exit status != 0, or an exception)")]
    return all_figure("commands/s", rounds, sides, comparisons, connections=conns,
                      commands_per_connection=commands, notes=notes(sides, errors, n))


def notes(sides: list[Side], errors: dict[str, int], n: int) -> list[str]:
    """The error count of every side, and a couple of examples of each run's."""
    out = [f"errors over {n} rounds: " + ", ".join(f"{s.label} {errors[s.name]}"
                                                    for s in sides if s.samples)]
    for side in sides:
        for run in side.extra.get("runs", []):
            for example in run["error_examples"][:2]:
                out.append(f"{side.label}: {example}")
    return out
