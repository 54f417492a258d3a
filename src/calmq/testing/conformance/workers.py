"""Conformance tests of the worker registry (part of the store suite).

``heartbeat`` records a worker until its ``ttl_ms`` passes on the store's clock, ``workers``
lists the live ones sorted by id with ``seen_at_ms`` filled in by the store, and
``forget_worker`` removes one at once. ``calmq.testing.conformance`` re-exports this class,
so a star import of it collects it too; the fixtures are the same (``store`` and
``store_settings``).
"""

from __future__ import annotations

import msgspec

from calmq.job import WorkerInfo
from calmq.stores.base import Store
from calmq.testing.conformance.helpers import poll

__all__ = ["TestWorkerRegistry"]

#: A ttl no test outlives.
LONG_TTL_MS = 60_000
#: Slack when comparing ``seen_at_ms`` with ``now_ms`` read around the heartbeat (same clock,
#: so only a wall-clock step on the store's host could need it).
SEEN_SLACK_MS = 1_000


def make_worker(worker_id: str, **changes: object) -> WorkerInfo:
    """A fully populated :class:`WorkerInfo` (every field away from its default)."""
    worker = WorkerInfo(
        id=worker_id,
        host="host-1.example",
        pid=4242,
        queues=["default", "emails"],
        concurrency=8,
        pool="processes",
        running=["job-a", "job-b"],
        started_at_ms=1_700_000_000_000,
        ttl_ms=LONG_TTL_MS,
        versions={"calmq": "1.2.3", "python": "3.11.9", "store": "test"},
        stats={"claimed": 12.0, "succeeded": 10.0, "wait_p50_ms": 1.5, "run_p99_ms": 250.25},
        seen_at_ms=123,  # the store must ignore this and fill in its own time
    )
    return msgspec.structs.replace(worker, **changes)


def ids(store: Store) -> list[str]:
    """The ids ``workers()`` lists, in its order."""
    return [w.id for w in store.workers()]


class TestWorkerRegistry:
    """Heartbeats, the live-worker listing, expiry on the store clock, forget."""

    def test_empty_store_lists_no_workers(self, store: Store) -> None:
        assert store.workers() == []

    def test_heartbeat_round_trips_every_field(self, store: Store) -> None:
        worker = make_worker("w-1")
        before = store.now_ms()
        store.heartbeat(worker)
        after = store.now_ms()
        [listed] = store.workers()
        assert listed == msgspec.structs.replace(worker, seen_at_ms=listed.seen_at_ms)
        assert before - SEEN_SLACK_MS <= listed.seen_at_ms <= after + SEEN_SLACK_MS

    def test_second_heartbeat_replaces_the_first(self, store: Store) -> None:
        store.heartbeat(make_worker("w-1", running=[], stats={"claimed": 1.0}))
        [first] = store.workers()
        updated = make_worker("w-1", running=["job-z"], stats={"claimed": 2.0, "dead": 1.0})
        store.heartbeat(updated)
        [listed] = store.workers()
        assert listed.running == ["job-z"]
        assert listed.stats == {"claimed": 2.0, "dead": 1.0}
        assert listed == msgspec.structs.replace(updated, seen_at_ms=listed.seen_at_ms)
        assert listed.seen_at_ms >= first.seen_at_ms - SEEN_SLACK_MS

    def test_workers_sorted_by_id(self, store: Store) -> None:
        for worker_id in ("w-b", "w-c", "w-a"):
            store.heartbeat(make_worker(worker_id))
        assert ids(store) == ["w-a", "w-b", "w-c"]

    def test_expired_heartbeat_disappears_and_a_new_one_brings_it_back(self, store: Store) -> None:
        store.heartbeat(make_worker("w-long"))
        store.heartbeat(make_worker("w-short", ttl_ms=100))
        poll(lambda: ids(store) == ["w-long"], "the 100 ms heartbeat to expire")
        assert ids(store) == ["w-long"]  # stays gone
        store.heartbeat(make_worker("w-short"))
        assert ids(store) == ["w-long", "w-short"]

    def test_many_expired_heartbeats_are_all_dropped(self, store: Store) -> None:
        # More than one call's worth of pruning in any store: listing still shows none.
        for i in range(250):
            store.heartbeat(make_worker(f"w-{i:03}", ttl_ms=1))
        store.heartbeat(make_worker("w-live"))
        poll(lambda: ids(store) == ["w-live"], "the 1 ms heartbeats to expire")

    def test_forget_worker_removes_it_and_is_idempotent(self, store: Store) -> None:
        store.heartbeat(make_worker("w-1"))
        store.heartbeat(make_worker("w-2"))
        store.forget_worker("w-1")
        assert ids(store) == ["w-2"]
        store.forget_worker("w-1")
        store.forget_worker("never-seen")
        assert ids(store) == ["w-2"]
        store.forget_worker("w-2")
        assert store.workers() == []
