"""Conformance tests, clock: the store's now_ms and its connection gauge.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

import threading
import time

from calmq.stores.base import Store
from calmq.testing.conformance.helpers import (
    CLOCK_SLACK_MS,
)

__all__ = ["TestClock"]


class TestClock:
    """``now_ms`` is the wall clock in milliseconds."""

    def test_now_ms(self, store: Store) -> None:
        now = store.now_ms()
        assert isinstance(now, int)
        assert abs(now - time.time() * 1000) < CLOCK_SLACK_MS
        assert store.now_ms() >= now

    def test_connections_in_use_counts_calls_in_flight(self, store: Store) -> None:
        assert store.connections_in_use() == 0  # idle
        seen: list[int] = []
        queue = "gauge"
        started, release = threading.Event(), threading.Event()

        def slow_wait() -> None:
            started.set()
            store.wait_for_work(["empty-" + queue], 0.5)  # holds a connection while it waits
            release.set()

        thread = threading.Thread(target=slow_wait)
        thread.start()
        started.wait(5)
        seen.append(store.connections_in_use())
        thread.join(10)
        assert release.is_set()
        assert store.connections_in_use() == 0  # back to idle after the call
        assert 0 <= seen[0] <= 1  # at most the one waiting call
