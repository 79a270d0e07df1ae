"""Figure 1, the round trip: ``true`` over one open connection, per command.

Owns the figure in every mode: rshell against an in-process
``subprocess.run`` and the spawn floor (modes plain, tls and all), rshell's
SSH listener against sshd with the same paramiko client (mode ssh), rshell
against asyncssh and paramiko to sshd (mode all); and the spawn floor's note.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from contextlib import ExitStack
from typing import Any

from .bounds import FLOOR_WHAT, FloorPeer
from .contenders import checked_run
from .core import BenchError, Probe, Side, bind, per_command_ms, progress, run_rounds
from .peers import AsyncsshPeer, ExitTally, exit_zero, paramiko_true, ssh_exec
from .plans import Mode, Plan, targets
from .report import num
from .stats import ISSUE6, Target, all_figure, bound_row, compare, versus

SH_TRUE = ["/bin/sh", "-c", "true"]


def local_true() -> None:
    if subprocess.run(SH_TRUE).returncode != 0:
        raise BenchError("/bin/sh -c true failed locally")


def local_side(n: int, k: int) -> Side:
    return bind(Side("subprocess", "subprocess.run", "subprocess.run(['/bin/sh', '-c', "
                     "'true']) in this process", n=n), per_command_ms(k, local_true))


def floor_side(n: int, k: int, stack: ExitStack) -> Side:
    """The spawn floor, its server stopped by ``stack``; failed if it cannot start."""
    floor = Side("spawn_floor", "spawn floor", FLOOR_WHAT, n=n)
    try:
        floor_peer = FloorPeer()
    except BenchError as exc:
        floor.error = str(exc)
        return floor
    stack.callback(floor_peer.stop)
    return bind(floor, per_command_ms(k, floor_peer.checked))


def floor_note(sub: Side, floor: Side, rsh: Side, label: str) -> str:
    """What the spawn floor says about a round-trip figure (medians, ms)."""
    sub_ms, floor_ms, rshell_ms = (statistics.median(s.samples) for s in (sub, floor, rsh))
    return (f"spawn floor = {floor_ms / sub_ms:.2f} x subprocess.run: the least a Python "
            f"server that spawns each command behind pipes costs (no protocol, TLS, auth or "
            f"limits); {label} - spawn floor: {rshell_ms - floor_ms:+.3f} ms per command")


def native(conn: Any, mode: Mode, plan: Plan) -> dict[str, Any]:
    """Modes plain and tls: rshell's ``conn.run('true')`` against an in-process
    ``subprocess.run``: what a caller pays per remote command beyond a local
    one; and the spawn floor in the same rounds."""
    k, n = plan.rt_batch, plan.rt_samples
    first = conn.run("true")
    if first.exit_code != 0:
        raise BenchError(f"conn.run('true') gave exit {first.exit_code}, error {first.error}")
    with ExitStack() as stack:
        base, floor = local_side(n, k), floor_side(n, k, stack)
        if floor.error:
            raise BenchError(floor.error)
        rsh = bind(Side("rshell", "rshell", "conn.run('true')", n=n),
                   per_command_ms(k, checked_run(conn)))
        progress(f"{mode.name}: round trip, {n} x {k} commands each side: "
                 "subprocess.run, spawn floor, rshell")
        run_rounds([base, floor, rsh], "round trip", plan.warmup, strict=True)
    result = versus(base, rsh, targets("roundtrip", mode.name), "ms/command", batch=k,
                    baseline_what="subprocess.run(['/bin/sh', '-c', 'true'])",
                    rshell_what="conn.run('true')")
    result["spawn_floor"] = bound_row(floor, base, rsh, FLOOR_WHAT, "floor", "(floor)")
    result["notes"] = [floor_note(base, floor, rsh, "rshell")]
    return result


def ssh(clients: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Mode ssh: ``true``, each its own channel on one open paramiko connection,
    to sshd and to rshell's SSH listener."""
    k, n = plan.rt_batch, plan.rt_samples
    tally = ExitTally()

    def side(name: str) -> Side:
        def check(status: int) -> None:
            tally.check(name, status, "'true'")
        return bind(Side(name, name, "", n=n), per_command_ms(k, paramiko_true(clients[name],
                                                                              check)))

    sshd, rsh = side("sshd"), side("rshell")
    progress(f"ssh: round trip, {n} x {k} commands each server")
    run_rounds([sshd, rsh], "round trip", plan.warmup, strict=True)
    what = "paramiko: open_session, exec_command('true'), shutdown_write, stdout+stderr " \
           "to EOF, recv_exit_status, over one open connection"
    result = versus(sshd, rsh, targets("roundtrip", "ssh"), "ms/command", batch=k,
                    baseline_what=f"OpenSSH sshd; {what}",
                    rshell_what=f"rshell-server --ssh-bind; {what}")
    # A client that never closes the command's stdin (paramiko's exec_command
    # pattern): one command each, for information.
    open_ms = {}
    for name, client in clients.items():
        start = time.perf_counter()
        ssh_exec(client, "true", close_stdin=False)
        open_ms[name] = (time.perf_counter() - start) * 1e3
    result["stdin_left_open_ms"] = open_ms
    result["notes"] = [f"one `true` with its stdin left open (no shutdown_write): sshd "
                       f"{num(open_ms['sshd'])} ms, rshell {num(open_ms['rshell'])} ms"]
    tally.record(result)
    return result


