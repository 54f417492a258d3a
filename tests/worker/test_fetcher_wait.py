"""Waking and claiming: a wait abandoned midway is resumed, a wake-up claims on the waiter
thread, a stop never strands a claimed job, and new work starts while other jobs run.

The idle wait is set far beyond the tests' deadlines, so a lost wake-up fails the test
instead of being covered by the periodic re-claim.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from calmq import App, Settings
from calmq.job import NewJob, new_job_id
from calmq.stores.base import Store
from calmq.worker.fetcher import Fetcher
from calmq.worker.worker import Worker, WorkerConfig
from tests.jobs import lines, make_app
from tests.worker.helpers import running

T = TypeVar("T")
QUEUE = "default"
NEVER = 3600.0  # an idle wait no test outlives: only a wake-up ends it


def enqueue(store: Store, value: str = "x") -> str:
    job_id = new_job_id()
    store.enqueue([NewJob(id=job_id, queue=QUEUE, task="append", payload=value.encode())])
    return job_id


class Threads:
    """The worker's two store threads (I/O and waiter), for a Fetcher of our own."""

    def __init__(self) -> None:
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-io")
        self.waiter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-wait")

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self.io, functools.partial(fn, *args)
        )

    def fetcher(self, store: Store) -> Fetcher:
        return Fetcher(store, [QUEUE], lease_ms=30_000, run_io=self.run_io,
                       waiter=self.waiter, max_idle_wait=NEVER)  # fmt: skip

    def close(self) -> None:
        """Wait for the threads to finish what they run (a wait ends on a wake-up)."""
        self.io.shutdown(wait=True)
        self.waiter.shutdown(wait=True)


@pytest.fixture
def threads() -> Threads:
    return Threads()


def test_a_wake_up_claims_on_the_waiter_thread(redis_store: Store, threads: Threads) -> None:
    async def main() -> tuple[str, list[str]]:
        fetcher = threads.fetcher(redis_store)
        assert await fetcher.claim(4) == [] and fetcher.drained
        waiting = asyncio.create_task(fetcher.wait_then_claim(4))
        job_id = await asyncio.to_thread(enqueue, redis_store)
        jobs = await asyncio.wait_for(waiting, 30)
        assert fetcher.drained  # one job for four slots: the queue ran dry
        return job_id, [job.id for job in jobs]

    job_id, claimed = asyncio.run(main())
    threads.close()
    assert claimed == [job_id]
    assert redis_store.claim(QUEUE, limit=10, lease_ms=30_000).jobs == []


def test_an_idle_wait_costs_the_loop_no_task(redis_store: Store, threads: Threads) -> None:
    """The wait is one loop future that the waiter thread resolves: no task for the store
    call, none for the stop (at a trickle, each costs the loop more than the job does)."""

    async def main() -> tuple[int, int]:
        fetcher = threads.fetcher(redis_store)
        await fetcher.claim(4)
        before = len(asyncio.all_tasks())
        waiting = asyncio.create_task(fetcher.wait_then_claim(4))
        await asyncio.sleep(0.05)  # in the store wait by now
        during = len(asyncio.all_tasks())
        await asyncio.to_thread(enqueue, redis_store)
        await asyncio.wait_for(waiting, 30)
        return before, during

    before, during = asyncio.run(main())
    threads.close()
    assert during == before + 1  # the test's own task, nothing else


def test_an_abandoned_wait_is_resumed_not_queued_behind(
    redis_store: Store, threads: Threads
) -> None:
    """A second store wait queued behind an abandoned one would sleep through the wake-up
    the first one consumed."""

    async def main() -> None:
        fetcher = threads.fetcher(redis_store)
        stopping = asyncio.Event()
        first = asyncio.create_task(fetcher.wait_for_work(stopping))
        await asyncio.sleep(0)  # let it start its store wait
        assert fetcher._wait is not None
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        second = asyncio.create_task(fetcher.wait_for_work(stopping))
        await asyncio.to_thread(enqueue, redis_store)
        await asyncio.wait_for(second, 30)

    asyncio.run(main())
    threads.close()


