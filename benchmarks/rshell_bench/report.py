"""What the user sees and keeps: the tables on stdout (one printer, two
layouts: modes plain, tls and ssh, one row per figure; mode all, one row per
comparison), and results.json (the run's context, every mode's figures,
what was missed).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .core import BENCH_DIR, MiB

_LABELS = {
    "roundtrip": "round trip `true`",
    "throughput": "throughput",
    "cold": "cold `rshell -c true`",
    "concurrency": "concurrency",
    "memory": "memory",
    "keystroke": "keystroke echo",
    "tty_output": "terminal output",
    "file_copy": "file copy",
    "tree_copy": "tree copy",
    "fleet": "fleet `echo ok`",
}
Row = tuple[str, ...]


def num(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value >= 1 else f"{value:.3f}"


def _cell(stats: dict[str, Any]) -> str:
    return f"{num(stats['median'])} [{num(stats['p10'])}-{num(stats['p90'])}]"


def table(title: str, rows: list[Row], tail: list[str]) -> str:
    """``rows`` (the first the head) in columns under ``title``, then ``tail``."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [title]
    for i, row in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                     .rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines + tail)


def _notes(name: str, fig: dict[str, Any]) -> list[str]:
    return [f"  note ({name}): {note}" for note in fig.get("notes", [])]


# ---- modes plain, tls and ssh -----------------------------------------------------------


def format_table(mode: str, data: dict[str, Any]) -> str:
    """figure | baseline | rshell | ratio | target | result | later target; the
    throughput figure gets a second row, rshell against the relay ceiling, and
    the round trip two: the spawn floor against the baseline (the floor in
    rshell's column), and rshell against the floor.  In
    mode ssh the baseline is OpenSSH's sshd, rshell its SSH listener."""
    ssh = mode == "ssh"
    rows: list[Row] = [(
        "figure", "unit", "sshd med [p10-p90]" if ssh else "baseline med [p10-p90]",
        "rshell ssh med [p10-p90]" if ssh else "rshell med [p10-p90]",
        "rshell/sshd" if ssh else "ratio", "target", "result", "later")]
    tail: list[str] = []
    for name, fig in data.get("figures", {}).items():
        rows += _figure_rows(name, fig, ssh)
        tail += _notes(name, fig)
    return table(f"mode {mode}:", rows, tail)


def _figure_rows(name: str, fig: dict[str, Any], ssh: bool) -> list[Row]:
    label = _LABELS[name]
    if name == "throughput":
        label += f" {fig['size_bytes'] // MiB} MiB"
    tg, unit = fig["targets"], fig["unit"]
    current = f"{tg[0]['op']} {tg[0]['value']}" if tg else "(info)" if ssh else "(report)"
    verdict = ("PASS" if tg[0]["pass"] else "FAIL") if tg else "-"
    later = (f"{tg[1]['op']} {tg[1]['value']} " + ("PASS" if tg[1]["pass"] else "FAIL")
             if len(tg) > 1 else "")
    rows: list[Row] = [(label, unit, _cell(fig["baseline"]), _cell(fig["rshell"]),
                        f"{fig['ratio']:.2f}", current, verdict, later)]
    if "relay_ceiling" in fig:
        rc = fig["relay_ceiling"]
        rows.append(("  vs relay ceiling", unit, _cell(rc["relay"]), _cell(fig["rshell"]),
                     f"{rc['ratio']:.2f}", rc["target"], "-", ""))
    if "spawn_floor" in fig:  # the floor in rshell's column, then rshell against it
        sf = fig["spawn_floor"]
        rows.append(("  spawn floor/baseline", unit, _cell(fig["baseline"]),
                     _cell(sf["floor"]), f"{sf['of_baseline']:.2f}", sf["target"], "-", ""))
        rows.append(("  vs spawn floor", unit, _cell(sf["floor"]), _cell(fig["rshell"]),
                     f"{sf['ratio']:.2f}", "(info)", "-", ""))
    return rows


# ---- mode all ---------------------------------------------------------------------------


