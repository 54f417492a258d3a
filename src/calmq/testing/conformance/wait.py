"""Conformance tests, wait: blocking until work is ready on any listed queue.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

import threading
import time

from calmq.stores.base import Store
from calmq.testing.conformance.helpers import (
    QUEUE,
    claim_one,
    enqueue_one,
    make_job,
)

__all__ = ["TestWait"]


class TestWait:
    """``wait_for_work``: wakes on enqueue, times out when idle."""

    def test_wakes_on_enqueue(self, store: Store) -> None:
        job = make_job()

        def producer() -> None:
            time.sleep(0.2)  # let the waiter block first
            enqueue_one(store, job)

        thread = threading.Thread(target=producer, daemon=True)
        started = time.monotonic()
        thread.start()
        try:
            woke = store.wait_for_work([QUEUE], timeout=20.0)
        finally:
            thread.join(10.0)
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

        def producer() -> None:
            time.sleep(0.2)  # let the waiter block first
            enqueue_one(store, job)

        thread = threading.Thread(target=producer, daemon=True)
        started = time.monotonic()
        thread.start()
        try:
            woke = store.wait_for_work(["first", "second"], timeout=20.0)
        finally:
            thread.join(10.0)
        assert woke is True
        assert time.monotonic() - started < 10.0

    def test_times_out_when_idle(self, store: Store) -> None:
        enqueue_one(store, make_job("elsewhere"))
        started = time.monotonic()
        woke = store.wait_for_work([QUEUE], timeout=0.2)
        elapsed = time.monotonic() - started
        assert woke is False
        assert 0.1 <= elapsed < 5.0, f"wait_for_work(timeout=0.2) took {elapsed:.2f} s"
