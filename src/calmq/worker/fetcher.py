"""Fetching: claim up to the free slots across the worker's queues; wait for work when idle.

Queues are served in strict order (the first queue with work first) or, with weights, in a
weighted random order per fetch so a busy queue cannot starve a lighter one. An idle worker
blocks in the store's ``wait_for_work`` (Redis: BLPOP on a wake-up list), so a new job wakes
it at once; the wait never outlasts the next scheduled job's due time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from calmq.errors import CalmqError
from calmq.job import ClaimedJob
from calmq.stores.base import Store

T = TypeVar("T")
log = logging.getLogger("calmq.worker")
RunIO = Callable[..., Awaitable[Any]]


class Fetcher:
    """Claims jobs for one worker."""

    def __init__(
        self, store: Store, queues: Sequence[str], *, lease_ms: int, run_io: RunIO,
        run_wait: RunIO, weights: Mapping[str, float] | None = None, max_idle_wait: float = 1.0,
    ) -> None:  # fmt: skip
        self.store = store
        self.queues = list(queues)
        self.weights = dict(weights or {})
        self.lease_ms = lease_ms
        self.run_io = run_io
        self.run_wait = run_wait
        self.max_idle_wait = max_idle_wait
        #: Store-clock ms until the earliest scheduled job is due (None: nothing scheduled).
        self.next_due_in_ms: int | None = None
        self._rng = random.Random()  # noqa: S311 - fairness, not security

    def order(self) -> list[str]:
        """Queues in the order to claim from for this fetch."""
        if not self.weights:
            return self.queues
        # Weighted sampling without replacement (Efraimidis-Spirakis keys).
        keyed = [
            (self._rng.random() ** (1.0 / max(self.weights.get(q, 1.0), 1e-9)), q)
            for q in self.queues
        ]
        return [q for _, q in sorted(keyed, reverse=True)]

    async def claim(self, free_slots: int) -> list[ClaimedJob]:
        """Claim up to ``free_slots`` jobs, one store call per queue visited."""
        jobs: list[ClaimedJob] = []
        next_due: int | None = None
        failure: CalmqError | None = None
        for queue in self.order():
            wanted = free_slots - len(jobs)
            if wanted <= 0:
                break
            try:
                result = await self.run_io(
                    self.store.claim, queue, limit=wanted, lease_ms=self.lease_ms
                )
            except CalmqError as exc:
                # Keep what other queues gave: raising here would orphan jobs already
                # leased to us (they would sit until their lease expired, spending an
                # attempt). One broken queue must not stall the healthy ones either.
                log.warning("claiming from %s failed: %s", queue, exc)
                failure = exc
                continue
            jobs.extend(result.jobs)
            if result.next_due_ms is not None:
                due_in = max(0, result.next_due_ms - result.now_ms)
                next_due = due_in if next_due is None else min(next_due, due_in)
        self.next_due_in_ms = next_due
        if failure is not None and not jobs:
            raise failure  # nothing claimed anywhere: let the worker back off
        return jobs

    async def wait_for_work(self, stopping: asyncio.Event) -> None:
        """Sleep until a job may be claimable, the next scheduled job is due, or stop."""
        timeout = self.max_idle_wait
        if self.next_due_in_ms is not None:
            timeout = min(timeout, self.next_due_in_ms / 1000.0)
        if timeout <= 0.001:
            return
        waiter = asyncio.ensure_future(
            self.run_wait(self.store.wait_for_work, self.queues, timeout)
        )
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if waiter.done() and not waiter.cancelled():
            waiter.exception()  # retrieved, so asyncio does not warn; errors surface on claim
