"""Acknowledgements: batched while other jobs still run, sent at once for a lone job.

The linger is set far beyond the tests' deadlines where it must not apply, so a lone job
that waited for it fails the test instead of passing late. Real stores; nothing mocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from calmq.job import ClaimedJob, NewJob, new_job_id
from calmq.stores.base import Store
from calmq.worker import acker as acker_module
from calmq.worker.acker import Acker
from calmq.worker.lease_keeper import InFlight

QUEUE = "default"


def claim(store: Store, count: int) -> list[ClaimedJob]:
    ids = [new_job_id() for _ in range(count)]
    store.enqueue([NewJob(id=i, queue=QUEUE, task="t", payload=b"{}") for i in ids])
    jobs = store.claim(QUEUE, limit=count, lease_ms=60_000).jobs
    assert sorted(j.id for j in jobs) == sorted(ids)
    return jobs


class Recorder:
    """The acker's store and loop around it: every complete call and every acked batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[list[str]] = []
        self.acked: list[bool | None] = []
        self.inflight = InFlight()

    def complete(self, queue: str, leases: list[Any]) -> list[bool]:
        self.calls.append([lease.id for lease in leases])
        return self.store.complete(queue, leases)

    async def run_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def on_acked(self, jobs: list[tuple[ClaimedJob, float]], acked: list[bool | None]) -> None:
        self.acked += acked

    def acker(self) -> Acker:
        return Acker(self.complete, self.inflight, self.run_io, self.on_acked)


async def until(condition: Callable[[], bool], deadline: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_lone_job_is_acknowledged_without_the_linger(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acker_module, "ACK_LINGER", 3600.0)
    recorder = Recorder(store)
    (job,) = claim(store, 1)
    recorder.inflight.add(job)
    acker = recorder.acker()
    task = asyncio.create_task(acker.run_forever())
    try:
        acker.add(job, 1.0)
        await until(lambda: recorder.acked == [True])
        assert recorder.calls == [[job.id]] and len(recorder.inflight) == 0
    finally:
        task.cancel()


async def test_acknowledgements_gather_while_other_jobs_run(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acker_module, "ACK_LINGER", 0.5)
    recorder = Recorder(store)
    first, second, third = claim(store, 3)
    recorder.inflight.add(first, second, third)
    acker = recorder.acker()
    task = asyncio.create_task(acker.run_forever())
    try:
        acker.add(first, 1.0)  # two others still run: it waits for the linger...
        acker.add(second, 1.0)  # ...and this one joins it
        await until(lambda: len(recorder.acked) == 2)
        assert recorder.calls == [[first.id, second.id]]
        acker.add(third, 1.0)  # the last one running: sent at once
        await until(lambda: len(recorder.acked) == 3)
        assert recorder.calls[1:] == [[third.id]] and recorder.acked == [True] * 3
    finally:
        task.cancel()
