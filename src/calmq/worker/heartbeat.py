"""Heartbeats: the worker's entry in the store's worker registry, refreshed every few seconds.

``calmq info``, ``calmq top`` and the dashboard read the registry; a worker that stops
heartbeating (crashed, frozen, partitioned) drops out after its ``ttl`` without anyone
cleaning up. A clean shutdown removes the entry at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from calmq.errors import CalmqError
from calmq.job import WorkerInfo
from calmq.stores.base import Store
from calmq.version import __version__

log = logging.getLogger("calmq.worker")


def versions(store: Store) -> dict[str, str]:
    kind = store.display_url.split("://", 1)[0]
    return {"calmq": __version__, "python": platform.python_version(), "store": kind}


class Heartbeat:
    """Sends ``snapshot()`` to the registry every ``interval`` seconds (ttl: 5 intervals)."""

    def __init__(
        self, store: Store, snapshot: Callable[[], WorkerInfo],
        run_io: Callable[..., Awaitable[Any]], *, interval: float = 3.0,
    ) -> None:  # fmt: skip
        self.store = store
        self.snapshot = snapshot
        self.run_io = run_io
        self.interval = interval
        self.ttl_ms = int(interval * 5 * 1000)
        self.host = socket.gethostname()

    async def run_forever(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)

    async def beat(self) -> None:
        try:
            await self.run_io(self.store.heartbeat, self.snapshot())
        except CalmqError as exc:
            log.warning("heartbeat failed (the registry shows this worker again once the"
                        " store answers): %s", exc)  # fmt: skip

    async def forget(self, worker_id: str) -> None:
        with contextlib.suppress(CalmqError):
            await self.run_io(self.store.forget_worker, worker_id)
