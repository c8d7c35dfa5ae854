"""Timing method: paired ratios per round, rotated order, CPU pinning, correctness before timing.

One sample is the time of a batch of ``ops`` operations divided by ``ops``. Each group runs one untimed
warm-up round and ``rounds`` timed rounds; the contenders take turns inside a round, in an order that
rotates from round to round. ``x floor`` is the median over rounds of (contender / floor of the same
round): paired ratios stay steady on a noisy shared machine where absolute times do not.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil


@dataclass
class Contender:
    name: str
    run: Callable[[int], Any]  # runs ``ops`` operations
    check: Callable[[], bool] | None = None  # must be true before anything is timed
    floor: bool = False


@dataclass
class Row:
    name: str
    us_per_op: float
    ratio: float | None
    plus_us: float | None
    iqr_pct: float
    samples: list[float] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "us_per_op": round(self.us_per_op, 3),
            "x_floor": None if self.ratio is None else round(self.ratio, 3),
            "plus_us": None if self.plus_us is None else round(self.plus_us, 3),
            "iqr_pct": round(self.iqr_pct, 1),
            "note": self.note,
        }


def iqr_pct(values: Sequence[float]) -> float:
    if len(values) < 4:
        return 0.0
    q = statistics.quantiles(values, n=4)
    med = statistics.median(values)
    return 100.0 * (q[2] - q[0]) / med if med else 0.0


def measure(contenders: Sequence[Contender], *, ops: int, rounds: int) -> list[Row]:
    """Time every contender; ratios are paired with the floor's sample of the same round."""
    for c in contenders:
        if c.check is not None and not c.check():
            raise AssertionError(f"{c.name} returned a wrong result: refusing to time it")
    floor = next((c for c in contenders if c.floor), None)
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    order = list(contenders)
    for r in range(rounds + 1):  # round 0 warms up
        order = order[1:] + order[:1]
        times = {}
        for c in order:
            t0 = time.perf_counter()
            c.run(ops)
            times[c.name] = (time.perf_counter() - t0) / ops
        if r:
            for name, t in times.items():
                samples[name].append(t)
    rows = []
    for c in contenders:
        s = samples[c.name]
        ratio = plus = None
        if floor is not None:
            f = samples[floor.name]
            ratio = statistics.median(a / b for a, b in zip(s, f, strict=True))
            plus = statistics.median((a - b) * 1e6 for a, b in zip(s, f, strict=True))
        rows.append(
            Row(c.name + (" [FLOOR]" if c.floor else ""), statistics.median(s) * 1e6, ratio, plus, iqr_pct(s), s)
        )
    return rows


def pin(pids: Sequence[int], cpus: set[int]) -> bool:
    """Pin processes (and their children) to ``cpus``; False where the machine does not allow it."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        for pid in pids:
            p = psutil.Process(pid)
            for proc in [p, *p.children(recursive=True)]:
                os.sched_setaffinity(proc.pid, cpus)
    except (OSError, psutil.Error):
        return False
    return True


def render(title: str, notes: Sequence[str], rows: Sequence[Row], *, unit: str = "us/op") -> str:
    lines = [f"== {title} =="]
    lines += [f"   {n}" for n in notes]
    lines.append(f"{'contender':<58} | {unit:>10} {'x floor':>8} {'+us':>9} {'IQR%':>6}  note")
    lines.append("-" * 110)
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        plus = "-" if row.plus_us is None else f"{row.plus_us:+.1f}"
        lines.append(
            f"{row.name[:58]:<58} | {row.us_per_op:>10.1f} {ratio:>8} {plus:>9} {row.iqr_pct:>6.1f}  {row.note}"
        )
    return "\n".join(lines)
