#!/usr/bin/env python3
"""rshell against baselines and peers measured side by side in the same run, on loopback.

Absolute timings vary from machine to machine; what a change to rshell buys
or costs shows in the ratio against a baseline measured in the same run.
Samples alternate (A B C A B C ...) so that drift (CPU frequency, page cache,
other load) hits every side alike, and every figure is a median with its
p10/p90 and min/max spread.

    python benchmarks/bench.py                     # = --mode all: everything (~4-6 min)
    python benchmarks/bench.py --quick             # the same, smoke-sized (< 1 min)
    python benchmarks/bench.py --mode all --only concurrency,memory
    python benchmarks/bench.py --mode both         # plain, then TLS, local baselines only
    python benchmarks/bench.py --mode ssh          # rshell --ssh-bind vs sshd (< 1 min)

``--mode all`` (issue 6) starts three rshell servers, a private OpenSSH sshd
and, as its clients, OpenSSH's ssh, paramiko and asyncssh (peers.py), and
measures: ``roundtrip`` (``true`` over one open connection: rshell vs an
in-process ``subprocess.run``, vs asyncssh and vs paramiko; and the spawn
floor, a minimal ``--floor-server`` process, the least a Python server can
do per command), ``cold`` (the
whole ``rshell ADDR -c true`` process vs a cold ``ssh ... true``),
``throughput`` (1 GiB of command output: rshell vs raw Python TLS/TCP
transfers and relay ceilings, the rshell CLI vs ``ssh``, asyncssh and
paramiko for information), ``concurrency`` (50 connections x 20 commands
from a fresh load.py process per sample: rshell vs asyncssh and paramiko,
errors counted) and ``memory`` (server memory per idle authenticated
connection, 200 held by load.py; sshd's for information).

Modes ``plain``/``tls``/``both`` measure rshell against local baselines only:
``roundtrip`` (and the spawn floor), ``throughput`` (and the relay ceiling), ``cold`` (vs
``python -c pass``).  ``--mode ssh`` puts rshell's SSH listener
(``--ssh-bind``) beside OpenSSH's sshd, both driven by the same paramiko
client.  See benchmarks/README.md.

It starts its own servers on 127.0.0.1 with a temporary ``RSHELL_HOME``
(never the user's files), talks to 127.0.0.1 only, and stops everything it
started, by its own handles.  Needs ``cryptography`` (throwaway certificate
and keys); mode all and mode ssh also OpenSSH's sshd (and ssh) and the
``bench`` extra (paramiko, asyncssh): a peer missing fails that peer only.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import getpass
import json
import operator
import os
import platform
import pwd
import re
import select
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling modules, however this file is run
    sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    LOOPBACK,
    BenchError,
    GiB,
    MiB,
    children,
    comm,
    process_tree,
    progress,
    raise_nofile,
    stop_process,
    summarize,
    tree_pss,
    vm_rss,
    wait_for,
)
from peers import (  # noqa: E402
    ALL_SSHD_LIMITS,
    ALL_SSHD_OPTIONAL,
    SSH_RECV,
    AsyncsshPeer,
    OpenSshClient,
    SshdProcess,
    find_ssh,
    find_sshd,
    import_paramiko,
    ssh_client,
    ssh_exec,
    ssh_transport_info,
    write_ssh_key,
)

DEFAULT_JSON = HERE / "results.json"
FIGURES = ("roundtrip", "throughput", "cold", "concurrency", "memory")
#: What modes plain and tls measure (rshell against local baselines only).
NATIVE_FIGURES = ("roundtrip", "throughput", "cold")
#: What mode ssh measures (the same client against rshell's listener and sshd).
SSH_FIGURES = ("roundtrip", "throughput")
SH_TRUE = ["/bin/sh", "-c", "true"]
#: Chunk the raw baseline sends and receives, preallocated once.
RAW_CHUNK = MiB
#: The relay ceiling's pipe (F_SETPIPE_SZ, as rshell's server widens its pipes;
#: 1 MiB is also the default /proc/sys/fs/pipe-max-size) and its read buffer: a
#: read from a pipe never returns more than the pipe holds, so a bigger buffer
#: would never fill.
RELAY_PIPE = MiB
_F_SETPIPE_SZ = 1031  # Linux
_LISTEN = re.compile(r"(?<!ssh )listening on (\S+)")
_SSH_LISTEN = re.compile(r"ssh listening on (\S+)")
#: What the receiver asks the sender for: a byte count and a command (empty:
#: the raw baseline, from a buffer; else the relay ceiling, that command's output).
_REQUEST = struct.Struct("!QI")
#: The spawn floor's reply: the command's exit status (waitstatus_to_exitcode).
_FLOOR_STATUS = struct.Struct("!i")


# ---- what is measured, and how much ---------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """How the server and both clients (API and CLI) are told to talk."""

    name: str
    server_flags: tuple[str, ...]
    cli_flags: tuple[str, ...]
    client_tls: bool


MODES = {
    "plain": Mode("plain", ("--no-tls", "--no-auth"), ("--no-tls",), client_tls=False),
    # The secure default: no flags.  Keys are generated by the server on first
    # start into RSHELL_HOME, and the client uses the same RSHELL_HOME.
    "tls": Mode("tls", (), (), client_tls=True),
}
#: ``--mode`` values and the modes each runs, in order.  ``ssh`` and ``all`` are
#: no Mode of the above: ``ssh`` compares rshell's SSH listener with OpenSSH's
#: sshd (run_ssh_mode); ``all`` puts rshell beside every peer (run_all_mode).
MODE_SETS = {"plain": ["plain"], "tls": ["tls"], "both": ["plain", "tls"], "ssh": ["ssh"],
             "all": ["all"]}


@dataclass(frozen=True)
class Plan:
    """Sample counts and sizes; ``--quick`` shrinks them for a smoke run."""

    rt_samples: int = 60
    rt_batch: int = 50  # commands per round-trip sample (timer noise averages out)
    tp_samples: int = 11
    tp_size: int = GiB
    cold_samples: int = 40
    warmup: int = 5


FULL = Plan()
QUICK = Plan(rt_samples=6, rt_batch=20, tp_samples=3, tp_size=128 * MiB, cold_samples=6,
             warmup=2)
#: Mode ssh: both ends of each transfer are Python or OpenSSH doing SSH crypto,
#: so smaller than the native figures (the whole mode stays under a minute).
SSH_FULL = Plan(rt_samples=20, rt_batch=20, tp_samples=5, tp_size=256 * MiB, cold_samples=0,
                warmup=2)
SSH_QUICK = Plan(rt_samples=4, rt_batch=10, tp_samples=2, tp_size=32 * MiB, cold_samples=0,
                 warmup=1)


@dataclass(frozen=True)
class AllPlan:
    """Mode all: every figure, every peer, in under 10 minutes on 2 cores
    (about 6).  The Python SSH clients stream at a few hundred MB/s, so they
    get fewer throughput samples (``tp_slow_samples``) spread over the rounds."""

    rt_samples: int = 40
    rt_batch: int = 40
    cold_samples: int = 40
    tp_size: int = GiB
    tp_samples: int = 11
    tp_slow_samples: int = 4
    conc_samples: int = 7
    conc_conns: int = 50
    conc_commands: int = 20
    mem_samples: int = 3
    mem_conns: int = 200
    warmup: int = 3


ALL_FULL = AllPlan()
ALL_QUICK = AllPlan(rt_samples=4, rt_batch=10, cold_samples=4, tp_size=64 * MiB, tp_samples=2,
                    tp_slow_samples=1, conc_samples=1, conc_conns=10, conc_commands=5,
                    mem_samples=1, mem_conns=20, warmup=1)


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}


@dataclass(frozen=True)
class Target:
    """A ratio rshell/baseline must stay at or below (``<=``) or reach (``>=``);
    in mode all also ``<``, ``>``, ``==``, and for an absolute figure (memory
    per connection, errors) the value itself rather than a ratio."""

    op: str
    value: float
    source: str

    def met(self, ratio: float | None) -> bool:
        return ratio is not None and _OPS[self.op](ratio, self.value)

    def as_json(self, ratio: float | None) -> dict[str, Any]:
        return {"op": self.op, "value": self.value, "source": self.source,
                "pass": self.met(ratio)}


def targets(figure: str, mode: str) -> list[Target]:
    """The current target first, then the later (issue 6) one, from the issues."""
    if mode == "ssh":
        return []  # rshell's SSH listener vs sshd: informational, no target
    if figure == "roundtrip":
        return [Target("<=", 1.5, "issue 2"), Target("<=", 1.2, "issue 6")]
    if figure == "throughput" and mode == "plain":
        return [Target(">=", 0.7, "issue 2/6")]
    if figure == "throughput":
        return [Target(">=", 0.7, "issue 3"), Target(">=", 0.85, "issue 6")]
    return []  # cold: the ratio is reported (issue 3); issue 6 compares it to ssh


# ---- statistics -------------------------------------------------------------------------


def alternate(
    baseline: Callable[[], float], rshell: Callable[[], float], n: int
) -> tuple[list[float], list[float]]:
    """A B A B ...: both sides see the same drift."""
    a, b = interleave([baseline, rshell], n)
    return a, b


def interleave(sides: list[Callable[[], float]], n: int) -> list[list[float]]:
    """A B C A B C ...: every side sees the same drift."""
    samples: list[list[float]] = [[] for _ in sides]
    for _ in range(n):
        for side, out in zip(sides, samples, strict=True):
            gc.collect()
            out.append(side())
    return samples


def figure_result(
    name: str, mode: str, unit: str, base: list[float], rsh: list[float], **extra: Any
) -> dict[str, Any]:
    """Ratio of medians (rshell / baseline), targets, and the paired ratios."""
    bs, rs = summarize(base), summarize(rsh)
    ratio = rs["median"] / bs["median"]
    paired = [r / b for b, r in zip(base, rsh, strict=True)]
    return {
        "unit": unit, "baseline": bs, "rshell": rs, "ratio": ratio,
        "paired_ratio": {k: v for k, v in summarize(paired).items() if k != "samples"},
        "targets": [t.as_json(ratio) for t in targets(name, mode)], **extra,
    }


@dataclass
class Side:
    """One contender of a mode-all figure: rshell in some setup, or a peer.

    ``n`` samples of ``sample()`` are spread evenly over the figure's rounds;
    ``error`` set (before or during the rounds) fails this side only: its
    comparisons say so and the rest of the figure is still measured."""

    name: str
    label: str
    what: str
    sample: Callable[[], float] | None = None
    n: int = 0
    warm: Callable[[], Any] | None = None
    error: str | None = None
    samples: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def due(self, r: int, total: int) -> bool:
        """Is round ``r`` of ``total`` one of this side's ``n`` (evenly spread)?"""
        return self.n * (r + 1) // total > self.n * r // total

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "what": self.what}
        if self.samples:
            out.update(summarize(self.samples), rounds=self.rounds)
        if self.error:
            out["error"] = self.error
        return out | self.extra


