"""Issue 15's figure, mode all: ``echo ok`` on a fleet, whole processes timed.

``fleet``: one command on ``fleet_hosts`` (100) hosts by rshell (native
hosts: ports of a few ``rshell-server`` processes) beside the SSH fan-out
tools against OpenSSH's sshd on as many ports (pdsh ``-R ssh``,
parallel-ssh, clush, Ansible ad hoc ``-m raw``; target: rshell at least 10 x
faster than each, so than the fastest) and rshell's own ``ssh://`` fan-out
to the same sshd hosts (target: at least as fast as parallel-ssh); then
rshell alone on 10, 100 and 1,000 hosts (``fleet_scale``): its whole-fleet
wall time (goal: under 5 s for 1,000 on 2 cores) and client peak RSS (goal:
under 200 MiB), and how both grow.

Every run is a whole process from start to exit, connecting afresh to every
host (nothing kept between runs), every tool at a fan-out of 64 (rshell's
default ``--parallel``), host keys pinned beforehand and checked by every
tool, and every host's ``ok`` checked in its output.  Beside the wall time
each run's client CPU (user + system of the process and the children it
reaped, by ``wait4``), the peak RSS of its process (VmHWM, read every 10 ms
while it runs; a tool's ssh children not included) and the servers' CPU over
the run (``/proc/PID/stat``) are kept, to say where the time goes.

The hosts and the tools' files are fleethosts.py's.  Must not import
rshell: every client is a whole process.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .copies import WATCH_STEP, status_bytes
from .core import BenchError, MiB, Side, progress, run_rounds
from .fleethosts import FANOUT, RshellFleet, SshFleet, cpu_seconds, node_range, settled
from .procs import stop_process
from .stats import Target, absolute, all_figure, compare, summarize

if TYPE_CHECKING:
    from .modes import AllRig

ISSUE15 = "issue 15"
COMMAND = "echo ok"
#: One whole-fleet run must end within this.
WAIT = 300.0
#: rshell's time over the SSH tools' (<= 0.1: at least 10 x faster).
FASTER = 0.1
#: Goals for ``GOAL_HOSTS`` hosts: the whole fleet's wall time, the client's peak RSS
#: (checked on the largest fleet measured).
GOAL_HOSTS = 1000
GOAL_WALL_S = 5.0
GOAL_RSS_MIB = 200.0

#: ``HOST: ok`` (rshell, pdsh, clush); parallel-ssh -i's ``[N] TIME [SUCCESS] HOST``
#: and Ansible's ``HOST | CHANGED | rc=0 >>``, each followed by an ``ok`` line.
PREFIXED = re.compile(r"^(\S+):\s+ok$", re.MULTILINE)
PSSH_DONE = re.compile(r"^\[\d+\] \S+ \[SUCCESS\] (\S+)$", re.MULTILINE)
ANSIBLE_DONE = re.compile(r"^(\S+) \| CHANGED \| rc=0 >>$", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    """One whole-fleet run: wall and client CPU seconds, the client's peak
    RSS, and the CPU seconds the servers spent over it (``server_reaped``:
    the part their reaped children spent)."""

    wall: float
    user: float
    system: float
    rss_mib: float
    server_cpu: float
    server_reaped: float


@dataclass(frozen=True)
class Tool:
    """A contender's whole command: argv, environment, the server processes it
    drives, and how its output shows every host said ``ok``."""

    argv: list[str]
    env: dict[str, str]
    servers: list[int]
    hosts: list[str]
    done: re.Pattern[str]
    ok_lines: bool = False  # the ``ok`` is a line of its own after ``done``

    def check(self, out: str, what: str) -> None:
        said = set(self.done.findall(out))
        missing = [h for h in self.hosts if h not in said]
        oks = sum(1 for line in out.splitlines() if line.strip() == "ok")
        if missing or (self.ok_lines and oks != len(self.hosts)):
            raise BenchError(f"{what}: {len(self.hosts) - len(missing)} of {len(self.hosts)} "
                             f"hosts said ok ({oks} ok lines)"
                             + (f"; first missing: {missing[0]}" if missing else ""))


def run_once(tool: Tool, cwd: Path, what: str) -> Run:
    """``tool`` run to its exit (bounded by WAIT), which must be 0, its
    output checked; what it cost."""
    settled(tool.servers, "the servers")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        before = cpu_seconds(tool.servers)
        start = time.perf_counter()
        proc = subprocess.Popen(tool.argv, env=tool.env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
        peak = watch_peak(proc, what)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, by wait4
        settled(tool.servers, "the servers")
        after = cpu_seconds(tool.servers)
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        last = errors.strip().splitlines()[-1:] or ["(no message)"]
        raise BenchError(f"{what}: `{Path(tool.argv[0]).name}` exited {proc.returncode}: "
                         f"{last[0]}")
    tool.check(text, what)
    own, reaped = (b - a for a, b in zip(before, after, strict=True))
    return Run(wall, usage.ru_utime, usage.ru_stime, peak / MiB, own + reaped, reaped)


def watch_peak(proc: subprocess.Popen[bytes], what: str) -> int:
    """Wait (bounded by WAIT) for ``proc`` to end, reading its VmHWM every
    WATCH_STEP; the last reading, in bytes.  (wait4's ru_maxrss will not do:
    a child spawned by this process starts with this process's peak.)"""
    deadline, peak = time.monotonic() + WAIT, 0
    fd = os.pidfd_open(proc.pid)
    try:
        while True:
            peak = max(peak, status_bytes(proc.pid, "VmHWM") or 0)
            left = deadline - time.monotonic()
            if left <= 0:
                stop_process(proc, 5.0)
                raise BenchError(f"{what}: still running after {WAIT:g} s")
            if select.select([fd], [], [], min(left, WATCH_STEP))[0]:
                return peak
    finally:
        os.close(fd)


def bind_tool(side: Side, tool: Tool | None, cwd: Path) -> Side:
    """``side`` sampling ``tool``'s wall time, each run's costs kept in
    ``side.extra["runs"]`` (warm-up runs not)."""
    if tool is None:
        return side
    runs: list[Run] = []
    side.extra["runs"] = runs

    def sample() -> float:
        run = run_once(tool, cwd, side.label)
        runs.append(run)
        return run.wall
    side.sample, side.warm = sample, lambda: run_once(tool, cwd, side.label)
    return side


def costs(side: Side) -> dict[str, Any]:
    """A side's runs as spreads: client CPU (and its user and system parts),
    peak RSS, the servers' CPU."""
    runs: list[Run] = side.extra.pop("runs", [])
    if not runs:
        return {}
    return {"client_cpu_s": summarize([r.user + r.system for r in runs]),
            "client_user_s": summarize([r.user for r in runs]),
            "client_system_s": summarize([r.system for r in runs]),
            "peak_rss_mib": summarize([r.rss_mib for r in runs]),
            "server_cpu_s": summarize([r.server_cpu for r in runs]),
            "server_reaped_cpu_s": summarize([r.server_reaped for r in runs])}


# ---- the contenders ---------------------------------------------------------------------


def rshell_sides(natives: RshellFleet, scale: list[int], env: dict[str, str], n: int,
                 cwd: Path) -> dict[int, Side]:
    sides = {}
    for count in scale:
        # TARGETS as issue 15 writes them (a comma list: the ports are the kernel's
        # choice, so no range), --parallel at its default (64).
        argv = [natives.rshell, ",".join(natives.addresses[:count]), "-c", COMMAND]
        side = Side(f"rshell_{count}", f"rshell, {count} hosts",
                    f"rshell 127.0.0.1:P1,127.0.0.1:P2,... -c '{COMMAND}' (--parallel: its "
                    f"default, {FANOUT}), {count} native hosts (ports of "
                    f"{len(natives.pids)} rshell-servers), whole process", n=n)
        side.extra["hosts"] = count
        sides[count] = bind_tool(side, Tool(argv, env, natives.pids,
                                            natives.addresses[:count], PREFIXED), cwd)
    return sides


#: The SSH contenders: side name, label, executable, Debian package.
SSH_TOOLS = (("rshell_ssh", "rshell ssh://", "rshell", "rshell"),
             ("pdsh", "pdsh -R ssh", "pdsh", "pdsh"),
             ("pssh", "parallel-ssh", "parallel-ssh", "pssh"),
             ("clush", "clush", "clush", "clustershell"),
             ("ansible", "ansible -m raw", "ansible", "ansible-core"))


def ssh_tool(name: str, exe: str, ssh: SshFleet, env: dict[str, str]) -> tuple[Tool, str]:
    """The argv (and what it is, for the JSON) of SSH contender ``name``."""
    cfg, names = str(ssh.config), ssh.names
    rng, f = node_range(ssh.size), str(FANOUT)
    if name == "rshell_ssh":
        # The first host named again before -H: rshell -H FILE alone is refused (a
        # bug: 'Missing argument TARGET'); a host named twice runs once.
        argv = [exe, ssh.urls()[0], "-H", str(ssh.urls_file()), "-i", str(ssh.key),
                "--known-hosts", str(ssh.known_hosts), "--parallel", f, "-c", COMMAND]
        return (Tool(argv, env, ssh.pids, ssh.urls(), PREFIXED),
                f"rshell URL1 -H URLS -i KEY --known-hosts KH --parallel {f} -c '{COMMAND}', "
                "URLS: ssh://USER@127.0.0.1:PORT a line")
    if name == "pdsh":
        argv = [exe, "-R", "ssh", "-f", f, "-w", rng, COMMAND]
        return (Tool(argv, env | {"PDSH_SSH_ARGS_APPEND": f"-F {cfg}"}, ssh.pids, names,
                     PREFIXED),
                f"PDSH_SSH_ARGS_APPEND='-F CFG' pdsh -R ssh -f {f} -w {rng} '{COMMAND}'")
    if name == "pssh":
        argv = [exe, "-h", str(ssh.names_file()), "-p", f, "-i", "-x", f"-F {cfg}", COMMAND]
        return (Tool(argv, env, ssh.pids, names, PSSH_DONE, ok_lines=True),
                f"parallel-ssh -h HOSTS -p {f} -i -x '-F CFG' '{COMMAND}'")
    if name == "clush":
        argv = [exe, "-f", f, "-o", f"-F {cfg}", "-w", rng, COMMAND]
        return (Tool(argv, env, ssh.pids, names, PREFIXED),
                f"clush -f {f} -o '-F CFG' -w {rng} '{COMMAND}'")
    inventory, ansible_cfg = ssh.ansible_files()
    argv = [exe, "all", "-i", str(inventory), "-f", f, "-m", "raw", "-a", COMMAND]
    return (Tool(argv, env | {"ANSIBLE_CONFIG": str(ansible_cfg)}, ssh.pids, names,
                 ANSIBLE_DONE, ok_lines=True),
            f"ANSIBLE_CONFIG=CFG ansible all -i INVENTORY -f {f} -m raw -a '{COMMAND}' "
            "(CFG: ssh_args -F SSH_CFG, usetty False, host_key_checking True)")


def ssh_sides(rig: AllRig, ssh: SshFleet | None, why: str, env: dict[str, str],
              cwd: Path) -> list[Side]:
    """rshell's ssh:// fan-out and the SSH tools, to the sshd fleet; a tool
    not installed (or no sshd fleet) fails its side only."""
    plan, sides = rig.plan, []
    for name, label, exe, package in SSH_TOOLS:
        n = plan.fleet_samples if name == "rshell_ssh" else plan.fleet_slow_samples
        side = Side(name, f"{label}, {plan.fleet_hosts} hosts", label, n=n)
        side.extra["hosts"] = plan.fleet_hosts
        found = str(rig.tool("rshell")) if exe == "rshell" else shutil.which(exe)
        if ssh is None:
            side.error = why
        elif found is None:
            side.error = (f"{exe} not installed (apt-get install {package}; benchmarks/run "
                          "installs it when run as root)")
        else:
            tool, side.what = ssh_tool(name, found, ssh, env)
            side.what += f" to {plan.fleet_hosts} sshd ports, whole process"
            bind_tool(side, tool, cwd)
        sides.append(side)
    return sides


# ---- the figure -------------------------------------------------------------------------


def fleet(rig: AllRig) -> dict[str, Any]:
    """The fleets set up once (rshell servers for the largest count, sshd for
    ``fleet_hosts``), every contender in alternating rounds after one warm-up
    run each, then the comparisons and the scale's rows."""
    plan = rig.plan
    root = rig.workdir / "fleet"
    (root / "home").mkdir(parents=True)
    # HOME of their own: no tool reads the user's ~/.ssh, ~/.ansible or clush config.
    env = dict(rig.env, HOME=str(root / "home"))
    scale = sorted({*plan.fleet_scale, plan.fleet_hosts})
    progress(f"fleet: starting {max(scale)} rshell hosts and {plan.fleet_hosts} sshd hosts")
    natives = RshellFleet(rig, max(scale), root)
    natives.pin()
    ssh, why = None, ""
    try:
        (root / "ssh").mkdir()
        ssh = SshFleet(rig, plan.fleet_hosts, root / "ssh")
    except BenchError as exc:
        why = f"no sshd fleet: {exc}"
        progress(f"fleet: {why.splitlines()[0]}")
    rsh = rshell_sides(natives, scale, env, plan.fleet_samples, root)
    sides = [*rsh.values(), *ssh_sides(rig, ssh, why, env, root)]
    progress(f"fleet, {max(s.n for s in sides)} rounds of '{COMMAND}': "
             + ", ".join(s.label for s in sides))
    rounds = run_rounds(sides, "fleet", 1)
    for side in sides:
        side.extra.update(costs(side))
    by = {s.name: s for s in sides}
    main = rsh[plan.fleet_hosts]
    comparisons = [compare(main, by[name], [Target("<=", FASTER, ISSUE15)])
                   for name, *_ in SSH_TOOLS[1:]]
    comparisons.append(compare(by["rshell_ssh"], by["pssh"], [Target("<=", 1.0, ISSUE15)]))
    comparisons += scale_rows(rsh, scale)
    return all_figure("s", rounds, sides, comparisons, hosts=plan.fleet_hosts, scale=scale,
                      fanout=FANOUT, command=COMMAND,
                      rshell_servers=len(natives.pids),
                      sshd_processes=len(ssh.pids) if ssh else 0,
                      notes=notes(sides, natives, ssh))


def scale_rows(rsh: dict[int, Side], scale: list[int]) -> list[dict[str, Any]]:
    """Growth from each count to the next (ratio of wall times, for
    information); the largest count's wall time and client peak RSS against
    issue 15's goals for 1,000 hosts (a smaller fleet must meet them too)."""
    rows = [compare(rsh[b], rsh[a], []) for a, b in zip(scale, scale[1:], strict=False)]
    top = rsh[scale[-1]]
    wall = statistics.median(top.samples) if top.samples else None
    rss = top.extra.get("peak_rss_mib", {}).get("median")
    what = f"{scale[-1]} hosts (issue 15's goal for {GOAL_HOSTS}, on 2 cores)"
    rows.append(absolute(top, wall, "s wall", [Target("<", GOAL_WALL_S, ISSUE15)],
                         f"whole-fleet wall time, {what}"))
    rows.append(absolute(top, rss, "MiB peak RSS", [Target("<", GOAL_RSS_MIB, ISSUE15)],
                         f"the client's peak RSS, {what}"))
    return rows


def notes(sides: list[Side], natives: RshellFleet, ssh: SshFleet | None) -> list[str]:
    said = [
        f"every tool at a fan-out of {FANOUT} (rshell's --parallel, its default; pdsh -f, "
        "parallel-ssh -p, clush -f, ansible -f); every run a whole process connecting "
        "afresh to every host (no ControlPersist, nothing kept between runs); host keys "
        "pinned beforehand and checked by every tool; every host's 'ok' checked in the "
        "output",
        f"hosts are ports of 127.0.0.1: {len(natives.pids)} rshell-servers of up to 250 "
        f"--bind each (hosts round-robin over them)"
        + (f"; {len(ssh.pids)} sshd of up to 16 ports each (its MAX_LISTEN_SOCKS); both run "
           "commands with the login shell" if ssh else ""),
        "ansible: -m raw (runs the command over ssh as it is, no module sent to the host: "
        "its fastest form; -m command sends a Python module to each host), usetty False "
        "(raw would force a pty)",
    ]
    timed = [s for s in sides if "client_cpu_s" in s.extra]
    fastest = min((s for s in timed if s.name in ("pdsh", "pssh", "clush", "ansible")),
                  key=lambda s: statistics.median(s.samples), default=None)
    if fastest is not None:
        said.append(f"fastest SSH tool: {fastest.label} "
                    f"({statistics.median(fastest.samples):.2f} s)")
    for side in timed:
        x = side.extra
        said.append(f"{side.label}: wall {statistics.median(side.samples):.2f} s, client CPU "
                    f"{x['client_cpu_s']['median']:.2f} s (user "
                    f"{x['client_user_s']['median']:.2f}, system "
                    f"{x['client_system_s']['median']:.2f}), servers' CPU "
                    f"{x['server_cpu_s']['median']:.2f} s (their reaped children "
                    f"{x['server_reaped_cpu_s']['median']:.2f}), peak RSS of its own "
                    f"process {x['peak_rss_mib']['median']:.1f} MiB (medians)")
    return said

