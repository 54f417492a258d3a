"""Conformance tests, wait: blocking until work is ready on any listed queue.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

import threading
import time

from calmq.job import NewJob
from calmq.stores.base import Store
from calmq.testing.conformance.helpers import (
    QUEUE,
    claim_one,
    enqueue_one,
    make_job,
)

__all__ = ["TestWait"]


def wait_while_enqueueing(store: Store, queues: list[str], job: NewJob) -> bool:
    """``wait_for_work(queues)``, while another thread enqueues ``job`` 0.2 s after the wait
    began (so the waiter is blocked by then)."""

    def producer() -> None:
        time.sleep(0.2)
        enqueue_one(store, job)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    try:
        return store.wait_for_work(queues, timeout=20.0)
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