def format_all_table(data: dict[str, Any]) -> str:
    """One row per comparison: figure | unit | rshell | peer | peer med [p10-p90]
    | rshell med [p10-p90] | ratio (rshell/peer) | target | result.  A relay
    ceiling's target is ``(ceiling)``, the spawn floor's ``(floor)``, an
    informational row's ``(info)``; a row
    with no peer is a bound on rshell's own figure."""
    rows: list[Row] = [("figure", "unit", "rshell", "peer", "peer med [p10-p90]",
                        "rshell med [p10-p90]", "ratio", "target", "result")]
    for name, fig in data.get("figures", {}).items():
        for i, c in enumerate(fig["comparisons"]):
            first = (_all_label(name, fig), fig["unit"]) if i == 0 else ("", "")
            rows.append(first + _comparison_cells(fig["sides"], c))
    peer_errors = data.get("peer_errors", {})
    tail = [f"  peer {peer} unavailable: {error.splitlines()[0]}"
            for peer, error in peer_errors.items()]
    for name, fig in data.get("figures", {}).items():
        for side in fig["sides"].values():
            error = side.get("error")
            if error and not any(e in error for e in peer_errors.values()):
                tail.append(f"  error ({name}): {side['label']}: {error.splitlines()[0]}")
        tail += _notes(name, fig)
    return table("mode all (ratio = rshell median / peer median):", rows, tail)


def _all_label(name: str, fig: dict[str, Any]) -> str:
    if name == "throughput":
        return f"stream {fig['size_bytes'] // MiB} MiB"
    if name == "concurrency":
        return f"concurrency {fig['connections']}x{fig['commands_per_connection']}"
    if name == "memory":
        return f"memory, {fig['connections']} idle"
    if name == "tty_output":
        return f"terminal output {fig['size_bytes'] // MiB} MiB"
    if name == "file_copy":
        return f"file copy {fig['size_bytes'] // MiB} MiB"
    if name == "tree_copy":
        return f"tree copy {fig['files']} x {fig['file_bytes'] // 1024} KiB"
    return _LABELS[name]


def _comparison_cells(sides: dict[str, Any], c: dict[str, Any]) -> Row:
    """rshell | peer | peer med | rshell med | ratio | target | result."""
    rsh = sides[c["rshell"]]
    peer = sides.get(c["peer"]) if c["peer"] else None
    tg = c["targets"]
    if peer is None:
        value = c["value"]
        rcell = "error" if value is None else num(value) if value else "0"
        pcell, ratio = "-", "-"
    else:
        pcell = _cell(peer) if "median" in peer else "error"
        rcell = _cell(rsh) if "median" in rsh else "error"
        ratio = "-" if c["ratio"] is None else f"{c['ratio']:.2f}"
    target = (f"{tg[0]['op']} {tg[0]['value']:g}" if tg
              else f"({c['bound']})" if c.get("bound") else "(info)")
    verdict = ("ERROR" if "error" in c else ("PASS" if tg[0]["pass"] else "FAIL")
               if tg else "-")
    return (rsh["label"], peer["label"] if peer else c["unit"], pcell, rcell, ratio, target,
            verdict)


def all_problems(data: dict[str, Any]) -> list[str]:
    """Mode all: every peer, side or comparison that could not be measured."""
    problems = [f"peer {p}" for p in data.get("peer_errors", {})]
    for name, fig in data.get("figures", {}).items():
        problems += [f"{name}/{s}" for s, side in fig["sides"].items() if "error" in side]
    return problems


# ---- results.json -----------------------------------------------------------------------


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
        commit = subprocess.run(["git", "-C", str(BENCH_DIR), "describe", "--always",
                                 "--dirty"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION,
            "commit": commit, "loadavg": list(os.getloadavg())}


def new_results(argv: list[str] | None, plan: Any) -> dict[str, Any]:
    """The run's context, before any mode runs; the modes go into ``modes``."""
    return {"when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine_info(), "argv": sys.argv[1:] if argv is None else argv,
            "plan": plan.__dict__, "modes": {}}


def write_results(results: dict[str, Any], path: Path, started: float) -> None:
    """The run's duration and the load after it; a warning if the machine was
    busy before it; results.json written."""
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    busy = results["machine"]["loadavg"][0]
    if busy > 0.5:
        print(f"note: load average {busy:.2f} before the run: other work on this machine "
              "makes these figures noisy")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path} ({results['duration_s']} s)")


def missed_targets(results: dict[str, Any]) -> list[str]:
    """Every figure of every mode with a current target it did not meet."""
    return [f"{m}/{f}" for m, d in results["modes"].items() for f, fig in d["figures"].items()
            if not all(t["pass"] for t in _current_targets(fig))]


def _current_targets(fig: dict[str, Any]) -> list[dict[str, Any]]:
    """The first (current) target of a figure, or of each of its comparisons (mode all)."""
    found: list[dict[str, Any]] = (
        [c["targets"][0] for c in fig["comparisons"] if c["targets"]]
        if "comparisons" in fig else fig["targets"][:1])
    return found
