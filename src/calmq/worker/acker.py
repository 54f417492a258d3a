"""Acknowledging: batch the completions of finished jobs into one store call per queue.

While one ``complete`` call is in flight, finished jobs pile up and go together in the next
one, so under load there is far less than one store call per job, and when idle a job is
acknowledged at once. An acknowledgement waiting in the batch is still covered by its lease,
so a crash before the flush means the job runs again (at-least-once), never that it is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from calmq.errors import CalmqError
from calmq.job import ClaimedJob
from calmq.worker.lease_keeper import InFlight

log = logging.getLogger("calmq.worker")

MAX_BATCH = 500
ACK_LINGER = 0.002


class Acker:
    """Collects succeeded jobs and completes them in batches."""

    def __init__(
        self, store_complete: Callable[..., Any], inflight: InFlight,
        run_io: Callable[..., Awaitable[Any]],
        on_acked: Callable[[list[tuple[ClaimedJob, float]], list[bool | None]], None],
    ) -> None:  # fmt: skip
        self.store_complete = store_complete
        self.inflight = inflight
        self.run_io = run_io
        self.on_acked = on_acked
        self.pending: list[tuple[ClaimedJob, float]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._ended = False
        self.calls = 0

    def add(self, job: ClaimedJob, run_ms: float) -> None:
        self.pending.append((job, run_ms))
        self._idle.clear()
        self._wake.set()

    def complete_alone(self, job: ClaimedJob) -> bool | None:
        """Acknowledge one job right here, on the calling thread (the lane thread that ran
        it, when no other job runs): one store call, no retries; a ``CalmqError`` means the
        job is still to acknowledge (through :meth:`add`). Its lease is let go at once, so
        the lease keeper never reports it lost; :meth:`report_alone` finishes on the loop."""
        taken: bool | None = self.store_complete(job.queue, [job.lease])[0]
        self.inflight.remove(job.id)
        return taken

    def report_alone(self, job: ClaimedJob, run_ms: float, taken: bool | None) -> None:
        """On the loop: what a batch's completion does, for a job :meth:`complete_alone`
        acknowledged."""
        self.calls += 1
        self.on_acked([(job, run_ms)], [taken])

    async def run_forever(self) -> None:
        try:
            await self._run()
        finally:
            # Ended (cancelled, from outside too): no flush() may wait for it for good. What
            # is still pending keeps its lease until the worker releases it.
            self._ended = True
            self._idle.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            others_run = len(self.inflight) > len(self.pending)
            if others_run and len(self.pending) < MAX_BATCH:
                # Let the acknowledgements of the jobs still running gather for a moment,
                # one call for many jobs. The leases cover the wait, and nobody waits on an
                # acknowledgement. With nothing else running none would come: no timer
                # (a loop wake-up per job at a trickle).
                await asyncio.sleep(ACK_LINGER)
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                await self._complete(batch)
            self._idle.set()

    async def flush(self) -> None:
        """Wait until every pending acknowledgement was sent."""
        if self.pending:
            self._wake.set()
        if not self._ended:
            await self._idle.wait()

    async def _complete(self, batch: list[tuple[ClaimedJob, float]]) -> None:
        by_queue: dict[str, list[tuple[ClaimedJob, float]]] = {}
        for item in batch:
            by_queue.setdefault(item[0].queue, []).append(item)
        for queue, jobs in by_queue.items():
            for attempt in range(3):
                try:
                    leases = [job.lease for job, _ in jobs]
                    acked = await self.run_io(self.store_complete, queue, leases)
                    break
                except CalmqError as exc:
                    # The leases still hold; retry a little, then let the lease expire and
                    # the job run again (at-least-once) rather than block the worker.
                    log.warning(
                        "completing %d jobs in %s failed (try %d): %s",
                        len(jobs),
                        queue,
                        attempt + 1,
                        exc,
                    )
                    await asyncio.sleep(0.1 * 2**attempt)
            else:
                acked = [None] * len(jobs)  # unknown: the store did not answer
            self.calls += 1
            self.inflight.remove(*[job.id for job, _ in jobs])
            self.on_acked(jobs, acked)  # the whole batch: its events go out in one call
