"""Shared by the live fuzz and load tests: the soak knob and where measured
figures go (what /proc says about the server process is in support/procs.py,
re-exported here).

``RSHELL_SOAK=N`` multiplies the counts of those tests for a manual soak (the
default, 1, is sized for CI).  Figures are written as JSON to
``$RSHELL_FIGURES_DIR`` if set, else ``benchmarks/figures/`` in the repository
(ignored by git), so that docs/RELIABILITY.md can quote the last run.

Linux only, like the server's pidfd-based process handling.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.support.procs import children, fd_count, fd_targets, proc_status, thread_count

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


__all__ = ["children", "fd_count", "fd_targets", "proc_status", "soak", "thread_count",
           "write_figures"]
