"""Counters and wait/run-time samples of one worker process (for summaries and `calmq bench`)."""

from __future__ import annotations

import array
import collections
import dataclasses
import random

from calmq.quantile import percentile

#: The all-time reservoir: enough for a p99 within a fraction of a percent, in ~160 KB (plain
#: arrays of machine numbers: a list of 100,000 Python floats held ~3 MB per worker).
MAX_SAMPLES = 10_000
#: Samples kept for "recent" percentiles in heartbeats (the last jobs, not all time).
RECENT = 2000


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
    wait_ms: array.array[int] = dataclasses.field(default_factory=lambda: array.array("q"))
    run_ms: array.array[float] = dataclasses.field(default_factory=lambda: array.array("d"))
    recent_wait_ms: collections.deque[int] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECENT)
    )
    recent_run_ms: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECENT)
    )
    _seen: int = 0

    def summary(self) -> dict[str, float]:
        """Cumulative counters and recent percentiles, as reported in heartbeats."""
        waits, runs = list(self.recent_wait_ms), list(self.recent_run_ms)
        return {
            "claimed": self.claimed, "succeeded": self.succeeded, "retried": self.retried,
            "dead": self.dead, "lease_lost": self.lease_lost, "timed_out": self.timed_out,
            "wait_p50_ms": percentile(waits, 50), "wait_p99_ms": percentile(waits, 99),
            "run_p50_ms": percentile(runs, 50), "run_p99_ms": percentile(runs, 99),
        }  # fmt: skip

    def sample(self, wait_ms: int, run_ms: float) -> None:
        """Keep a uniform reservoir of at most MAX_SAMPLES (wait, run) pairs."""
        self._seen += 1
        self.recent_wait_ms.append(wait_ms)
        self.recent_run_ms.append(run_ms)
        if len(self.wait_ms) < MAX_SAMPLES:
            self.wait_ms.append(wait_ms)
            self.run_ms.append(run_ms)
            return
        slot = random.randrange(self._seen)  # noqa: S311 - sampling, not security
        if slot < MAX_SAMPLES:
            self.wait_ms[slot] = wait_ms
            self.run_ms[slot] = run_ms
