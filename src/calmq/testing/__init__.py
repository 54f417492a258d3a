"""Helpers for testing code that uses calmq, with no server: see what was enqueued, run the
queue until it is idle, or run jobs eagerly at enqueue time.

Use an in-memory store (``Settings(url="sqlite://:memory:")``) or a SQLite file under your
test's temporary directory. ``calmq.testing.conformance`` is the store contract's test suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from calmq.app import App
from calmq.job import JobState
from calmq.worker.stats import WorkerStats
from calmq.worker.worker import Worker, WorkerConfig

__all__ = ["EnqueuedJob", "eager", "enqueued", "run_until_idle"]


@dataclasses.dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """A job waiting in a queue, decoded for assertions."""

    id: str
    queue: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    state: JobState
    priority: int


def enqueued(app: App, queue: str | None = None, task: str | None = None) -> list[EnqueuedJob]:
    """Jobs waiting (ready or scheduled) in ``queue`` (default: every queue), optionally only
    those of one task (full name or the function's short name), in claim order."""
    store = app.store
    found: list[EnqueuedJob] = []
    for name in [queue] if queue else store.queues():
        for state in (JobState.READY, JobState.SCHEDULED):
            for info in _all_jobs(app, name, state):
                if task and task not in (info.task, info.task.rsplit(".", 1)[-1]):
                    continue
                envelope = app.serializer.decode(info.payload)
                found.append(
                    EnqueuedJob(info.id, info.queue, info.task, envelope.a, envelope.k,
                                info.state, info.priority)
                )  # fmt: skip
    return found


def _all_jobs(app: App, queue: str, state: JobState) -> Iterator[Any]:
    offset = 0
    while True:
        page = app.store.list_jobs(queue, state, offset=offset, limit=500)
        yield from page
        if len(page) < 500:
            return
        offset += len(page)


def run_until_idle(
    app: App, queues: Sequence[str] | None = None, *, concurrency: int = 1, timeout: float = 60
) -> WorkerStats:
    """Run a worker in this process until no job is ready or running; return its counters.

    Retries scheduled in the future are left waiting (they are not ready yet). Raises
    TimeoutError if the queue is not idle after ``timeout`` seconds.
    """
    names = list(queues) if queues else (app.store.queues() or ["default"])
    config = WorkerConfig(queues=names, concurrency=concurrency, burst=True, max_idle_wait=0.05)
    worker = Worker(app, config)
    asyncio.run(asyncio.wait_for(worker.run(), timeout))
    return worker.stats


@contextlib.contextmanager
def eager(app: App) -> Iterator[None]:
    """Run every job of ``app`` at enqueue time, in the calling thread, instead of storing
    it. Exceptions from the job propagate to the caller. Async tasks run on a fresh event
    loop, so eager mode cannot be used from inside a running event loop."""
    previous = app.eager
    app.eager = True
    try:
        yield
    finally:
        app.eager = previous
