"""The command line: the options, and a run from start to end (each mode in a
temporary folder of its own, its table printed, results.json written, the
exit status: 0, 1 when something could not be measured, 3 with ``--check``
when a current target is missed).  The raw sender and the spawn floor's
server run as hidden modes of the same command line.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .bounds import floor_server_main, key_relay_client_main, key_relay_main, raw_sender_main
from .core import BENCH_DIR, BenchError, GiB, MiB
from .modes import run_all, run_native, run_ssh
from .plans import (
    ALL_FULL,
    ALL_QUICK,
    FIGURES,
    FULL,
    MODE_SETS,
    MODES,
    QUICK,
    SSH_FULL,
    SSH_QUICK,
    with_overrides,
)
from .report import (
    all_problems,
    format_all_table,
    format_table,
    missed_targets,
    new_results,
    write_results,
)

DEFAULT_JSON = BENCH_DIR / "results.json"


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
    p.add_argument("--batch", type=int, metavar="K",
                   help="commands per round-trip sample (and keystrokes per keystroke sample)")
    p.add_argument("--size", type=parse_size, metavar="BYTES",
                   help="throughput stream size, e.g. 1G, 128M (and the file cat on a "
                   "terminal)")
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
    p.add_argument("--key-relay", metavar="COMMAND", help=argparse.SUPPRESS)
    p.add_argument("--key-relay-client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p


@contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rshell-bench-") as tmp:
        yield Path(tmp)


def plan_for(name: str, args: argparse.Namespace) -> Any:
    """Mode ``name``'s plan, full or ``--quick``, with the options' overrides."""
    plans = {"all": (ALL_QUICK, ALL_FULL), "ssh": (SSH_QUICK, SSH_FULL)}
    quick, full = plans.get(name, (QUICK, FULL))
    return with_overrides(quick if args.quick else full, args)


def run_mode(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    plan = plan_for(name, args)
    if name == "all":
        return run_all(plan, args.only, workdir, args.bin_dir, args.generator, args.sshd)
    if name == "ssh":
        return run_ssh(plan, args.only, workdir, args.bin_dir, args.generator, args.sshd)
    return run_native(MODES[name], plan, args.only, workdir, args.bin_dir, args.generator)


def measure(name: str, args: argparse.Namespace, workdir: Path,
            results: dict[str, Any]) -> bool:
    """Run mode ``name`` into ``results`` and print its table; False if
    anything could not be measured."""
    print(f"rshell benchmark: mode {name} ({', '.join(args.only)})", file=sys.stderr)
    workdir.mkdir()
    try:
        data = run_mode(name, args, workdir)
    except BenchError as exc:
        print(f"mode {name}: cannot measure: {exc}", flush=True)
        results["modes"][name] = {"error": str(exc)}
        return False
    results["modes"][name] = data
    if name != "all":
        print(format_table(name, data), flush=True)
        return True
    print(format_all_table(data), flush=True)
    if problems := all_problems(data):
        print(f"mode all: not measured: {', '.join(problems)}", flush=True)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.raw_sender:
        return raw_sender_main(args.raw_cert, args.raw_key)
    if args.floor_server:
        return floor_server_main()
    if args.key_relay is not None:
        return key_relay_main(args.key_relay, args.raw_cert, args.raw_key)
    if args.key_relay_client is not None:
        return key_relay_client_main(args.key_relay_client, args.raw_cert)
    names = MODE_SETS[args.mode]
    started = time.monotonic()
    results = new_results(argv, plan_for(names[0], args))
    failed = False
    with workspace() as tmp:
        for name in names:
            failed = not measure(name, args, tmp / name, results) or failed
    write_results(results, args.json_out, started)
    if failed:
        return 1
    return 3 if args.check and missed_targets(results) else 0