def test_a_stop_during_the_wait_leaves_new_jobs_in_the_queue(
    store: Store, threads: Threads
) -> None:
    """On every store: with the claim sent along with the wait (Redis) the job claimed as
    the stop came is released; otherwise (SQLite) no claim is made after the stop."""

    async def main() -> list[object]:
        fetcher = threads.fetcher(store)
        await fetcher.claim(4)
        waiting = asyncio.create_task(fetcher.wait_then_claim(4))
        await asyncio.sleep(0)
        fetcher.stop_waiting()
        assert await asyncio.wait_for(waiting, 30) == []
        assert await fetcher.wait_then_claim(4) == []  # stopped for good: no new wait
        left = await threads.run_io(fetcher.close)
        await asyncio.to_thread(enqueue, store)  # wakes the store wait still running
        return left

    assert asyncio.run(main()) == []
    # The waiter thread's wait (and, on Redis, the claim sent with it) saw the wake-up;
    # closed, it kept nothing: the job is back in the queue with no attempt spent.
    threads.close()
    jobs = store.claim(QUEUE, limit=10, lease_ms=30_000).jobs
    assert [job.attempt for job in jobs] == [1]


def test_jobs_claimed_as_the_stop_came_are_handed_back(
    redis_store: Store, threads: Threads
) -> None:
    fetcher = threads.fetcher(redis_store)
    job_id = enqueue(redis_store)
    # What the waiter thread does when its wait ends; the loop, stopping, never takes it.
    claimed, _ = fetcher._wait_then_claim(0.0, 4)
    assert [job.id for job in claimed] == [job_id]
    assert [job.id for job in fetcher.close()] == [job_id]
    assert fetcher._wait_then_claim(0.0, 4) == ([], None)  # closed: no more claims
    threads.close()


def test_work_enqueued_while_a_job_runs_starts_at_once(app: App, tmp_path: Path) -> None:
    """The first job holds a slot until the second one has run: the second must start on
    its wake-up, with a job running and no periodic re-claim to fall back on."""
    out, gate = tmp_path / "out.txt", tmp_path / "gate"
    worker = Worker(app, WorkerConfig(concurrency=4, lease=5, max_idle_wait=NEVER))

    async def main() -> None:
        async with running(worker), asyncio.timeout(60):
            await asyncio.to_thread(app.enqueue, "wait_for_file", str(out), str(gate), 60.0)
            while not any(line.startswith("start") for line in lines(out)):
                await asyncio.sleep(0.01)
            await asyncio.to_thread(app.enqueue, "append", str(out), "second")
            while "second" not in lines(out):
                await asyncio.sleep(0.01)
            assert not any(line.startswith("end") for line in lines(out))
            gate.touch()
            while worker.stats.succeeded < 2:
                await asyncio.sleep(0.01)

    asyncio.run(main())
    assert worker.stats.succeeded == 2


def test_a_prestarted_job_is_reported_once_even_if_it_ends_before_start(
    redis_settings: Settings, tmp_path: Path
) -> None:
    from calmq.worker.executor import Executor, Outcome
    from calmq.worker.running import RunningJobs

    app = make_app(redis_settings)
    out = tmp_path / "out.txt"
    try:
        for value in ("early", "late"):
            app.enqueue("append", str(out), value)
        claimed = app.store.claim(QUEUE, limit=2, lease_ms=30_000).jobs
        outcomes: list[tuple[str, Outcome]] = []

        async def main() -> None:
            running = RunningJobs(
                Executor(app), 4, lambda job, o, _ms, _acked: outcomes.append((job.id, o))
            )
            try:
                async with asyncio.timeout(30):
                    running.prestart(claimed)
                    while len(lines(out)) < 2:  # both ran, not yet registered by start()
                        await asyncio.sleep(0.01)
                    while any(e.early is None for e in running._prestarted.values()):
                        await asyncio.sleep(0.01)  # their ends reached the loop
                    assert outcomes == []
                    running.start(claimed)
                    assert len(running) == 0
            finally:
                running.close()

        asyncio.run(main())
    finally:
        app.close()
    assert sorted(lines(out)) == ["early", "late"]
    assert sorted(job_id for job_id, _ in outcomes) == sorted(job.id for job in claimed)
    assert all(outcome.kind.value == "succeeded" for _, outcome in outcomes)
