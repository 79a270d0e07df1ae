"""Figure 3, the cold one-shot: a whole ``rshell ADDR -c true`` process (start,
connect, handshake, run, exit), in ms per process.

Owns the figure in modes plain and tls (against ``python -c pass`` under the
interpreter rshell's script runs under: what the interpreter alone costs)
and in mode all (against a cold OpenSSH ``ssh ... true`` to sshd).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .contenders import Rig, script_interpreter
from .core import Probe, Side, bind, progress, run_rounds
from .plans import Mode, Plan, targets
from .procs import run_cli
from .stats import ISSUE6, Target, all_figure, compare, versus

if TYPE_CHECKING:
    from .modes import AllRig


def process_ms(argv: list[str], env: dict[str, str], what: str) -> Probe:
    return (lambda: run_cli(argv, env, what) * 1e3), None


def python_and_rshell(rig: Rig, client: list[str], label: str, n: int,
                      python_what: str) -> tuple[Side, Side]:
    """``python -c pass`` (the interpreter rshell's script runs under), and
    the rshell one-shot ``client``."""
    interp = [script_interpreter(rig.tool("rshell")), "-c", "pass"]
    return (bind(Side("python", "python -c pass", " ".join(interp), n=n),
                 process_ms(interp, rig.env, python_what)),
            bind(Side("rshell", label, " ".join(client), n=n),
                 process_ms(client, rig.env, "rshell one-shot")))


def native(rig: Rig, address: str, mode: Mode, plan: Plan) -> dict[str, Any]:
    """``rshell [--no-tls] ADDR -c true`` against ``python -c pass``: the ratio
    shows what rshell adds to the interpreter's own start."""
    client = [str(rig.tool("rshell")), *mode.cli_flags, address, "-c", "true"]
    base, rsh = python_and_rshell(rig, client, "rshell -c", plan.cold_samples, "baseline")
    progress(f"{mode.name}: cold one-shot, {plan.cold_samples} processes each side")
    run_rounds([base, rsh], "cold", plan.warmup, strict=True)
    return versus(base, rsh, targets("cold", mode.name), "ms/process",
                  baseline_what=base.what, rshell_what=rsh.what)


def in_all(rig: AllRig) -> dict[str, Any]:
    """``rshell ADDR -c true`` (TLS, key auth, host key pinned) against a cold
    OpenSSH ``ssh ... true`` to sshd (its default algorithms), and ``python -c
    pass`` for what the interpreter alone costs."""
    n = rig.plan.cold_samples
    client = [str(rig.tool("rshell")), rig.servers["tls_login"].address, "-c", "true"]
    py, rsh = python_and_rshell(rig, client, f"rshell -c ({rig.shell_name})", n,
                                "python -c pass")
    ssh = rig.bind_peer(Side("ssh", "ssh (OpenSSH)", "ssh -F <minimal config> -p PORT -i KEY "
                             "-o BatchMode=yes -o UserKnownHostsFile=<pinned> -o "
                             "StrictHostKeyChecking=yes 127.0.0.1 true", n=n),
                        "ssh", lambda c: process_ms(c.argv("true"), rig.env, "ssh one-shot"))
    sides = [py, rsh, ssh]
    progress(f"all: cold one-shot, {n} rounds: " + ", ".join(s.label for s in sides))
    rounds = run_rounds(sides, "cold", rig.plan.warmup)
    return all_figure("ms/process", rounds, sides,
                      [compare(rsh, ssh, [Target("<=", 0.5, ISSUE6)]), compare(rsh, py, [])])
