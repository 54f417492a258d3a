"""Conformance tests, wait: blocking until work is ready on any listed queue, alone or
followed by a claim (``wait_then_claim``).

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from calmq.job import ClaimResult, JobState, NewJob
from calmq.stores.base import Store
from calmq.testing.conformance.helpers import (
    LONG_LEASE_MS,
    QUEUE,
    claim_one,
    enqueue_one,
    get_info,
    make_job,
)

__all__ = ["TestWait", "TestWaitThenClaim"]

T = TypeVar("T")


def wait_while_enqueueing(store: Store, queues: list[str], job: NewJob) -> bool:
    """``wait_for_work(queues)``, while another thread enqueues ``job`` 0.2 s after the wait
    began (so the waiter is blocked by then)."""
    return _while_enqueueing(store, job, lambda: store.wait_for_work(queues, timeout=20.0))


def _while_enqueueing(store: Store, job: NewJob, wait: Callable[[], T]) -> T:
    def producer() -> None:
        time.sleep(0.2)  # not a timing assertion: only so the wait has begun
        enqueue_one(store, job)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    try:
        return wait()
    finally:
        thread.join(10.0)


class TestWait:
    """``wait_for_work``: wakes on enqueue, times out when idle."""

    def test_wakes_on_enqueue(self, store: Store) -> None:
        job = make_job()
        started = time.monotonic()
        woke = wait_while_enqueueing(store, [QUEUE], job)
        elapsed = time.monotonic() - started
        assert woke is True
        assert elapsed < 10.0, f"wait_for_work took {elapsed:.1f} s to notice the enqueue"
        assert claim_one(store).id == job.id

    def test_returns_at_once_when_work_is_ready(self, store: Store) -> None:
        enqueue_one(store, make_job())
        started = time.monotonic()
        assert store.wait_for_work([QUEUE], timeout=20.0) is True
        assert time.monotonic() - started < 10.0

    def test_wakes_for_any_listed_queue(self, store: Store) -> None:
        job = make_job("second")
        started = time.monotonic()
        woke = wait_while_enqueueing(store, ["first", "second"], job)
        assert woke is True
        assert time.monotonic() - started < 10.0

    def test_times_out_when_idle(self, store: Store) -> None:
        enqueue_one(store, make_job("elsewhere"))
        started = time.monotonic()
        woke = store.wait_for_work([QUEUE], timeout=0.2)
        elapsed = time.monotonic() - started
        assert woke is False
        assert 0.1 <= elapsed < 5.0, f"wait_for_work(timeout=0.2) took {elapsed:.2f} s"


class TestWaitThenClaim:
    """``wait_then_claim``: the wait, then a claim from one queue, as one store call."""

    def _wait_then_claim(
        self, store: Store, queues: list[str], queue: str = QUEUE, timeout: float = 20.0
    ) -> ClaimResult:
        return store.wait_then_claim(queues, timeout, queue, limit=5, lease_ms=LONG_LEASE_MS)

    def test_a_job_enqueued_during_the_wait_is_claimed(self, store: Store) -> None:
        job = make_job()
        started = time.monotonic()
        result = _while_enqueueing(store, job, lambda: self._wait_then_claim(store, [QUEUE]))
        elapsed = time.monotonic() - started
        assert [claimed.id for claimed in result.jobs] == [job.id]
        assert elapsed < 10.0, f"wait_then_claim took {elapsed:.1f} s to notice the enqueue"
        assert get_info(store, job.id).state == JobState.RUNNING
        assert result.jobs[0].attempt == 1

    def test_ready_work_is_claimed_at_once(self, store: Store) -> None:
        jobs = [make_job() for _ in range(7)]
        for job in jobs:
            enqueue_one(store, job)
        started = time.monotonic()
        result = self._wait_then_claim(store, [QUEUE])
        assert time.monotonic() - started < 10.0
        assert [claimed.id for claimed in result.jobs] == [job.id for job in jobs[:5]]  # limit

    def test_claims_from_the_named_queue_only(self, store: Store) -> None:
        other = make_job("other")
        result = _while_enqueueing(
            store, other, lambda: self._wait_then_claim(store, [QUEUE, "other"], QUEUE)
        )
        assert result.jobs == []  # woken by "other", claimed from QUEUE: nothing there
        assert get_info(store, other.id, "other").state == JobState.READY
        assert claim_one(store, "other").id == other.id

    def test_claims_after_the_timeout_too(self, store: Store) -> None:
        result = self._wait_then_claim(store, [QUEUE], timeout=0.2)
        assert result.jobs == []
        job = make_job()
        enqueue_one(store, job)
        assert claim_one(store).id == job.id  # nothing was left leased by the empty claim
