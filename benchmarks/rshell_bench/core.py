"""The one measurement machinery every figure of every mode uses.

Owns: the error a figure fails with and the shared constants; the statistics
(median with p10/p90 and min/max, the ratio of medians, paired ratios);
targets; a figure's contenders (``Side``) and the alternating sampler that
takes their samples (``run_rounds``: A B C A B C ..., so that drift hits every
side alike); what one sample is (``per_command_ms``); and the two JSON shapes
a figure takes: mode all's (``all_figure``: sides and comparisons) and modes
plain, tls and ssh's (``versus``: a baseline against rshell).
"""

from __future__ import annotations

import gc
import operator
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
MiB = 1 << 20
GiB = 1 << 30
ISSUE6 = "issue 6"
#: benchmarks/: the entry script and the folder this package is imported from.
BENCH_DIR = Path(__file__).resolve().parents[1]
#: The entry script; the raw sender and the spawn floor run as its hidden modes.
ENTRY = BENCH_DIR / "bench.py"


class BenchError(Exception):
    """A figure or a mode cannot be measured; the message says why."""


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


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


# ---- contenders and the alternating sampler ---------------------------------------------

#: A side's sample function, and what warms it up (None: the sample itself).
Probe = tuple[Callable[[], float], Callable[[], Any] | None]


@dataclass
class Side:
    """One contender of a figure: rshell in some setup, a baseline or a peer.

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


def bind(side: Side, probe: Probe) -> Side:
    side.sample, side.warm = probe
    return side


def run_rounds(sides: list[Side], figure: str, warmup: int, strict: bool = False) -> int:
    """``warmup`` rounds (not counted), then rounds of A B C A B C ..., each side
    only in its rounds, a garbage collection before every sample.  A side that
    raises is failed and left out of the rounds that follow; with ``strict``
    (modes plain, tls and ssh) the exception ends the figure instead.  The
    number of rounds."""
    rounds = max((s.n for s in sides), default=0)
    for _ in range(warmup):
        for side in sides:
            warm = side.warm or side.sample
            if side.error is None and side.n and warm is not None:
                _take(side, warm, figure, strict)
    for r in range(rounds):
        for side in sides:
            if side.error is None and side.sample is not None and side.due(r, rounds):
                value = _take(side, side.sample, figure, strict)
                if value is not None:
                    side.samples.append(value)
                    side.rounds.append(r)
    return rounds


def _take(side: Side, fn: Callable[[], Any], figure: str, strict: bool) -> Any:
    gc.collect()
    try:
        return fn()
    except Exception as exc:  # a peer's own exceptions too: fail that side only
        if strict:
            raise
        side.error = str(exc) if isinstance(exc, BenchError) \
            else f"{type(exc).__name__}: {exc}"
        progress(f"{figure}: {side.label} failed: {side.error.splitlines()[0]}")
        return None


def per_command_ms(k: int, one: Callable[[], Any]) -> Probe:
    """A round-trip sample: the mean over ``k`` commands in a row, in ms."""
    def sample() -> float:
        start = time.perf_counter()
        for _ in range(k):
            one()
        return (time.perf_counter() - start) / k * 1e3
    return sample, None


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
