"""The measurement machinery every figure of every mode uses (with stats.py).

Owns: the error a figure fails with and the shared constants; a figure's
contenders (``Side``) and the alternating sampler that takes their samples
(``run_rounds``: A B C A B C ..., so that drift hits every side alike); and
what one round-trip sample is (``per_command_ms``).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .stats import summarize

LOOPBACK = "127.0.0.1"
MiB = 1 << 20
GiB = 1 << 30
#: benchmarks/: the entry script and the folder this package is imported from.
BENCH_DIR = Path(__file__).resolve().parents[1]
#: The entry script; the raw sender and the spawn floor run as its hidden modes.
ENTRY = BENCH_DIR / "bench.py"


class BenchError(Exception):
    """A figure or a mode cannot be measured; the message says why."""


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


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
