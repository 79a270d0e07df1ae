"""Shared by the live fuzz and load tests: the soak knob, where measured figures
go, and what /proc says about the server process.

``RSHELL_SOAK=N`` multiplies the counts of those tests for a manual soak (the
default, 1, is sized for CI).  Figures are written as JSON to
``$RSHELL_FIGURES_DIR`` if set, else ``benchmarks/figures/`` in the repository
(ignored by git), so that docs/RELIABILITY.md can quote the last run.

Linux only, like the server's pidfd-based process handling.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def soak() -> float:
    """The soak factor from ``RSHELL_SOAK`` (1 when unset or empty)."""
    value = float(os.environ.get("RSHELL_SOAK") or 1)
    if value <= 0:
        raise ValueError(f"RSHELL_SOAK must be positive, not {value}")
    return value


def write_figures(name: str, figures: dict[str, Any]) -> Path:
    """Write ``figures`` as ``NAME`` (pretty JSON) in the figures directory."""
    folder = Path(os.environ.get("RSHELL_FIGURES_DIR") or REPO / "benchmarks" / "figures")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def proc_status(pid: int) -> dict[str, int]:
    """Threads, VmRSS and VmHWM (bytes) of ``pid`` from /proc/PID/status."""
    text = Path(f"/proc/{pid}/status").read_text()
    out = {}
    for key in ("Threads", "VmRSS", "VmHWM"):
        match = re.search(rf"^{key}:\s+(\d+)", text, re.M)
        assert match, f"no {key} in /proc/{pid}/status"
        out[key] = int(match.group(1)) * (1024 if key.startswith("Vm") else 1)
    return out


def thread_count(pid: int) -> int:
    return proc_status(pid)["Threads"]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> list[str]:
    """What each open descriptor of ``pid`` points at, for assertion messages."""
    out = []
    for name in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{name}->{os.readlink(f'/proc/{pid}/fd/{name}')}")
        except OSError:
            pass  # closed while we looked
    return out


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (zombies included: they are unreaped)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(name))
    return found
