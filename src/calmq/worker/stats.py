"""Counters and wait/run-time samples of one worker process (for summaries and `calmq bench`)."""

from __future__ import annotations

import dataclasses
import random

MAX_SAMPLES = 100_000


@dataclasses.dataclass
class WorkerStats:
    """What one worker did. Wait time runs from the moment a job was ready to its claim,
    measured on the store's clock."""

    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    lease_lost: int = 0
    stale_acks: int = 0
    released: int = 0
    timed_out: int = 0
    wait_ms: list[int] = dataclasses.field(default_factory=list)
    run_ms: list[float] = dataclasses.field(default_factory=list)
    _seen: int = 0

    def sample(self, wait_ms: int, run_ms: float) -> None:
        """Keep a uniform reservoir of at most MAX_SAMPLES (wait, run) pairs."""
        self._seen += 1
        if len(self.wait_ms) < MAX_SAMPLES:
            self.wait_ms.append(wait_ms)
            self.run_ms.append(run_ms)
            return
        slot = random.randrange(self._seen)  # noqa: S311 - sampling, not security
        if slot < MAX_SAMPLES:
            self.wait_ms[slot] = wait_ms
            self.run_ms[slot] = run_ms


def percentile(values: list[float] | list[int], pct: float) -> float:
    """The ``pct`` percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100.0 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])
