"""Small statistics helpers: median/min/max summaries and latency percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median, min and max of the repetitions (and how many there were)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, nearest-rank method."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(round(q / 100.0 * len(sorted_values), 9)))  # 99.9% of 1000 is 999
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def median_of(entry: Any) -> float | None:
    """The median of a :func:`summary` dict, or None for a skipped entry."""
    if isinstance(entry, dict) and isinstance(entry.get("median"), (int, float)):
        return float(entry["median"])
    return None
