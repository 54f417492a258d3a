"""Keep the leases of running jobs alive, from a thread of its own.

A job that hogs the event loop (a CPU-bound async job, a blocking call by mistake) must not
cost the worker its leases: Dramatiq's heartbeat starves this way (its issue #692). So
extension runs on a plain thread with its own store calls, and only reports lost leases back
to the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from calmq.errors import CalmqError
from calmq.job import ClaimedJob, JobState, Lease
from calmq.stores.base import Store

log = logging.getLogger("calmq.worker")


class InFlight:
    """The jobs this worker holds a lease on, shared between the loop and the keeper."""

    def __init__(self) -> None:
        self._jobs: dict[str, ClaimedJob] = {}
        self._lock = threading.Lock()

    def add(self, *jobs: ClaimedJob) -> None:
        """Hold the leases of ``jobs`` (a claimed batch: one lock for all)."""
        with self._lock:
            self._jobs.update((job.id, job) for job in jobs)

    def remove(self, *job_ids: str) -> None:
        """Let go of the leases of ``job_ids`` (an acknowledged batch: one lock for all)."""
        with self._lock:
            pop = self._jobs.pop
            for job_id in job_ids:
                pop(job_id, None)

    def __len__(self) -> int:
        return len(self._jobs)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def by_queue(self) -> dict[str, list[Lease]]:
        """A snapshot of the held leases, grouped by queue."""
        with self._lock:
            jobs = list(self._jobs.values())
        grouped: dict[str, list[Lease]] = {}
        for job in jobs:
            grouped.setdefault(job.queue, []).append(job.lease)
        return grouped


class LeaseKeeper(threading.Thread):
    """Extends every held lease each ``lease_ms / 3`` so two extensions can fail in a row
    before a lease runs out."""

    def __init__(
        self, store: Store, inflight: InFlight, *, lease_ms: int,
        on_lost: Callable[[list[str], set[str]], None],
    ) -> None:  # fmt: skip
        super().__init__(name="calmq-lease-keeper", daemon=True)
        self.store = store
        self.inflight = inflight
        self.lease_ms = lease_ms
        self.on_lost = on_lost
        self.interval = lease_ms / 3000.0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.extend_all()

    def extend_all(self) -> None:
        for queue, leases in self.inflight.by_queue().items():
            try:
                lost = self.store.extend_leases(queue, leases, lease_ms=self.lease_ms)
            except CalmqError as exc:
                # Keep trying: the lease is still ours until its deadline passes.
                log.warning("could not extend %d leases in %s: %s", len(leases), queue, exc)
                continue
            # A job that finished between the snapshot and the call is "lost" too: ignore it.
            lost = [job_id for job_id in lost if job_id in self.inflight]
            if lost:
                tokens = {lease.id: lease for lease in leases}
                cancelled = {i for i in lost if self._finish_if_cancelled(queue, tokens[i])}
                self.on_lost(lost, cancelled)

    def _finish_if_cancelled(self, queue: str, lease: Lease) -> bool:
        """Lost because somebody cancelled it (``calmq cancel``), not because it expired?

        Releasing the lost lease is a no-op when another worker owns the job now, and
        finishes it as cancelled at once when it was cancelled (instead of when the lease
        would have run out); the job's state then tells which it was.
        """
        try:
            self.store.release(queue, [lease])
            info = self.store.get_job(queue, lease.id)
        except CalmqError:
            return False
        return info is not None and info.state == JobState.CANCELLED