def run_rounds(sides: list[Side], figure: str, warmup: int) -> int:
    """Warm-up, then rounds of A B C A B C ..., each side only in its rounds; a
    side that raises is failed and left out of the rounds that follow.  The
    number of rounds."""
    rounds = max((s.n for s in sides), default=0)

    def take(side: Side, fn: Callable[[], Any]) -> Any:
        gc.collect()
        try:
            return fn()
        except Exception as exc:  # a peer's own exceptions too: fail that side only
            side.error = str(exc) if isinstance(exc, BenchError) \
                else f"{type(exc).__name__}: {exc}"
            progress(f"{figure}: {side.label} failed: {side.error.splitlines()[0]}")
            return None

    for side in sides:
        warm = side.warm or side.sample
        for _ in range(warmup if side.error is None and side.n else 0):
            if side.error is None and warm is not None:
                take(side, warm)
    for r in range(rounds):
        for side in sides:
            if side.error is None and side.sample is not None and side.due(r, rounds):
                value = take(side, side.sample)
                if value is not None:
                    side.samples.append(value)
                    side.rounds.append(r)
    return rounds


def compare(rshell: Side, peer: Side, goals: list[Target],
            bound: str | None = None) -> dict[str, Any]:
    """rshell's median over the peer's, the median of the ratios of samples
    taken in the same round, and the targets; or why it cannot be had.
    ``bound`` marks an informational row against (or of) a bound: ``ceiling``
    (a relay ceiling), ``floor`` (the spawn floor against subprocess.run); the
    ``rshell`` side of a ``floor`` row is the floor itself."""
    out: dict[str, Any] = {"rshell": rshell.name, "peer": peer.name}
    if bound:
        out["bound"] = bound
    missing = [s for s in (rshell, peer) if s.error or not s.samples]
    if missing:
        out["error"] = "; ".join(f"{s.label}: {s.error or 'no samples'}" for s in missing)
        out["ratio"] = None
    else:
        out["ratio"] = statistics.median(rshell.samples) / statistics.median(peer.samples)
        theirs = dict(zip(peer.rounds, peer.samples, strict=True))
        paired = [v / theirs[r] for r, v in zip(rshell.rounds, rshell.samples, strict=True)
                  if r in theirs]
        if paired:
            out["paired_ratio"] = {k: v for k, v in summarize(paired).items()
                                   if k != "samples"}
    out["targets"] = [t.as_json(out["ratio"]) for t in goals]
    return out


def absolute(rshell: Side, value: float | None, unit: str, goals: list[Target],
             what: str) -> dict[str, Any]:
    """A figure of rshell's own against a fixed bound (no peer, no ratio)."""
    out: dict[str, Any] = {"rshell": rshell.name, "peer": None, "what": what, "unit": unit,
                           "value": value}
    if value is None:
        out["error"] = f"{rshell.label}: {rshell.error or 'no samples'}"
    out["targets"] = [t.as_json(value) for t in goals]
    return out


def all_figure(unit: str, rounds: int, sides: list[Side], comparisons: list[dict[str, Any]],
               **extra: Any) -> dict[str, Any]:
    return {"unit": unit, "rounds": rounds, "sides": {s.name: s.as_json() for s in sides},
            "comparisons": comparisons, **extra}


# ---- processes we start ---------------------------------------------------------------


class ServerProcess:
    """``rshell-server --bind 127.0.0.1:0`` with its log in a file.

    The log goes to a file, not a pipe we drain: a reader thread would compete
    for the GIL with the client being measured, and an undrained pipe would
    block the server once it fills with per-command log lines.
    """

    def __init__(self, exe: Path, flags: tuple[str, ...], env: dict[str, str], log: Path):
        self.log_path = log
        self.argv = [str(exe), "--bind", f"{LOOPBACK}:0", *flags]
        with open(log, "wb") as sink:
            self.proc = subprocess.Popen(
                self.argv, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            )
        self.address = self.wait_listening(_LISTEN, "listening on", 20.0)

    def wait_listening(self, pattern: re.Pattern[str], what: str, timeout: float) -> str:
        """The address of the first log line matching ``pattern``; 127.0.0.1 only."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.search(self.log_path.read_text(errors="replace"))
            if found:
                address = found.group(1)
                if address.rsplit(":", 1)[0] != LOOPBACK:
                    self.stop()
                    raise BenchError(f"server says '{what} {address}', not on {LOOPBACK}")
                return address
            if self.proc.poll() is not None:
                raise BenchError(
                    f"rshell-server exited with status {self.proc.returncode} before "
                    f"'{what}':\n{self.log_tail()}")
            time.sleep(0.02)
        self.stop()
        raise BenchError(f"rshell-server did not say '{what}' in {timeout:g}s:\n"
                         f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])

    def stop(self) -> int | None:
        """SIGTERM (a graceful shutdown), SIGKILL if that takes over 15 s."""
        return stop_process(self.proc, 15.0)


def tool(bin_dir: Path, name: str) -> Path:
    """An rshell console script next to the interpreter (the venv), or on PATH."""
    path = bin_dir / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} not found in {bin_dir} nor on PATH; is rshell installed?")
    return Path(found)


def script_interpreter(script: Path) -> str:
    """The interpreter a console script runs under (its shebang), for a fair
    ``python -c pass`` baseline; this interpreter if that cannot be read."""
    try:
        with open(script, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!"):
        parts = first[2:].split()
        if parts and Path(parts[0]).name.startswith("python") and os.access(parts[0], os.X_OK):
            return parts[0]
    return sys.executable


# ---- the rshell side --------------------------------------------------------------------


def rshell_connect() -> Callable[..., Any]:
    """``rshell.connect``; through ``rshell.client`` if the package's lazy export is
    unreachable (a stale editable install can leave ``rshell`` a namespace package)."""
    import rshell

    try:
        connect: Callable[..., Any] = rshell.connect
    except AttributeError:
        from rshell.client import connect
    return connect


def probe_tls(address: str) -> dict[str, str]:
    """Does the server answer a TLS 1.3 handshake?  Checked before anything else so
    that a server that does not speak TLS yet fails with this message, not a
    protocol error three layers down."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # identity is the client's business; this probes TLS
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                ctx.wrap_socket(raw) as tls:
            cipher = tls.cipher()
            return {"version": str(tls.version()), "cipher": cipher[0] if cipher else "?"}
    except (ssl.SSLError, OSError) as exc:
        raise BenchError(
            f"rshell-server (default flags) at {address} does not answer a TLS 1.3 "
            f"handshake ({type(exc).__name__}: {exc}); server-side TLS is not implemented "
            "yet? Use --mode plain meanwhile.") from None


def open_connection(address: str, mode: Mode) -> tuple[Any, dict[str, str]]:
    """One API connection; in TLS mode, proof that it really is TLS (best effort)."""
    connect = rshell_connect()
    try:
        conn = connect(address, tls=mode.client_tls, connect_timeout=15.0)
    except Exception as exc:
        raise BenchError(
            f"rshell.connect({address!r}, tls={mode.client_tls}) failed: "
            f"{type(exc).__name__}: {exc}"
            + ("; client-side TLS or authentication not implemented yet?"
               if mode.client_tls else "")) from None
    info: dict[str, str] = {}
    sock = getattr(getattr(conn, "_stream", None), "sock", None)  # private: best effort
    if mode.client_tls and sock is not None:
        if not isinstance(sock, ssl.SSLSocket):
            conn.close()
            raise BenchError("rshell.connect(tls=True) returned a plain-TCP connection: "
                             "client-side TLS is not implemented yet")
        cipher = sock.cipher()
        info = {"version": str(sock.version()), "cipher": cipher[0] if cipher else "?"}
    return conn, info


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


# ---- figure 1: round trip ---------------------------------------------------------------


def bench_roundtrip(conn: Any, mode: Mode, plan: Plan) -> dict[str, Any]:
    """Per-command time of ``true`` over one open connection vs an in-process
    ``subprocess.run``: what a caller pays per remote command beyond a local one."""
    k = plan.rt_batch
    run = conn.run
    first = run("true")
    if first.exit_code != 0:
        raise BenchError(f"conn.run('true') gave exit {first.exit_code}, error {first.error}")

    def baseline() -> float:
        start = time.perf_counter()
        for _ in range(k):
            subprocess.run(SH_TRUE)
        return (time.perf_counter() - start) / k * 1e3

    def rshell() -> float:
        start = time.perf_counter()
        for _ in range(k):
            run("true")
        return (time.perf_counter() - start) / k * 1e3

    floor_peer = FloorPeer()
    try:
        def floor() -> float:
            start = time.perf_counter()
            for _ in range(k):
                floor_peer.checked()
            return (time.perf_counter() - start) / k * 1e3

        for _ in range(plan.warmup):
            baseline()
            floor()
            rshell()
        progress(f"{mode.name}: round trip, {plan.rt_samples} x {k} commands each side: "
                 "subprocess.run, spawn floor, rshell")
        base, flo, rsh = interleave([baseline, floor, rshell], plan.rt_samples)
    finally:
        floor_peer.stop()
    result = figure_result("roundtrip", mode.name, "ms/command", base, rsh, batch=k,
                           baseline_what="subprocess.run(['/bin/sh', '-c', 'true'])",
                           rshell_what="conn.run('true')")
    result["spawn_floor"] = floor_result(base, flo, rsh)
    result["notes"] = [floor_note(result["baseline"]["median"],
                                  result["spawn_floor"]["floor"]["median"],
                                  result["rshell"]["median"], "rshell")]
    return result


def floor_result(base: list[float], flo: list[float], rsh: list[float]) -> dict[str, Any]:
    """The spawn floor against subprocess.run (``of_baseline``: what the least
    server costs over a local spawn), and rshell against the floor (``ratio``);
    both informational, no target."""
    stats = summarize(flo)

    def paired(num: list[float], den: list[float]) -> dict[str, Any]:
        ratios = [a / b for a, b in zip(num, den, strict=True)]
        return {k: v for k, v in summarize(ratios).items() if k != "samples"}

    return {
        "what": FLOOR_WHAT,
        "floor": stats,
        "of_baseline": stats["median"] / statistics.median(base),
        "paired_of_baseline": paired(flo, base),
        "ratio": statistics.median(rsh) / stats["median"],
        "paired_ratio": paired(rsh, flo),
        "target": "(floor)",
    }


# ---- figure 2: throughput ---------------------------------------------------------------


def generator_commands(size: int) -> dict[str, str]:
    """Candidate output generators for the server to run, by name."""
    cmds = {"head": f"head -c {size} /dev/zero"}
    if size % MiB == 0:
        cmds["dd"] = f"dd if=/dev/zero bs=1M count={size // MiB} status=none"
    return cmds