def all_sides(rig: Any) -> list[Side]:
    """Mode all's contenders: subprocess.run, the spawn floor, rshell (TLS with
    /bin/sh and with the login shell, plain), asyncssh and paramiko."""
    n, k = rig.plan.rt_samples, rig.plan.rt_batch

    def rshell(name: str, label: str, what: str) -> Side:
        return bind(Side(f"rshell_{name}", label, what, n=n),
                    per_command_ms(k, checked_run(rig.conns[name])))

    def asyncssh_true(peer: AsyncsshPeer) -> Probe:
        return (lambda: peer.roundtrip(k)), None

    return [
        local_side(n, k), floor_side(n, k, rig.stack),
        rshell("tls", "rshell tls", "conn.run('true'), secure default (TLS, key auth), "
               "shell /bin/sh"),
        rshell("tls_login", f"rshell tls ({rig.shell_name})",
               f"conn.run('true'), secure default, --shell {rig.shell} (as sshd)"),
        rshell("plain", "rshell plain", "conn.run('true'), --no-tls --no-auth, shell /bin/sh"),
        rig.bind_peer(Side("asyncssh", "asyncssh", "await conn.run('true') to sshd: one "
                           "exec channel per command, one open connection", n=n),
                      "asyncssh", asyncssh_true),
        rig.bind_peer(Side("paramiko", "paramiko", "open_session, exec_command('true'), "
                           "shutdown_write, stdout+stderr to EOF, recv_exit_status, one "
                           "open connection to sshd (TCP_NODELAY)", n=n),
                      "paramiko",
                      lambda c: per_command_ms(k, paramiko_true(c, exit_zero("paramiko")))),
    ]


def in_all(rig: Any) -> dict[str, Any]:
    """Mode all: rshell's (TLS, /bin/sh) against an in-process subprocess.run;
    rshell's (TLS, the login shell sshd uses) against asyncssh's and
    paramiko's to sshd; rshell plain for information.  The spawn floor (the
    least a Python server can do per command) is sampled in the same rounds:
    against subprocess.run, and rshell tls against it."""
    sides = all_sides(rig)
    sub, floor, tls, login, plain, assh, para = sides
    progress(f"all: round trip, {rig.plan.rt_samples} rounds of {rig.plan.rt_batch} "
             "commands: " + ", ".join(s.label for s in sides))
    rounds = run_rounds(sides, "round trip", rig.plan.warmup)
    comparisons = [compare(tls, sub, [Target("<=", 1.2, ISSUE6)]),
                   compare(floor, sub, [], bound="floor"),
                   compare(tls, floor, []),
                   compare(login, assh, [Target("<=", 0.5, ISSUE6)]),
                   compare(login, para, [Target("<=", 0.5, ISSUE6)]),
                   compare(plain, sub, [])]
    notes = []
    shell_cost = compare(login, tls, [])["ratio"]
    if shell_cost is not None:
        notes.append(f"rshell tls with {rig.shell_name} (the login shell sshd runs commands "
                     f"with) over rshell tls with /bin/sh: {shell_cost:.2f}; the SSH peers are "
                     f"compared with the {rig.shell_name} one")
    if floor.samples and sub.samples and tls.samples:
        notes.append(floor_note(sub, floor, tls, "rshell tls"))
    return all_figure("ms/command", rounds, sides, comparisons, batch=rig.plan.rt_batch,
                      notes=notes)
