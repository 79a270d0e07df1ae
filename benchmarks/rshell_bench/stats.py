"""The statistics every figure reports: median with p10/p90 and min/max, the
ratio of medians and the paired ratios (samples of the same round), targets;
and the two JSON shapes a figure takes: mode all's (``all_figure``: sides and
comparisons) and modes plain, tls and ssh's (``versus``: a baseline against
rshell, ``bound_row``: against the spawn floor or a relay ceiling).
"""

from __future__ import annotations

import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import Side

ISSUE6 = "issue 6"


# ---- statistics -------------------------------------------------------------------------


def summarize(values: list[float]) -> dict[str, Any]:
    """Median and spread; p10/p90 are the inclusive deciles (min/max for n < 2)."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        deciles = statistics.quantiles(ordered, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = ordered[0]
    return {"median": statistics.median(ordered), "p10": p10, "p90": p90,
            "min": ordered[0], "max": ordered[-1], "n": len(ordered), "samples": values}


def spread(values: list[float]) -> dict[str, Any]:
    """``summarize`` without the samples (for derived values such as paired ratios)."""
    return {k: v for k, v in summarize(values).items() if k != "samples"}


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



# ---- comparisons and the figures' JSON --------------------------------------------------


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
            out["paired_ratio"] = spread(paired)
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
    """Mode all's figure: every side, every comparison."""
    return {"unit": unit, "rounds": rounds, "sides": {s.name: s.as_json() for s in sides},
            "comparisons": comparisons, **extra}


def versus(base: Side, rsh: Side, goals: list[Target], unit: str,
           **extra: Any) -> dict[str, Any]:
    """Modes plain, tls and ssh's figure: the baseline's and rshell's samples,
    the ratio of medians (rshell / baseline), the paired ratios, the targets."""
    c = compare(rsh, base, goals)
    return {"unit": unit, "baseline": summarize(base.samples), "rshell": summarize(rsh.samples),
            "ratio": c["ratio"], "paired_ratio": c["paired_ratio"], "targets": c["targets"],
            **extra}


def bound_row(bound: Side, base: Side, rsh: Side, what: str, key: str,
              target: str) -> dict[str, Any]:
    """Modes plain and tls: a bound (the spawn floor, a relay ceiling) against
    the baseline (``of_baseline``) and rshell against the bound (``ratio``),
    both informational."""
    of, vs = compare(bound, base, []), compare(rsh, bound, [])
    return {"what": what, key: summarize(bound.samples), "of_baseline": of["ratio"],
            "paired_of_baseline": of["paired_ratio"], "ratio": vs["ratio"],
            "paired_ratio": vs["paired_ratio"], "target": target}