def time_generator(command: str, size: int) -> dict[str, float]:
    """The generator alone: into /dev/null, and into a pipe drained the way the
    server drains it (1 MiB pipe, readv into a 1 MiB buffer).  The second rate
    is the ceiling rshell can reach with this generator."""
    start = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", f"{command} > /dev/null"], check=True)
    devnull = time.perf_counter() - start
    buf = bytearray(MiB)
    start = time.perf_counter()
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, RELAY_PIPE)  # as rshell's server does
    except OSError:
        pass
    got = 0
    while n := os.readv(fd, [buf]):
        got += n
    proc.stdout.close()
    proc.wait()
    piped = time.perf_counter() - start
    if got != size:
        raise BenchError(f"generator {command!r} produced {got} bytes, not {size}")
    return {"devnull_MBps": size / devnull / 1e6, "pipe_MBps": size / piped / 1e6}


def pick_generator(size: int, forced: str) -> tuple[str, dict[str, Any]]:
    """The fastest candidate (by the pipe rate, best of two), unless forced."""
    cmds = generator_commands(size)
    if forced != "auto" and forced not in cmds:
        raise BenchError(f"--generator {forced} cannot produce {size} bytes")
    probes: dict[str, Any] = {}
    for name, cmd in cmds.items():
        runs = [time_generator(cmd, size) for _ in range(2)]
        probes[name] = {"command": cmd,
                        "devnull_MBps": max(r["devnull_MBps"] for r in runs),
                        "pipe_MBps": max(r["pipe_MBps"] for r in runs)}
    name = forced if forced != "auto" else max(probes, key=lambda n: probes[n]["pipe_MBps"])
    return name, probes


def start_helper(argv: list[str], what: str) -> tuple[subprocess.Popen[str], int]:
    """Start a helper process of this script that prints the port it listens on."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        stop_process(proc, 5.0)
        raise BenchError(f"{what} did not start (said {line!r})")
    return proc, int(line)


class RawPeer:
    """The baselines' sender: this script in ``--raw-sender`` mode, in its own
    process (as rshell's server is), serving one transfer per connection: from
    a buffer (the raw transfer), or a command's output relayed from a pipe (the
    relay ceiling)."""

    def __init__(self, tls_files: tuple[Path, Path] | None) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--raw-sender"]
        self.client_ctx: ssl.SSLContext | None = None
        if tls_files is not None:
            cert, key = tls_files
            argv += ["--raw-cert", str(cert), "--raw-key", str(key)]
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.load_verify_locations(cert)
            self.client_ctx = ctx
        self.proc, self.port = start_helper(argv, "raw sender")
        self.buf = bytearray(RAW_CHUNK)
        self.info: dict[str, str] = {}

    def transfer(self, size: int, command: str = "") -> float:
        """Seconds from connect to the last of ``size`` bytes received: sent from
        a buffer, or, given a ``command``, that command's output relayed."""
        request = _REQUEST.pack(size, len(cmd := command.encode())) + cmd
        view = memoryview(self.buf)
        start = time.perf_counter()
        sock: socket.socket = socket.create_connection((LOOPBACK, self.port), timeout=60)
        try:
            if self.client_ctx is not None:
                tls = self.client_ctx.wrap_socket(sock, server_hostname="localhost")
                sock = tls
                cipher = tls.cipher()
                self.info = {"version": str(tls.version()), "cipher": cipher[0] if cipher else "?"}
            sock.sendall(request)
            got = 0
            recv_into = sock.recv_into
            while got < size:
                n = recv_into(view)
                if not n:
                    what = f"relay of {command!r}" if command else "raw sender"
                    raise BenchError(f"{what} closed after {got} of {size} bytes")
                got += n
            elapsed = time.perf_counter() - start
        finally:
            sock.close()
        return elapsed

    def stop(self) -> None:
        stop_process(self.proc, 5.0)


def raw_sender_main(cert: str | None, key: str | None) -> int:
    """Accept, read the request, send that many bytes, close; until killed.

    With no command, from one preallocated buffer with ``sendall`` (the raw
    transfer).  With a command, the relay ceiling: run it as rshell's server
    does (``/bin/sh -c``, stdout a pipe), and relay the pipe to the socket."""
    srv = socket.create_server((LOOPBACK, 0))
    ctx = None
    if cert and key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(cert, key)
    print(srv.getsockname()[1], flush=True)
    view = memoryview(bytearray(max(RAW_CHUNK, RELAY_PIPE)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        conn, _ = srv.accept()
        # Every transfer gets TCP_NODELAY, as rshell's sockets do: over TLS,
        # where each 16 KiB record is a write of its own, it is faster, and a
        # baseline must be the best a raw Python transfer can do.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if ctx is not None:
                conn = ctx.wrap_socket(conn, server_side=True)
            head = recv_exact(conn, _REQUEST.size)
            if len(head) < _REQUEST.size:
                continue
            left, cmd_len = _REQUEST.unpack(head)
            command = recv_exact(conn, cmd_len).decode()
            if command:
                relay_command(command, conn, view[:RELAY_PIPE])
                continue
            while left:
                n = min(left, RAW_CHUNK)
                conn.sendall(view[:n])
                left -= n
        except OSError:
            pass  # the receiver went away; serve the next one
        finally:
            conn.close()


def recv_exact(conn: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer if the peer closed first."""
    data = b""
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            break
        data += more
    return data


def relay_command(command: str, conn: socket.socket, view: memoryview) -> None:
    """The relay ceiling: ``command`` writes into a 1 MiB pipe; a loop of
    ``readv`` into one preallocated pipe-sized buffer and ``sendall`` moves it
    to the socket, with nothing else per chunk (no framing, no polling, no
    accounting).  A server that runs commands behind a pipe cannot do less."""
    import fcntl

    r, w = os.pipe()
    try:
        fcntl.fcntl(r, _F_SETPIPE_SZ, RELAY_PIPE)  # before the command starts writing
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size: the default pipe still works
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                                stdout=w)
    finally:
        os.close(w)
    try:
        readv, send, bufs = os.readv, conn.sendall, [view]
        while n := readv(r, bufs):
            send(view[:n])
    finally:
        os.close(r)  # an unfinished command gets SIGPIPE
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

# ---- the spawn floor: the least a Python server can do per command ----------------------


class FloorPeer:
    """The round trip's floor: this script in ``--floor-server`` mode, in its own
    process (as rshell's server is), and one open TCP connection to it.  A
    request is the command's text, the reply its exit status (4 bytes); one
    request at a time, so one ``recv`` reads one request."""

    def __init__(self) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--floor-server"]
        self.proc, self.port = start_helper(argv, "spawn floor server")
        try:
            self.sock = socket.create_connection((LOOPBACK, self.port), timeout=30)
        except OSError as exc:
            stop_process(self.proc, 5.0)
            raise BenchError(f"spawn floor server: cannot connect: {exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def run(self, command: bytes = b"true") -> int:
        """Send ``command``, block for its exit status."""
        self.sock.sendall(command)
        reply = recv_exact(self.sock, _FLOOR_STATUS.size)
        if len(reply) < _FLOOR_STATUS.size:
            raise BenchError(f"spawn floor server closed the connection ({reply!r})")
        status: int = _FLOOR_STATUS.unpack(reply)[0]
        return status

    def checked(self) -> None:
        """One ``true``, which must exit 0."""
        if (status := self.run()) != 0:
            raise BenchError(f"spawn floor: 'true' exited {status}")

    def stop(self) -> None:
        self.sock.close()
        stop_process(self.proc, 5.0)


#: What the floor does per command, for the JSON and the table's notes.
FLOOR_WHAT = ("a minimal server process (bench.py --floor-server) over one open TCP "
              "connection (TCP_NODELAY both ends): per request, two os.pipe(), "
              "os.posix_spawn('/bin/sh', ['/bin/sh', '-c', cmd], setsid=True; stdin "
              "/dev/null, stdout/stderr the pipes), pidfd_open, one epoll until both pipes "
              "hit EOF and the pidfd fired, waitpid, exit status back in 4 bytes; no "
              "framing, JSON, TLS, auth, limits or logging")


def floor_server_main() -> int:
    """Accept, then for each request (a command's text, one ``recv``) run it as
    cheaply as a Python server can and send back its exit status; until killed."""
    srv = socket.create_server((LOOPBACK, 0))
    print(srv.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    buf = bytearray(64 * 1024)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while request := conn.recv(65536):
                status = floor_spawn(request.decode(), buf)
                conn.sendall(_FLOOR_STATUS.pack(status))
        except OSError:
            pass  # the client went away; serve the next one
        finally:
            conn.close()


def floor_spawn(command: str, buf: bytearray) -> int:
    """Run ``command`` the least costly way a Python server can and still do
    what any server must: its own session, stdin /dev/null, stdout and stderr
    pipes drained to EOF (and discarded), its exit seen through a pidfd in the
    same epoll as the pipes, then reaped.  The exit code (negative: a signal)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(
            "/bin/sh", ["/bin/sh", "-c", command], os.environ,
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, out_w, 1),
                          (os.POSIX_SPAWN_DUP2, err_w, 2)],
            setsid=True)
    finally:
        os.close(out_w)
        os.close(err_w)
    pidfd = os.pidfd_open(pid)
    poller = select.epoll()
    try:
        for fd in (out_r, err_r, pidfd):
            poller.register(fd, select.EPOLLIN)
        pipes, exited, bufs = {out_r, err_r}, False, [buf]
        while pipes or not exited:
            for fd, _ in poller.poll():
                if fd == pidfd:
                    exited = True
                    poller.unregister(pidfd)
                elif not os.readv(fd, bufs):
                    poller.unregister(fd)
                    pipes.discard(fd)
        _, status = os.waitpid(pid, 0)
    finally:
        poller.close()
        for fd in (out_r, err_r, pidfd):
            os.close(fd)
    return os.waitstatus_to_exitcode(status)


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed Ed25519 certificate for localhost/127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None)
    )
    cert_path, key_path = directory / "bench-cert.pem", directory / "bench-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def bench_throughput(
    conn: Any, mode: Mode, plan: Plan, workdir: Path, generator: str, conn_info: dict[str, str],
) -> dict[str, Any]:
    """1 GiB of command output through rshell, counted by a callback, vs the same
    byte count over a raw Python socket (TCP, or TLS 1.3 in TLS mode), and vs the
    relay ceiling: the same command's output relayed pipe -> socket by a minimal
    loop over the same kind of socket (what any pipe-based server can reach)."""
    size = plan.tp_size
    gen_name, probes = pick_generator(size, generator)
    command = probes[gen_name]["command"]
    ceiling = probes[gen_name]["pipe_MBps"]
    progress(f"{mode.name}: generator {gen_name!r}: {ceiling:.0f} MB/s into a pipe, "
             f"{probes[gen_name]['devnull_MBps']:.0f} MB/s into /dev/null")
    peer = RawPeer(make_cert(workdir) if mode.client_tls else None)
    try:
        stream = rshell_stream(conn)

        def rshell(n: int = size, cmd: str = command) -> float:
            return n / stream(n, cmd) / 1e6

        def baseline(n: int = size) -> float:
            return n / peer.transfer(n) / 1e6

        def relay(n: int = size, cmd: str = command) -> float:
            return n / peer.transfer(n, cmd) / 1e6

        small = min(size, 64 * MiB)
        warm_cmd = generator_commands(small)[gen_name]
        baseline(small)
        relay(small, warm_cmd)
        rshell(small, warm_cmd)
        progress(f"{mode.name}: throughput, {plan.tp_samples} x {size // MiB} MiB each: "
                 "raw, relay ceiling, rshell")
        base, rel, rsh = interleave([baseline, relay, rshell], plan.tp_samples)
    finally:
        peer.stop()
    socket_what = ("raw Python TLS 1.3 loopback socket" if mode.client_tls
                   else "raw Python TCP loopback socket")
    result = figure_result(
        "throughput", mode.name, "MB/s", base, rsh, size_bytes=size,
        baseline_what=socket_what
        + " (sender process: sendall from a 1 MiB buffer; receiver: recv_into)",
        rshell_what=f"conn.run({command!r}, on_stdout=<count bytes>)",
        generator={"chosen": gen_name, "candidates": probes},
    )
    result["relay_ceiling"] = relay_result(base, rel, rsh, command, socket_what)
    notes = []
    if result["rshell"]["median"] >= 0.8 * ceiling:
        notes.append(f"rshell reached {result['rshell']['median'] / ceiling:.0%} of what the "
                     f"generator alone delivers into a pipe ({ceiling:.0f} MB/s): the generator "
                     "may be the bottleneck")
    reach = result["relay_ceiling"]["of_baseline"]
    beyond = [f"{t['op']} {t['value']}" + (" (later)" if i else "")
              for i, t in enumerate(result["targets"]) if reach < t["value"]]
    if beyond:
        notes.append(f"the relay ceiling reaches {reach:.2f} of the raw transfer, below the "
                     f"target {' and '.join(beyond)}: no server that runs the command "
                     "behind a pipe can meet it on this machine")
    if mode.client_tls:
        result["tls"] = {"baseline": peer.info, "rshell": conn_info}
        if conn_info and peer.info and conn_info.get("cipher") != peer.info.get("cipher"):
            notes.append(f"ciphers differ: rshell {conn_info.get('cipher')}, baseline "
                         f"{peer.info.get('cipher')}")
    result["notes"] = notes
    return result


