"""Summaries of repeated measurements: median, p99, min, max."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    median: float
    p99: float
    minimum: float
    maximum: float
    count: int

    def as_dict(self, digits: int = 3) -> dict[str, float]:
        return {
            "median": round(self.median, digits),
            "p99": round(self.p99, digits),
            "min": round(self.minimum, digits),
            "max": round(self.maximum, digits),
            "n": self.count,
        }


def summarize(values: list[float]) -> Summary:
    if not values:
        raise ValueError("no measurements")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(0.99 * (len(ordered) - 1))))
    return Summary(statistics.median(ordered), ordered[index], ordered[0], ordered[-1], len(ordered))


def ratio(ours: float, baseline: float) -> float:
    return round(ours / baseline, 3) if baseline else float("inf")
