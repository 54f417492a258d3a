"""Percentiles of small samples (wait and run times), by nearest rank. Pure."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float] | Sequence[int], pct: float) -> float:
    """The ``pct`` percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100.0 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])