def relay_result(
    base: list[float], rel: list[float], rsh: list[float], command: str, socket_what: str,
) -> dict[str, Any]:
    """rshell against the relay ceiling (informational, no target), and the
    ceiling against the raw transfer (what the pipe hop alone costs)."""
    stats, rs = summarize(rel), summarize(rsh)
    paired = [r / c for c, r in zip(rel, rsh, strict=True)]  # the relay runs just before
    return {
        "what": f"{command!r} into a {RELAY_PIPE // MiB} MiB pipe, relayed by a sender "
                f"process (readv into a {RELAY_PIPE // MiB} MiB buffer, sendall) over a "
                f"{socket_what} with TCP_NODELAY; receiver: recv_into",
        "relay": stats,
        "ratio": rs["median"] / stats["median"],
        "paired_ratio": {k: v for k, v in summarize(paired).items() if k != "samples"},
        "of_baseline": stats["median"] / statistics.median(base),
        "target": "(ceiling)",
    }


# ---- figure 3: cold one-shot ------------------------------------------------------------


def bench_cold(
    address: str, mode: Mode, plan: Plan, bin_dir: Path, env: dict[str, str]
) -> dict[str, Any]:
    """Whole-process ``rshell ADDR -c true`` (start, connect, handshake, run, exit)
    vs ``python -c pass`` under the same interpreter: what the interpreter alone
    costs, so the ratio shows what rshell adds."""
    exe = tool(bin_dir, "rshell")
    python = script_interpreter(exe)
    client = [str(exe), *mode.cli_flags, address, "-c", "true"]
    interp = [python, "-c", "pass"]
    for _ in range(plan.warmup):
        run_cli(interp, env, "baseline")
        run_cli(client, env, "rshell one-shot")
    progress(f"{mode.name}: cold one-shot, {plan.cold_samples} processes each side")
    base, rsh = alternate(lambda: run_cli(interp, env, "baseline") * 1e3,
                          lambda: run_cli(client, env, "rshell one-shot") * 1e3,
                          plan.cold_samples)
    return figure_result("cold", mode.name, "ms/process", base, rsh,
                         baseline_what=" ".join(interp), rshell_what=" ".join(client))


# ---- one mode, start to end -------------------------------------------------------------


def run_mode(
    mode: Mode, plan: Plan, figures: list[str], workdir: Path, bin_dir: Path, generator: str,
) -> dict[str, Any]:
    """Start a server, measure the figures asked for, stop everything started."""
    others = [f for f in figures if f not in NATIVE_FIGURES]
    figures = [f for f in figures if f in NATIVE_FIGURES]
    if not figures:
        raise BenchError(f"mode {mode.name} measures {', '.join(NATIVE_FIGURES)} only; "
                         f"{', '.join(others)}: --mode all")
    if others:
        progress(f"{mode.name}: {', '.join(others)} measured in mode all only")
    home = workdir / "home"
    home.mkdir(mode=0o700)
    env = dict(os.environ, RSHELL_HOME=str(home), PYTHONUNBUFFERED="1",
               PYTHONPYCACHEPREFIX=str(workdir / "pycache"))
    # Bytecode is cached (after the warm-up) as in an installed copy, even where
    # PYTHONDONTWRITEBYTECODE is set, and never written into the source tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out: dict[str, Any] = {"server_flags": list(mode.server_flags),
                           "client_flags": list(mode.cli_flags), "figures": {}}
    saved_home = os.environ.get("RSHELL_HOME")
    os.environ["RSHELL_HOME"] = str(home)  # the in-process client reads its keys here
    server: ServerProcess | None = None
    conn = None
    try:
        server = ServerProcess(tool(bin_dir, "rshell-server"), mode.server_flags, env,
                               workdir / "server.log")
        out["address"] = server.address
        try:
            if mode.client_tls:
                out["server_tls"] = probe_tls(server.address)
                # Pin the host key as a non-interactive first contact does, so that
                # the API client below never asks on a terminal.
                run_cli([str(tool(bin_dir, "rshell")), "--accept-new", server.address,
                         "-c", "true"], env, "first contact (pinning the host key)")
            conn_info: dict[str, str] = {}
            if {"roundtrip", "throughput"} & set(figures):
                conn, conn_info = open_connection(server.address, mode)
                out["client_tls"] = conn_info or None
            if "roundtrip" in figures:
                out["figures"]["roundtrip"] = bench_roundtrip(conn, mode, plan)
            if "throughput" in figures:
                out["figures"]["throughput"] = bench_throughput(
                    conn, mode, plan, workdir, generator, conn_info)
            if "cold" in figures:
                out["figures"]["cold"] = bench_cold(server.address, mode, plan, bin_dir, env)
        except BenchError as exc:
            raise BenchError(f"{exc}\n  server log (last lines):\n{server.log_tail()}") from None
    finally:
        if conn is not None:
            conn.close()
        if server is not None:
            out["server_exit"] = server.stop()
        if saved_home is None:
            os.environ.pop("RSHELL_HOME", None)
        else:
            os.environ["RSHELL_HOME"] = saved_home
    return out


# ---- mode ssh: rshell's SSH listener vs OpenSSH's sshd ----------------------------------


class ExitTally:
    """Commands per server, and those whose output came complete but whose exit
    status never did (paramiko's -1): a server fault that is counted and
    reported in a note, not fatal, so that it does not hide every figure.  Any
    other wrong status or byte count stops the mode."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {"sshd": [0, 0], "rshell": [0, 0]}

    def check(self, name: str, status: int, what: str) -> None:
        self.counts[name][1] += 1
        if status == -1:
            self.counts[name][0] += 1
        elif status != 0:
            raise BenchError(f"ssh: {what} on {name} exited {status}")

    def record(self, result: dict[str, Any]) -> None:
        result["lost_exit_status"] = {k: {"lost": lost, "commands": n}
                                      for k, (lost, n) in self.counts.items()}
        for name, (lost, n) in self.counts.items():
            if lost:
                result.setdefault("notes", []).append(
                    f"{name}: {lost} of {n} commands ended without an exit status (output "
                    "complete; their times are in the figure): a server fault, see its log")


def ssh_roundtrip(clients: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Per-command time of ``true``, each its own channel on one open connection."""
    k = plan.rt_batch
    tally = ExitTally()

    def side(name: str) -> Callable[[], float]:
        client = clients[name]

        def sample() -> float:
            start = time.perf_counter()
            for _ in range(k):
                tally.check(name, ssh_exec(client, "true"), "'true'")
            return (time.perf_counter() - start) / k * 1e3
        return sample

    sshd, rshell = side("sshd"), side("rshell")
    for _ in range(plan.warmup):
        sshd()
        rshell()
    progress(f"ssh: round trip, {plan.rt_samples} x {k} commands each server")
    base, rsh = alternate(sshd, rshell, plan.rt_samples)
    what = "paramiko: open_session, exec_command('true'), shutdown_write, stdout+stderr " \
           "to EOF, recv_exit_status, over one open connection"
    result = figure_result("roundtrip", "ssh", "ms/command", base, rsh, batch=k,
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
                       f"{_num(open_ms['sshd'])} ms, rshell {_num(open_ms['rshell'])} ms"]
    tally.record(result)
    return result


def ssh_throughput(clients: dict[str, Any], plan: Plan, generator: str) -> dict[str, Any]:
    """A stream of command output read with channel.recv(1 MiB), in MB/s; and the
    client's CPU (user+system, all threads) per second of transfer, which near
    1.0 means the paramiko client, not the server, set the pace."""
    size = plan.tp_size
    gen_name, probes = pick_generator(size, generator)
    command = probes[gen_name]["command"]
    cpu: dict[str, list[float]] = {"sshd": [], "rshell": []}
    tally = ExitTally()

    def side(name: str) -> Callable[..., float]:
        client = clients[name]

        def sample(n: int = size, cmd: str = command, record: bool = True) -> float:
            got = 0

            def count(data: bytes) -> None:
                nonlocal got
                got += len(data)

            cpu0, start = time.process_time(), time.perf_counter()
            status = ssh_exec(client, cmd, count)
            elapsed = time.perf_counter() - start
            if got != n:
                raise BenchError(f"ssh stream from {name}: exit {status}, {got} of {n} bytes")
            tally.check(name, status, f"{cmd!r}")
            if record:
                cpu[name].append((time.process_time() - cpu0) / elapsed)
            return n / elapsed / 1e6
        return sample

    sshd, rshell = side("sshd"), side("rshell")
    small = min(size, 16 * MiB)
    warm = generator_commands(small)[gen_name]
    sshd(small, warm, False)
    rshell(small, warm, False)
    progress(f"ssh: throughput, {plan.tp_samples} x {size // MiB} MiB each server "
             f"({gen_name!r})")
    base, rsh = alternate(sshd, rshell, plan.tp_samples)
    result = figure_result(
        "throughput", "ssh", "MB/s", base, rsh, size_bytes=size,
        baseline_what=f"OpenSSH sshd: {command!r}, paramiko channel.recv({SSH_RECV})",
        rshell_what=f"rshell-server --ssh-bind: {command!r}, paramiko channel.recv({SSH_RECV})",
        generator={"chosen": gen_name, "candidates": probes},
        client_cpu={k: summarize(v) for k, v in cpu.items()},
    )
    busy = {k: statistics.median(v) for k, v in cpu.items()}
    result["notes"] = [
        f"client CPU per second of transfer: {busy['sshd']:.2f} with sshd, "
        f"{busy['rshell']:.2f} with rshell" + (
            " (paramiko's client near a full core: it, not the server, may set the pace)"
            if max(busy.values()) >= 0.9 else "")]
    tally.record(result)
    return result


