"""Counters and recent wait/run-time samples of one worker process (heartbeats, the demo)."""

from __future__ import annotations

import collections
import dataclasses

from calmq.quantile import percentile

#: Samples kept for the percentiles: the last jobs, not all time (a worker that ran for a week
#: should report how it does now). Two appends per job; an all-time reservoir cost seven
#: times that (a random draw per job once full).
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
    recent_wait_ms: collections.deque[int] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECENT)
    )
    recent_run_ms: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECENT)
    )

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
        """Keep the job's wait and run time among the last RECENT."""
        self.recent_wait_ms.append(wait_ms)
        self.recent_run_ms.append(run_ms)
