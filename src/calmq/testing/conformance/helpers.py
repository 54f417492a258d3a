"""Shared helpers of the store conformance suite: constants, job builders, polls, threads.

Every area module of :mod:`calmq.testing.conformance` imports from here; so can a test of a
third-party store (``calmq.testing.conformance`` re-exports these names too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from calmq.errors import QueueUnavailable
from calmq.job import (
    ClaimedJob,
    EnqueueResult,
    FailOutcome,
    JobInfo,
    NewJob,
    QueueCounts,
    new_job_id,
)
from calmq.stores.base import Store

__all__ = [
    "CLOCK_SLACK_MS",
    "LONG_LEASE_MS",
    "POLL_INTERVAL_S",
    "POLL_TIMEOUT_S",
    "QUEUE",
    "SHORT_LEASE_MS",
    "TASK",
    "claim_all",
    "claim_one",
    "enqueue_many",
    "enqueue_one",
    "expire_and_reclaim",
    "get_info",
    "kill",
    "make_job",
    "one_count",
    "patiently",
    "poll",
    "rescue_until",
    "run_threads",
    "wait_store_clock_past",
]

T = TypeVar("T")

QUEUE = "default"
TASK = "conformance.task"
#: A lease that never expires during a test.
LONG_LEASE_MS = 60_000
#: A lease short enough to expire quickly in the lease tests.
SHORT_LEASE_MS = 50
#: How long a poll waits for something that should happen within ~100 ms.
POLL_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.01
#: Tolerance when comparing the store's clock with this process's clock.
CLOCK_SLACK_MS = 5_000


def make_job(
    queue: str = QUEUE,
    *,
    task: str = TASK,
    payload: bytes | None = None,
    priority: int = 0,
    max_attempts: int = 3,
    delay_ms: int = 0,
    run_at_ms: int | None = None,
) -> NewJob:
    """A :class:`NewJob` with a fresh id and, unless given, a payload unique to it."""
    job_id = new_job_id()
    return NewJob(
        id=job_id,
        queue=queue,
        task=task,
        payload=payload if payload is not None else f"payload:{job_id}".encode(),
        priority=priority,
        max_attempts=max_attempts,
        delay_ms=delay_ms,
        run_at_ms=run_at_ms,
    )


def enqueue_one(store: Store, job: NewJob) -> EnqueueResult:
    """Enqueue one new job and check the store created it."""
    results = store.enqueue([job])
    assert len(results) == 1, results
    assert results[0].id == job.id
    assert results[0].created is True, results
    return results[0]


def enqueue_many(store: Store, jobs: Sequence[NewJob]) -> None:
    """Enqueue new jobs in one call and check every one was created."""
    results = store.enqueue(jobs)
    assert [r.id for r in results] == [j.id for j in jobs]
    assert all(r.created for r in results), results


def claim_one(store: Store, queue: str = QUEUE, *, lease_ms: int = LONG_LEASE_MS) -> ClaimedJob:
    """Claim exactly one job (the store must have one ready)."""
    result = store.claim(queue, limit=1, lease_ms=lease_ms)
    assert len(result.jobs) == 1, f"expected one claimable job in {queue!r}, got {result}"
    return result.jobs[0]


def claim_all(store: Store, queue: str = QUEUE, *, limit: int = 1000) -> list[ClaimedJob]:
    """Claim every ready job of a queue in one call."""
    return store.claim(queue, limit=limit, lease_ms=LONG_LEASE_MS).jobs


def poll(check: Callable[[], T | None], what: str, timeout: float = POLL_TIMEOUT_S) -> T:
    """Call ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def wait_store_clock_past(store: Store, when_ms: int) -> None:
    """Wait until the store's clock reads later than ``when_ms``."""
    poll(lambda: store.now_ms() > when_ms, f"the store clock to pass {when_ms}")


def get_info(store: Store, job_id: str, queue: str = QUEUE) -> JobInfo:
    """``get_job`` that must find the job."""
    info = store.get_job(queue, job_id)
    assert info is not None, f"get_job({queue!r}, {job_id!r}) returned None"
    return info


def one_count(store: Store, queue: str = QUEUE) -> QueueCounts:
    """The counts of a single queue."""
    counts = store.counts([queue])
    assert len(counts) == 1, counts
    assert counts[0].queue == queue
    return counts[0]


def rescue_until(store: Store, job_id: str, queue: str = QUEUE) -> tuple[bool, bool]:
    """Poll ``rescue_expired`` until it takes ``job_id``; return (requeued, dead)."""

    def attempt() -> tuple[bool, bool] | None:
        result = store.rescue_expired(queue)
        if job_id in result.requeued or job_id in result.dead:
            return (job_id in result.requeued, job_id in result.dead)
        return None

    return poll(attempt, f"rescue_expired to take {job_id}")


def expire_and_reclaim(store: Store, job: NewJob) -> tuple[ClaimedJob, ClaimedJob]:
    """Claim ``job`` with a short lease, let it expire and be rescued, then claim it again.

    Returns the first (stale) and the second (current) claim. ``job`` needs
    ``max_attempts >= 2`` and must be the only ready job of its queue.
    """
    first = claim_one(store, job.queue, lease_ms=SHORT_LEASE_MS)
    assert first.id == job.id
    assert rescue_until(store, job.id, job.queue) == (True, False)
    second = claim_one(store, job.queue)
    assert second.id == job.id
    return first, second


def kill(store: Store, job: NewJob, error: str = "boom", traceback: str = "tb") -> ClaimedJob:
    """Claim ``job`` (the next claimable one of its queue) and dead-letter it via ``fail``."""
    claimed = claim_one(store, job.queue)
    assert claimed.id == job.id
    outcome = store.fail(job.queue, claimed.lease, error=error, traceback=traceback)
    assert outcome == FailOutcome.DEAD
    return claimed


def patiently(call: Callable[[], T], timeout: float = 60.0) -> T:
    """``call()``, tried again while the store answers busy (as a worker backs off and tries
    again): a store may refuse a call that would wait longer than its busy timeout, which
    threads racing on a two-core box can make it do."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except QueueUnavailable as exc:
            if exc.reason != "busy" or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def run_threads(targets: Sequence[Callable[[], None]], timeout: float = 30.0) -> None:
    """Run callables on threads, wait for all, and re-raise the first exception any raised."""
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported to the test below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a worker thread did not finish"
    if errors:
        raise errors[0]