def run_ssh_mode(
    plan: Plan, figures: list[str], workdir: Path, bin_dir: Path, generator: str,
    sshd_exe: Path | None,
) -> dict[str, Any]:
    """rshell-server (secure default, plus --ssh-bind) and OpenSSH's sshd, both on
    127.0.0.1, each with the same throwaway key authorized; the same paramiko
    client code against both, samples alternating."""
    wanted = [f for f in figures if f in SSH_FIGURES]
    if not wanted:
        raise BenchError(f"mode ssh measures {' and '.join(SSH_FIGURES)} only")
    exe = find_sshd(sshd_exe)
    home = workdir / "home"
    home.mkdir(mode=0o700)
    env = dict(os.environ, RSHELL_HOME=str(home), PYTHONUNBUFFERED="1",
               PYTHONPYCACHEPREFIX=str(workdir / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    key_file = workdir / "id_ed25519"
    public = write_ssh_key(key_file)
    # sshd runs commands with the user's login shell; rshell is given the same one,
    # so that both start the same shell and the figure compares the servers.
    shell = pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"
    flags = ("--ssh-bind", f"{LOOPBACK}:0", "--shell", shell)
    out: dict[str, Any] = {"plan": plan.__dict__, "server_flags": list(flags), "shell": shell,
                           "user": getpass.getuser(), "figures": {}}
    if len(wanted) < len(figures):
        progress(f"ssh: {', '.join(f for f in figures if f not in wanted)} not measured "
                 "in this mode")
    server: ServerProcess | None = None
    sshd: SshdProcess | None = None
    clients: dict[str, Any] = {}
    try:
        server = ServerProcess(tool(bin_dir, "rshell-server"), flags, env,
                               workdir / "server.log")
        out["address"] = server.address
        out["ssh_address"] = server.wait_listening(_SSH_LISTEN, "ssh listening on", 20.0)
        with open(home / "server" / "authorized_keys", "a") as f:
            f.write(public + "\n")
        sshd = SshdProcess(exe, workdir / "sshd", public)
        out["sshd_address"] = sshd.address
        out["sshd_config"] = sshd.config.splitlines()
        try:
            clients["sshd"] = ssh_client(sshd.address, key_file, "sshd",
                                         host_key=sshd.host_key)
            clients["rshell"] = ssh_client(out["ssh_address"], key_file,
                                           "rshell-server --ssh-bind",
                                           host_key=home / "server" / "host_key")
            out["transport"] = {k: ssh_transport_info(c) for k, c in clients.items()}
            if "roundtrip" in wanted:
                out["figures"]["roundtrip"] = ssh_roundtrip(clients, plan)
            if "throughput" in wanted:
                out["figures"]["throughput"] = ssh_throughput(clients, plan, generator)
        except BenchError as exc:
            raise BenchError(f"{exc}\n  rshell-server log (last lines):\n{server.log_tail()}"
                             f"\n  sshd log (last lines):\n{sshd.log_tail()}") from None
        tr = out["transport"]
        differ = [k for k in ("cipher", "mac", "host_key", "compression")
                  if tr["sshd"][k] != tr["rshell"][k]]
        if differ and out["figures"]:
            last = list(out["figures"].values())[-1]
            last.setdefault("notes", []).append(
                "negotiated " + ", ".join(f"{k}: sshd {tr['sshd'][k]}, rshell {tr['rshell'][k]}"
                                          for k in differ))
    finally:
        for client in clients.values():
            client.close()
        if sshd is not None:
            out["sshd_exit"] = sshd.stop()
        if server is not None:
            out["server_exit"] = server.stop()
    return out


# ---- mode all: rshell beside every peer, one run ----------------------------------------


#: Mode all's rshell servers admit the 50 clients of the concurrency figure and
#: the 200 of the memory figure at once (the defaults: 100 and 64).
ALL_LIMITS = ("--max-connections", "400", "--max-unauthenticated", "128")
#: The load worker (concurrency, memory), a process of its own per sample.
LOAD = HERE / "load.py"
ISSUE6 = "issue 6"
#: A side's sample function, and what warms it up (None: the sample itself).
Probe = tuple[Callable[[], float], Callable[[], Any] | None]


def bind(side: Side, probe: Probe) -> Side:
    side.sample, side.warm = probe
    return side


class AllRig:
    """What mode all starts, once, for every figure: three rshell servers (the
    secure default with /bin/sh; the same with ``--shell`` set to the login
    shell sshd runs commands with, for every figure against an SSH peer;
    plain TCP without auth), an API connection to each, and the peers: a
    private sshd and, to it, OpenSSH's ssh, paramiko and asyncssh.  A peer that
    cannot be had is recorded in ``errors`` and its sides fail; rshell's own
    set-up failing fails the mode.  ``stack`` stops everything."""

    def __init__(self, plan: AllPlan, workdir: Path, bin_dir: Path, sshd_exe: Path | None,
                 stack: ExitStack, out: dict[str, Any]) -> None:
        self.plan, self.workdir, self.stack = plan, workdir, stack
        home = workdir / "home"
        home.mkdir(mode=0o700)
        self.env = dict(os.environ, RSHELL_HOME=str(home), PYTHONUNBUFFERED="1",
                        PYTHONPYCACHEPREFIX=str(workdir / "pycache"))
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        stack.callback(restore_env, "RSHELL_HOME", os.environ.get("RSHELL_HOME"))
        os.environ["RSHELL_HOME"] = str(home)  # the in-process client reads its keys here
        self.rshell = tool(bin_dir, "rshell")
        self.server_exe = tool(bin_dir, "rshell-server")
        self.shell = pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"
        self.shell_name = Path(self.shell).name
        self.errors: dict[str, str] = {}
        out["login_shell"] = self.shell
        out["nofile"] = raise_nofile(4096)  # 200 held connections; the servers inherit it
        flags = {"tls": ALL_LIMITS, "tls_login": ("--shell", self.shell, *ALL_LIMITS),
                 "plain": ("--no-tls", "--no-auth", *ALL_LIMITS)}
        self.servers: dict[str, ServerProcess] = {}
        self.conns: dict[str, Any] = {}
        self.tls_info: dict[str, str] = {}
        out["servers"] = {}
        for name, server_flags in flags.items():
            server = self.start_server(server_flags, f"server-{name}.log")
            self.servers[name] = server
            record: dict[str, Any] = {"address": server.address, "flags": list(server_flags)}
            out["servers"][name] = record
            stack.callback(stop_into, record, server.stop)
            mode = MODES["plain" if name == "plain" else "tls"]
            if mode.client_tls:
                record["tls"] = probe_tls(server.address)
                self.pin(server.address)
            conn, info = open_connection(server.address, mode)
            stack.callback(conn.close)
            self.conns[name] = conn
            self.tls_info = self.tls_info or info
        out["client_tls"] = self.tls_info
        self.peer_info: dict[str, Any] = {}
        out["peers"] = self.peer_info
        self.start_peers(sshd_exe)

    def start_server(self, flags: tuple[str, ...], log: str) -> ServerProcess:
        return ServerProcess(self.server_exe, flags, self.env, self.workdir / log)

    def pin(self, address: str) -> None:
        """A first non-interactive contact pins the host key, so that no client
        after it ever asks on a terminal."""
        run_cli([str(self.rshell), "--accept-new", address, "-c", "true"], self.env,
                "first contact (pinning the host key)")

    def start_peers(self, sshd_exe: Path | None) -> None:
        self.sshd: SshdProcess | None = None
        self.ssh: OpenSshClient | None = None
        self.paramiko: Any = None
        self.asyncssh: AsyncsshPeer | None = None
        self.key_file = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        public = write_ssh_key(self.key_file)
        info = self.peer_info
        try:
            self.sshd = sshd = SshdProcess(find_sshd(sshd_exe), self.workdir / "sshd", public,
                                           extra=ALL_SSHD_LIMITS, optional=ALL_SSHD_OPTIONAL)
        except BenchError as exc:
            for name in ("sshd", "ssh", "paramiko", "asyncssh"):
                self.fail_peer(name, f"no sshd: {exc}")
            return
        info["sshd"] = {"address": sshd.address, "config": sshd.config.splitlines()}
        self.stack.callback(stop_into, info["sshd"], sshd.stop)
        self.known_hosts.write_text(sshd.known_hosts_line() + "\n")
        try:
            self.ssh = OpenSshClient(find_ssh(), self.workdir, sshd, self.key_file)
            info["ssh"] = {"argv": self.ssh.argv("COMMAND"),
                           "config": self.ssh.config.read_text().splitlines(),
                           **self.ssh.negotiated()}
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            self.ssh = None
            self.fail_peer("ssh", str(exc))
        try:
            version = import_paramiko().__version__
            self.paramiko = ssh_client(sshd.address, self.key_file, "sshd",
                                       known_hosts=self.known_hosts)
            self.stack.callback(self.paramiko.close)
            info["paramiko"] = {"version": version, **ssh_transport_info(self.paramiko)}
        except BenchError as exc:
            self.fail_peer("paramiko", str(exc))
        try:
            self.asyncssh = AsyncsshPeer(sshd.address, self.key_file, self.known_hosts)
            self.stack.callback(self.asyncssh.close)
            info["asyncssh"] = {"version": self.asyncssh.asyncssh.__version__,
                                **self.asyncssh.info}
        except BenchError as exc:
            self.fail_peer("asyncssh", str(exc))

    def fail_peer(self, name: str, error: str) -> None:
        self.errors[name] = error
        self.peer_info[name] = {"error": error}
        print(f"peer {name} unavailable: {error}", flush=True)

    def bind_peer(self, side: Side, peer: str, make: Callable[[Any], Probe]) -> Side:
        """``side`` measured through ``make(<the peer>)``, or failed if that peer
        could not be had."""
        obj = {"ssh": self.ssh, "paramiko": self.paramiko, "asyncssh": self.asyncssh,
               "sshd": self.sshd}[peer]
        if obj is None:
            side.error = self.errors.get(peer, "unavailable")
            return side
        return bind(side, make(obj))

    def logs(self) -> str:
        """The last lines of every server's log, for a failure message."""
        parts = [f"  rshell-server {name} log (last lines):\n{s.log_tail()}"
                 for name, s in self.servers.items()]
        if self.sshd is not None:
            parts.append(f"  sshd log (last lines):\n{self.sshd.log_tail()}")
        return "\n".join(parts)


def stop_into(record: dict[str, Any], stop: Callable[[], int | None]) -> None:
    """Stop a process, keeping its exit status in its JSON record."""
    record["exit"] = stop()


def restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


# ---- mode all: round trip and cold ------------------------------------------------------


def checked_run(conn: Any) -> Callable[[], None]:
    """``conn.run("true")`` that raises unless it exited 0."""
    run = conn.run

    def one() -> None:
        result = run("true")
        if result.exit_code != 0:
            raise BenchError(f"rshell: 'true' exited {result.exit_code}, error {result.error}")
    return one


def per_command_ms(k: int, one: Callable[[], Any]) -> Probe:
    """A round-trip sample: the mean over ``k`` commands in a row, in ms."""
    def sample() -> float:
        start = time.perf_counter()
        for _ in range(k):
            one()
        return (time.perf_counter() - start) / k * 1e3
    return sample, None


def all_roundtrip(rig: AllRig) -> dict[str, Any]:
    """``true`` over one open connection: rshell's (TLS, /bin/sh) against an
    in-process subprocess.run; rshell's (TLS, the login shell sshd uses)
    against asyncssh's and paramiko's to sshd; rshell plain for information.
    The spawn floor (the least a Python server can do per command) is sampled
    in the same rounds: against subprocess.run, and rshell tls against it."""
    n, k = rig.plan.rt_samples, rig.plan.rt_batch

    def local() -> None:
        if subprocess.run(SH_TRUE).returncode != 0:
            raise BenchError("/bin/sh -c true failed locally")

    def paramiko_true(client: Any) -> Probe:
        def one() -> None:
            if (status := ssh_exec(client, "true")) != 0:
                raise BenchError(f"paramiko: 'true' exited {status}")
        return per_command_ms(k, one)

    def asyncssh_true(peer: AsyncsshPeer) -> Probe:
        return (lambda: peer.roundtrip(k)), None

    sub = bind(Side("subprocess", "subprocess.run", "subprocess.run(['/bin/sh', '-c', "
                    "'true']) in this process", n=n), per_command_ms(k, local))
    floor = Side("spawn_floor", "spawn floor", FLOOR_WHAT, n=n)
    try:
        floor_peer = FloorPeer()
        rig.stack.callback(floor_peer.stop)
        bind(floor, per_command_ms(k, floor_peer.checked))
    except BenchError as exc:
        floor.error = str(exc)
    tls = bind(Side("rshell_tls", "rshell tls", "conn.run('true'), secure default (TLS, key "
                    "auth), shell /bin/sh", n=n),
               per_command_ms(k, checked_run(rig.conns["tls"])))
    login = bind(Side("rshell_tls_login", f"rshell tls ({rig.shell_name})",
                      f"conn.run('true'), secure default, --shell {rig.shell} (as sshd)", n=n),
                 per_command_ms(k, checked_run(rig.conns["tls_login"])))
    plain = bind(Side("rshell_plain", "rshell plain", "conn.run('true'), --no-tls --no-auth, "
                      "shell /bin/sh", n=n), per_command_ms(k, checked_run(rig.conns["plain"])))
    assh = rig.bind_peer(Side("asyncssh", "asyncssh", "await conn.run('true') to sshd: one "
                              "exec channel per command, one open connection", n=n),
                         "asyncssh", asyncssh_true)
    para = rig.bind_peer(Side("paramiko", "paramiko", "open_session, exec_command('true'), "
                              "shutdown_write, stdout+stderr to EOF, recv_exit_status, one "
                              "open connection to sshd (TCP_NODELAY)", n=n),
                         "paramiko", paramiko_true)
    sides = [sub, floor, tls, login, plain, assh, para]
    progress(f"all: round trip, {n} rounds of {k} commands: "
             + ", ".join(s.label for s in sides))
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
        notes.append(floor_note(statistics.median(sub.samples),
                                statistics.median(floor.samples),
                                statistics.median(tls.samples), "rshell tls"))
    return all_figure("ms/command", rounds, sides, comparisons, batch=k, notes=notes)


def floor_note(sub: float, floor: float, rshell: float, label: str) -> str:
    """What the spawn floor says about a round-trip figure (medians, ms)."""
    return (f"spawn floor = {floor / sub:.2f} x subprocess.run: the least a Python server "
            f"that spawns each command behind pipes costs (no protocol, TLS, auth or "
            f"limits); {label} - spawn floor: {rshell - floor:+.3f} ms per command")


def all_cold(rig: AllRig) -> dict[str, Any]:
    """A whole one-shot process: ``rshell ADDR -c true`` (TLS, key auth, host
    key pinned) against a cold OpenSSH ``ssh ... true`` to sshd (its default
    algorithms), and ``python -c pass`` for what the interpreter alone costs."""
    n = rig.plan.cold_samples
    client = [str(rig.rshell), rig.servers["tls_login"].address, "-c", "true"]
    interp = [script_interpreter(rig.rshell), "-c", "pass"]

    def process_ms(argv: list[str], what: str) -> Probe:
        return (lambda: run_cli(argv, rig.env, what) * 1e3), None

    rsh = bind(Side("rshell", f"rshell -c ({rig.shell_name})", " ".join(client), n=n),
               process_ms(client, "rshell one-shot"))
    py = bind(Side("python", "python -c pass", " ".join(interp), n=n),
              process_ms(interp, "python -c pass"))
    ssh = rig.bind_peer(Side("ssh", "ssh (OpenSSH)", "ssh -F <minimal config> -p PORT -i KEY "
                             "-o BatchMode=yes -o UserKnownHostsFile=<pinned> -o "
                             "StrictHostKeyChecking=yes 127.0.0.1 true", n=n),
                        "ssh", lambda c: process_ms(c.argv("true"), "ssh one-shot"))
    sides = [py, rsh, ssh]
    progress(f"all: cold one-shot, {n} rounds: " + ", ".join(s.label for s in sides))
    rounds = run_rounds(sides, "cold", rig.plan.warmup)
    return all_figure("ms/process", rounds, sides,
                      [compare(rsh, ssh, [Target("<=", 0.5, ISSUE6)]), compare(rsh, py, [])])


# ---- mode all: throughput ---------------------------------------------------------------


def all_throughput(rig: AllRig, generator: str) -> dict[str, Any]:
    """The same generator command's output, ``tp_size`` bytes, through every
    contender.  In-process clients over an open connection (rshell TLS and
    plain, asyncssh, paramiko) against raw Python TLS/TCP transfers and relay
    ceilings; whole processes writing into /dev/null (the rshell CLI and
    OpenSSH's ssh) against each other, handshake and all."""
    plan = rig.plan
    size, n, slow = plan.tp_size, plan.tp_samples, plan.tp_slow_samples
    gen_name, probes = pick_generator(size, generator)
    command = probes[gen_name]["command"]
    small = min(size, 64 * MiB)
    warm_cmd = generator_commands(small)[gen_name]
    progress(f"all: generator {gen_name!r}: {probes[gen_name]['pipe_MBps']:.0f} MB/s into "
             "a pipe")
    raw_tls = RawPeer(make_cert(rig.workdir))
    rig.stack.callback(raw_tls.stop)
    raw_tcp = RawPeer(None)
    rig.stack.callback(raw_tcp.stop)

    def api(side: Side, stream: Callable[[int, str], float]) -> Probe:
        """``stream(bytes, command)`` -> seconds, as MB/s samples, recording this
        process's CPU per second of transfer (near 1.0: the client set the pace)."""
        cpu: list[float] = side.extra.setdefault("client_cpu_per_s", [])

        def sample() -> float:
            cpu0 = time.process_time()
            seconds = stream(size, command)
            cpu.append((time.process_time() - cpu0) / seconds)
            return size / seconds / 1e6
        return sample, lambda: stream(small, warm_cmd)

    def whole_process(argv: Callable[[str], list[str]], what: str) -> Probe:
        return (lambda: size / run_cli(argv(command), rig.env, what) / 1e6,
                lambda: run_cli(argv(warm_cmd), rig.env, what))

    def raw(peer: RawPeer, relay: bool) -> Probe:
        cmd, warm = (command, warm_cmd) if relay else ("", "")
        return (lambda: size / peer.transfer(size, cmd) / 1e6,
                lambda: peer.transfer(small, warm))

    cli = [str(rig.rshell), rig.servers["tls_login"].address, "-c"]
    tls = Side("rshell_tls", "rshell tls", f"conn.run({command!r}, on_stdout=<count bytes>),"
               " secure default, one open connection", n=n)
    plain = Side("rshell_plain", "rshell plain", f"conn.run({command!r}, on_stdout=<count "
                 "bytes>), --no-tls --no-auth, one open connection", n=n)
    assh = Side("asyncssh", "asyncssh", "create_session(<count bytes in data_received>, "
                "command), stdin EOF, one open connection to sshd", n=slow)
    para = Side("paramiko", "paramiko", "exec_command, shutdown_write, channel.recv(1 MiB) "
                "to EOF, one open connection to sshd", n=slow)
    sides = [
        bind(Side("raw_tls", "raw TLS 1.3", "raw Python TLS 1.3 loopback socket: a sender "
                  "process sendall()s from a 1 MiB buffer, this one recv_into()s", n=n),
             raw(raw_tls, False)),
        bind(Side("relay_tls", "relay ceiling TLS", f"{command!r} into a 1 MiB pipe, relayed "
                  "by a minimal readv+sendall loop over the same TLS socket", n=n),
             raw(raw_tls, True)),
        bind(tls, api(tls, rshell_stream(rig.conns["tls"]))),
        bind(Side("rshell_cli", f"rshell CLI ({rig.shell_name})",
                  f"rshell ADDR -c {command!r} > /dev/null, whole process", n=n),
             whole_process(lambda c: [*cli, c], "rshell CLI stream")),
        rig.bind_peer(Side("ssh", "ssh (OpenSSH)", f"ssh ... 127.0.0.1 {command!r} > "
                           "/dev/null, whole process, default algorithms", n=n),
                      "ssh", lambda c: whole_process(c.argv, "ssh stream")),
        rig.bind_peer(assh, "asyncssh", lambda peer: api(assh, peer.stream)),
        rig.bind_peer(para, "paramiko", lambda client: api(para, paramiko_stream(client))),
        bind(Side("raw_tcp", "raw TCP", "raw Python TCP loopback socket: a sender process "
                  "sendall()s from a 1 MiB buffer, this one recv_into()s", n=n),
             raw(raw_tcp, False)),
        bind(Side("relay_tcp", "relay ceiling TCP", f"{command!r} into a 1 MiB pipe, relayed "
                  "over plain TCP", n=n), raw(raw_tcp, True)),
        bind(plain, api(plain, rshell_stream(rig.conns["plain"]))),
    ]
    by = {s.name: s for s in sides}
    progress(f"all: throughput, {max(n, slow)} rounds of {size // MiB} MiB (asyncssh and "
             f"paramiko in {slow} of them): " + ", ".join(s.label for s in sides))
    rounds = run_rounds(sides, "throughput", 1)
    comparisons = [
        compare(tls, by["raw_tls"], [Target(">=", 0.85, ISSUE6)]),
        compare(tls, by["relay_tls"], [], bound="ceiling"),
        compare(by["rshell_cli"], by["ssh"], [Target(">=", 1.5, ISSUE6)]),
        compare(tls, assh, []),
        compare(tls, para, []),
        compare(plain, by["raw_tcp"], [Target(">=", 0.7, "issue 2/6")]),
        compare(plain, by["relay_tcp"], [], bound="ceiling"),
    ]
    ciphers = {"rshell": rig.tls_info.get("cipher"), "raw TLS": raw_tls.info.get("cipher")}
    ciphers |= {p: rig.peer_info.get(p, {}).get("cipher") for p in ("ssh", "asyncssh",
                                                                     "paramiko")}
    notes = ["ciphers: " + ", ".join(f"{k} {v}" for k, v in ciphers.items() if v)]
    for relay, base in (("relay_tls", "raw_tls"), ("relay_tcp", "raw_tcp")):
        if by[relay].samples and by[base].samples:
            reach = statistics.median(by[relay].samples) / statistics.median(by[base].samples)
            notes.append(f"{by[relay].label} = {reach:.2f} x {by[base].label}: what the pipe "
                         "hop alone costs; no server that runs the command behind a pipe "
                         "does better")
    busy = {s.label: statistics.median(s.extra["client_cpu_per_s"]) for s in sides
            if s.extra.get("client_cpu_per_s")}
    if busy:
        notes.append("client CPU per second of transfer: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
                     + " (near 1.0: that client, not the server, set the pace)")
    return all_figure("MB/s", rounds, sides, comparisons, size_bytes=size,
                      generator={"chosen": gen_name, "candidates": probes}, notes=notes)


def rshell_stream(conn: Any) -> Callable[[int, str], float]:
    """Seconds for ``command``'s output through ``conn``, counted by a callback."""
    def stream(size: int, command: str) -> float:
        counted = 0

        def sink(chunk: bytes | memoryview) -> None:
            nonlocal counted
            counted += len(chunk)
        start = time.perf_counter()
        result = conn.run(command, on_stdout=sink)
        elapsed = time.perf_counter() - start
        if result.exit_code != 0 or counted != size:
            raise BenchError(f"rshell stream: exit {result.exit_code}, error {result.error}, "
                             f"{counted} of {size} bytes")
        return elapsed
    return stream


def paramiko_stream(client: Any) -> Callable[[int, str], float]:
    """Seconds for ``command``'s output through paramiko, read with recv(1 MiB)."""
    def stream(size: int, command: str) -> float:
        got = 0

        def count(data: bytes) -> None:
            nonlocal got
            got += len(data)
        start = time.perf_counter()
        status = ssh_exec(client, command, count)
        elapsed = time.perf_counter() - start
        if status != 0 or got != size:
            raise BenchError(f"paramiko stream: exit {status}, {got} of {size} bytes")
        return elapsed
    return stream


# ---- mode all: concurrency and memory ---------------------------------------------------


def load_argv(rig: AllRig, action: str, peer: str, conns: int, address: str = "") -> list[str]:
    """load.py for ``peer``: rshell to ``address`` (default: the login-shell
    server), the others to sshd."""
    if peer == "rshell":
        target = ["--address", address or rig.servers["tls_login"].address]
    else:
        assert rig.sshd is not None
        target = ["--address", rig.sshd.address, "--key", str(rig.key_file),
                  "--known-hosts", str(rig.known_hosts)]
    return [sys.executable, str(LOAD), action, "--peer", peer, "--conns", str(conns), *target]


def all_concurrency(rig: AllRig) -> dict[str, Any]:
    """``conc_conns`` clients at once, each its own connection running ``true``
    ``conc_commands`` times, driven from a fresh load.py process per sample
    (rshell and paramiko: a thread per connection; asyncssh: one event loop);
    commands/s from the start (connects included) to the last result."""
    plan = rig.plan
    n, conns, commands = plan.conc_samples, plan.conc_conns, plan.conc_commands

    def driver(side: Side, peer: str) -> Probe:
        runs: list[dict[str, Any]] = side.extra.setdefault("runs", [])
        argv = [*load_argv(rig, "run", peer, conns), "--commands", str(commands)]

        def sample() -> float:
            try:
                proc = subprocess.run(argv, env=rig.env, stdin=subprocess.DEVNULL,
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

    what = f"{conns} connections x {commands} x 'true', load.py in a fresh process"
    rsh = Side("rshell", "rshell tls", f"{what}: a thread per connection, each its own "
               f"rshell.connect (secure default, --shell {rig.shell})", n=n)
    assh = Side("asyncssh", "asyncssh", f"{what}: {conns} connections on one event loop, "
                "conn.run('true') each", n=n)
    para = Side("paramiko", "paramiko", f"{what}: a thread per connection, each its own "
                "SSHClient, exec_command per command", n=n)
    sides = [bind(rsh, driver(rsh, "rshell")),
             rig.bind_peer(assh, "asyncssh", lambda _: driver(assh, "asyncssh")),
             rig.bind_peer(para, "paramiko", lambda _: driver(para, "paramiko"))]
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
    notes = [f"errors over {n} rounds: " + ", ".join(f"{s.label} {errors[s.name]}"
                                                      for s in sides if s.samples)]
    for side in sides:
        for run in side.extra.get("runs", []):
            for example in run["error_examples"][:2]:
                notes.append(f"{side.label}: {example}")
    return all_figure("commands/s", rounds, sides, comparisons, connections=conns,
                      commands_per_connection=commands, notes=notes)


class Holder:
    """A load.py ``hold`` process: its connections are open and authenticated
    once it has said so, and stay open until ``release``."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, timeout: float) -> None:
        with open(log, "ab") as sink:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
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


def all_memory(rig: AllRig) -> dict[str, Any]:
    """What one idle authenticated connection costs the server: ``mem_conns``
    connections held open by a load.py process, each having run one ``true``.

    rshell: a fresh secure-default server per sample (so that no earlier
    connection left its memory to reuse), VmRSS before and after; PSS too,
    to compare with sshd.  sshd forks per connection: the summed PSS of its
    process tree before and after (shared pages counted once)."""
    plan = rig.plan
    n, conns = plan.mem_samples, plan.mem_conns
    mib = float(MiB)
    pss_rshell: list[float] = []

    def rshell_sample() -> float:
        server = rig.start_server(ALL_LIMITS, f"memory-server-{len(pss_rshell)}.log")
        try:
            rig.pin(server.address)  # and the first connection's one-off costs
            pid = server.proc.pid
            wait_for(lambda: not children(pid), 30, "rshell-server to reap its commands")
            rss0, pss0 = vm_rss(pid), tree_pss(pid)[0]
            holder = Holder(load_argv(rig, "hold", "rshell", conns, server.address), rig.env,
                            rig.workdir / "load-hold.log", 300)
            try:
                wait_for(lambda: not children(pid), 30, "rshell-server to reap its commands")
                rss1, pss1 = vm_rss(pid), tree_pss(pid)[0]
            finally:
                holder.release()
        finally:
            server.stop()
        pss_rshell.append((pss1 - pss0) / conns / mib)
        return (rss1 - rss0) / conns / mib

    def sshd_sample(sshd: SshdProcess) -> Probe:
        pid = sshd.proc.pid
        per_conn: list[float] = []
        sshd_side.extra["processes_per_connection"] = per_conn

        # Connections this process keeps open to sshd for the other figures.
        held = sum(peer is not None for peer in (rig.paramiko, rig.asyncssh))

        def sample() -> float:
            wait_for(lambda: len(children(pid)) == held, 60,
                     "sshd's connections from earlier figures and samples to end")
            pss0, count0 = tree_pss(pid)
            holder = Holder(load_argv(rig, "hold", "asyncssh", conns), rig.env,
                            rig.workdir / "load-hold.log", 300)
            try:
                # Every session's shell gone: only sshd's own processes stay.
                wait_for(lambda: all(comm(p) == "sshd" for p in process_tree(pid)), 30,
                         "sshd's sessions to end")
                pss1, count1 = tree_pss(pid)
            finally:
                holder.release()
            per_conn.append((count1 - count0) / conns)
            return (pss1 - pss0) / conns / mib
        return sample, None

    rss = bind(Side("rshell_rss", "rshell tls RSS", f"server VmRSS delta / {conns} idle "
                    "authenticated connections (fresh secure-default server per sample)", n=n),
               (rshell_sample, None))
    sshd_side = Side("sshd_pss", "sshd PSS", f"summed PSS of sshd's process tree, delta / "
                     f"{conns} idle authenticated asyncssh connections", n=n)
    rig.bind_peer(sshd_side, "sshd", sshd_sample)
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


# ---- mode all, start to end -------------------------------------------------------------


def run_all_mode(plan: AllPlan, figures: list[str], workdir: Path, bin_dir: Path,
                 generator: str, sshd_exe: Path | None) -> dict[str, Any]:
    """Every peer set up once, every figure with every contender alternating,
    everything stopped at the end (also on failure)."""
    out: dict[str, Any] = {"plan": plan.__dict__, "figures": {}}
    with ExitStack() as stack:
        rig = AllRig(plan, workdir, bin_dir, sshd_exe, stack, out)
        try:
            for name in figures:
                if name == "roundtrip":
                    out["figures"][name] = all_roundtrip(rig)
                elif name == "throughput":
                    out["figures"][name] = all_throughput(rig, generator)
                elif name == "cold":
                    out["figures"][name] = all_cold(rig)
                elif name == "concurrency":
                    out["figures"][name] = all_concurrency(rig)
                elif name == "memory":
                    out["figures"][name] = all_memory(rig)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{rig.logs()}") from None
        out["peer_errors"] = dict(rig.errors)
    return out


# ---- output -----------------------------------------------------------------------------

_LABELS = {
    "roundtrip": "round trip `true`",
    "throughput": "throughput",
    "cold": "cold `rshell -c true`",
    "concurrency": "concurrency",
    "memory": "memory",
}


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value >= 1 else f"{value:.3f}"


def _cell(stats: dict[str, Any]) -> str:
    return f"{_num(stats['median'])} [{_num(stats['p10'])}-{_num(stats['p90'])}]"


def format_table(mode: str, data: dict[str, Any]) -> str:
    """figure | baseline | rshell | ratio | target | result | later target; the
    throughput figure gets a second row, rshell against the relay ceiling, and
    the round trip two: the spawn floor against the baseline (the floor in
    rshell's column), and rshell against the floor.  In
    mode ssh the baseline is OpenSSH's sshd, rshell its SSH listener."""
    ssh = mode == "ssh"
    head = ("figure", "unit", "sshd med [p10-p90]" if ssh else "baseline med [p10-p90]",
            "rshell ssh med [p10-p90]" if ssh else "rshell med [p10-p90]",
            "rshell/sshd" if ssh else "ratio", "target", "result", "later")
    rows = [head]
    for name, fig in data.get("figures", {}).items():
        label = "round trip `true`" if ssh and name == "roundtrip" else _LABELS[name]
        if name == "throughput":
            label += f" {fig['size_bytes'] // MiB} MiB"
        tg = fig["targets"]
        current = f"{tg[0]['op']} {tg[0]['value']}" if tg else "(info)" if ssh else "(report)"
        verdict = ("PASS" if tg[0]["pass"] else "FAIL") if tg else "-"
        later = (f"{tg[1]['op']} {tg[1]['value']} " + ("PASS" if tg[1]["pass"] else "FAIL")
                 if len(tg) > 1 else "")
        rows.append((label, fig["unit"], _cell(fig["baseline"]), _cell(fig["rshell"]),
                     f"{fig['ratio']:.2f}", current, verdict, later))
        if "relay_ceiling" in fig:
            rc = fig["relay_ceiling"]
            rows.append(("  vs relay ceiling", fig["unit"], _cell(rc["relay"]),
                         _cell(fig["rshell"]), f"{rc['ratio']:.2f}", rc["target"], "-", ""))
        if "spawn_floor" in fig:  # the floor in rshell's column, then rshell against it
            sf = fig["spawn_floor"]
            rows.append(("  spawn floor/baseline", fig["unit"], _cell(fig["baseline"]),
                         _cell(sf["floor"]), f"{sf['of_baseline']:.2f}", sf["target"], "-",
                         ""))
            rows.append(("  vs spawn floor", fig["unit"], _cell(sf["floor"]),
                         _cell(fig["rshell"]), f"{sf['ratio']:.2f}", "(info)", "-", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"mode {mode}:"]
    for i, row in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                     .rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    for name, fig in data.get("figures", {}).items():
        for note in fig.get("notes", []):
            lines.append(f"  note ({name}): {note}")
    return "\n".join(lines)


def _all_label(name: str, fig: dict[str, Any]) -> str:
    if name == "throughput":
        return f"stream {fig['size_bytes'] // MiB} MiB"
    if name == "concurrency":
        return f"concurrency {fig['connections']}x{fig['commands_per_connection']}"
    if name == "memory":
        return f"memory, {fig['connections']} idle"
    return _LABELS[name]


def format_all_table(data: dict[str, Any]) -> str:
    """One row per comparison: figure | unit | rshell | peer | peer med [p10-p90]
    | rshell med [p10-p90] | ratio (rshell/peer) | target | result.  A relay
    ceiling's target is ``(ceiling)``, the spawn floor's ``(floor)``, an
    informational row's ``(info)``; a row
    with no peer is a bound on rshell's own figure."""
    head = ("figure", "unit", "rshell", "peer", "peer med [p10-p90]", "rshell med [p10-p90]",
            "ratio", "target", "result")
    rows = [head]
    for name, fig in data.get("figures", {}).items():
        sides = fig["sides"]
        for i, c in enumerate(fig["comparisons"]):
            rsh = sides[c["rshell"]]
            peer = sides.get(c["peer"]) if c["peer"] else None
            tg = c["targets"]
            if c["peer"] is None:
                value = c["value"]
                rcell = "error" if value is None else _num(value) if value else "0"
                pcell, ratio = "-", "-"
            else:
                assert peer is not None
                pcell = _cell(peer) if "median" in peer else "error"
                rcell = _cell(rsh) if "median" in rsh else "error"
                ratio = "-" if c["ratio"] is None else f"{c['ratio']:.2f}"
            target = (f"{tg[0]['op']} {tg[0]['value']:g}" if tg
                      else f"({c['bound']})" if c.get("bound") else "(info)")
            verdict = ("ERROR" if "error" in c else ("PASS" if tg[0]["pass"] else "FAIL")
                       if tg else "-")
            rows.append((_all_label(name, fig) if i == 0 else "", fig["unit"] if i == 0 else "",
                         rsh["label"], peer["label"] if peer else c["unit"], pcell, rcell,
                         ratio, target, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["mode all (ratio = rshell median / peer median):"]
    for i, row in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                     .rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    peer_errors = data.get("peer_errors", {})
    for peer, error in peer_errors.items():
        lines.append(f"  peer {peer} unavailable: {error.splitlines()[0]}")
    for name, fig in data.get("figures", {}).items():
        for side in fig["sides"].values():
            error = side.get("error")
            if error and not any(e in error for e in peer_errors.values()):
                lines.append(f"  error ({name}): {side['label']}: {error.splitlines()[0]}")
        for note in fig.get("notes", []):
            lines.append(f"  note ({name}): {note}")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """Enough context to compare two result files."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = ""
    try:
        commit = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION,
            "commit": commit, "loadavg": list(os.getloadavg())}


# ---- command line -----------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``1073741824``, ``1G``, ``128M``, ``64K`` (binary units)."""
    match = re.fullmatch(r"(\d+)\s*([kmgKMG]?)i?[bB]?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    scale = {"": 1, "k": 1 << 10, "m": MiB, "g": GiB}[match.group(2).lower()]
    size = int(match.group(1)) * scale
    if size <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return size


def parse_only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in FIGURES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--only takes a comma list of {', '.join(FIGURES)}")
    return [f for f in FIGURES if f in names]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark rshell against baselines measured in the same run, on loopback.")
    p.add_argument("--mode", choices=tuple(MODE_SETS), default="all",
                   help="all: rshell beside every peer (sshd with ssh, paramiko, asyncssh; "
                   "local baselines), every figure; plain: --no-tls --no-auth; tls: the "
                   "secure default; both: plain, tls; ssh: rshell's SSH listener vs "
                   "OpenSSH's sshd, same paramiko client [all]")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small streams, few samples (mode all: under a minute)")
    p.add_argument("--only", type=parse_only, default=list(FIGURES), metavar="FIG[,FIG]",
                   help=f"figures to run, from {','.join(FIGURES)} [all]")
    p.add_argument("--json-out", type=Path, default=DEFAULT_JSON, metavar="PATH",
                   help="where to write the results [benchmarks/results.json]")
    p.add_argument("--samples", type=int, metavar="N",
                   help="samples per side for every figure (overrides the plan)")
    p.add_argument("--batch", type=int, metavar="K", help="commands per round-trip sample")
    p.add_argument("--size", type=parse_size, metavar="BYTES",
                   help="throughput stream size, e.g. 1G, 128M")
    p.add_argument("--generator", choices=("auto", "dd", "head"), default="auto",
                   help="command producing the stream on the server [auto: fastest]")
    p.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent,
                   help="where rshell and rshell-server live [this interpreter's bin]")
    p.add_argument("--sshd", type=Path, metavar="PATH",
                   help="OpenSSH's sshd for mode ssh [/usr/sbin/sshd, else PATH]")
    p.add_argument("--check", action="store_true",
                   help="exit 3 if a current target is missed")
    p.add_argument("--raw-sender", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--raw-cert", help=argparse.SUPPRESS)
    p.add_argument("--raw-key", help=argparse.SUPPRESS)
    p.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)
    return p


@contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rshell-bench-") as tmp:
        yield Path(tmp)


PlanT = TypeVar("PlanT", Plan, AllPlan)


def with_overrides(plan: PlanT, args: argparse.Namespace) -> PlanT:
    """``--samples`` (every ``*_samples``), ``--batch``, ``--size`` over a mode's plan."""
    changes: dict[str, int] = {}
    if args.samples:
        changes = {f.name: args.samples for f in fields(plan) if f.name.endswith("_samples")}
        changes["warmup"] = min(plan.warmup, args.samples)
    if args.batch:
        changes["rt_batch"] = args.batch
    if args.size:
        changes["tp_size"] = args.size
    return replace(plan, **changes)


def current_targets(fig: dict[str, Any]) -> list[dict[str, Any]]:
    """The first (current) target of a figure, or of each of its comparisons (mode all)."""
    found: list[dict[str, Any]] = (
        [c["targets"][0] for c in fig["comparisons"] if c["targets"]]
        if "comparisons" in fig else fig["targets"][:1])
    return found


def all_problems(data: dict[str, Any]) -> list[str]:
    """Mode all: every peer, side or comparison that could not be measured."""
    problems = [f"peer {p}" for p in data.get("peer_errors", {})]
    for name, fig in data.get("figures", {}).items():
        problems += [f"{name}/{s}" for s, side in fig["sides"].items() if "error" in side]
    return problems


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.raw_sender:
        return raw_sender_main(args.raw_cert, args.raw_key)
    if args.floor_server:
        return floor_server_main()
    plan = with_overrides(QUICK if args.quick else FULL, args)
    ssh_plan = with_overrides(SSH_QUICK if args.quick else SSH_FULL, args)
    all_plan = with_overrides(ALL_QUICK if args.quick else ALL_FULL, args)
    names = MODE_SETS[args.mode]
    started = time.monotonic()
    first = {"ssh": ssh_plan, "all": all_plan}.get(names[0], plan)
    results: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(), "argv": sys.argv[1:] if argv is None else argv,
        "plan": first.__dict__, "modes": {},
    }
    failed = False
    with workspace() as tmp:
        for name in names:
            print(f"rshell benchmark: mode {name} ({', '.join(args.only)})", file=sys.stderr)
            modedir = tmp / name
            modedir.mkdir()
            try:
                if name == "all":
                    data = run_all_mode(all_plan, args.only, modedir, args.bin_dir,
                                        args.generator, args.sshd)
                elif name == "ssh":
                    data = run_ssh_mode(ssh_plan, args.only, modedir, args.bin_dir,
                                        args.generator, args.sshd)
                else:
                    data = run_mode(MODES[name], plan, args.only, modedir, args.bin_dir,
                                    args.generator)
            except BenchError as exc:
                failed = True
                print(f"mode {name}: cannot measure: {exc}", flush=True)
                results["modes"][name] = {"error": str(exc)}
                continue
            results["modes"][name] = data
            if name == "all":
                print(format_all_table(data), flush=True)
                if problems := all_problems(data):
                    failed = True
                    print(f"mode all: not measured: {', '.join(problems)}", flush=True)
            else:
                print(format_table(name, data), flush=True)
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    busy = results["machine"]["loadavg"][0]
    if busy > 0.5:
        print(f"note: load average {busy:.2f} before the run: other work on this machine "
              "makes these figures noisy")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.json_out} ({results['duration_s']} s)")
    if failed:
        return 1
    missed = [
        f"{m}/{f}" for m, d in results["modes"].items() for f, fig in d["figures"].items()
        if not all(t["pass"] for t in current_targets(fig))
    ]
    return 3 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
