"""Maintenance: take back jobs whose lease expired. Separate from fetching and executing.

Every worker runs it; the store operation is atomic and idempotent, so several workers
rescuing at once is harmless (each expired lease is taken back exactly once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from calmq.alerts import QueueWatch
from calmq.errors import CalmqError
from calmq.events import Event, EventKind, Hooks
from calmq.job import RescueResult
from calmq.stores.base import Store

log = logging.getLogger("calmq.worker")


class Maintenance:
    """Rescues expired leases of ``queues`` every ``interval`` seconds."""

    def __init__(
        self, store: Store, queues: Sequence[str], *, interval: float,
        run_io: Callable[..., Any], events: Hooks, watch: QueueWatch | None = None,
        sample_every: float = 5.0,
    ) -> None:  # fmt: skip
        self.store = store
        self.queues = list(queues)
        self.interval = interval
        self.run_io = run_io
        self.events = events
        self.watch = watch
        self.sample_every = sample_every
        self._last_sample = 0.0
        self.rescued = 0
        self.dead_lettered = 0

    async def run_forever(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)

    async def run_once(self) -> None:
        await self.rescue()
        now = time.monotonic()
        if self.watch is not None and now - self._last_sample >= self.sample_every:
            self._last_sample = now
            try:
                await self.run_io(self.watch.check, self.store, self.queues)
            except CalmqError as exc:
                log.warning("sampling queue depths failed: %s", exc)

    async def rescue(self) -> None:
        for queue in self.queues:
            try:
                result: RescueResult = await self.run_io(self.store.rescue_expired, queue)
            except CalmqError as exc:
                log.warning("lease rescue in %s failed: %s", queue, exc)
                continue
            if result.requeued or result.dead:
                self.rescued += len(result.requeued)
                self.dead_lettered += len(result.dead)
                self.events.emit(Event(
                    EventKind.RESCUED, queue, count=len(result.requeued) + len(result.dead),
                    detail=f"expired leases: {len(result.requeued)} back to ready,"
                           f" {len(result.dead)} dead-lettered",
                ))  # fmt: skip
