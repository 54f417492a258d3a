"""Conformance tests, release: handing a claimed job back without spending an attempt.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

from calmq.job import (
    JobState,
    Lease,
    QueueCounts,
)
from calmq.stores.base import Store
from calmq.testing.conformance.helpers import (
    LONG_LEASE_MS,
    QUEUE,
    claim_all,
    claim_one,
    enqueue_many,
    enqueue_one,
    get_info,
    make_job,
    one_count,
)

__all__ = ["TestRelease"]


class TestRelease:
    """``release``: back to ready at once, same place, no attempt spent."""

    def test_release_keeps_place_and_attempt(self, store: Store) -> None:
        first, second, third = make_job(), make_job(), make_job()
        enqueue_many(store, [first, second, third])
        claimed = claim_one(store)
        assert claimed.id == first.id
        assert store.release(QUEUE, [claimed.lease]) == 1
        info = get_info(store, first.id)
        assert info.state == JobState.READY
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=3)
        again = claim_all(store)
        assert [c.id for c in again] == [first.id, second.id, third.id]
        assert again[0].attempt == 1

    def test_release_front_of_its_priority(self, store: Store) -> None:
        high, a, b = make_job(priority=5), make_job(), make_job()
        enqueue_many(store, [high, a, b])
        claimed = store.claim(QUEUE, limit=2, lease_ms=LONG_LEASE_MS).jobs
        assert [c.id for c in claimed] == [high.id, a.id]
        late_high = make_job(priority=5)
        enqueue_one(store, late_high)
        assert store.release(QUEUE, [claimed[1].lease]) == 1
        assert [c.id for c in claim_all(store)] == [late_high.id, a.id, b.id]

    def test_release_does_not_spend_attempt_of_last_try(self, store: Store) -> None:
        job = make_job(max_attempts=1)
        enqueue_one(store, job)
        first = claim_one(store)
        assert store.release(QUEUE, [first.lease]) == 1
        again = claim_one(store)
        assert again.id == job.id
        assert again.attempt == 1
        assert again.token != first.token
        assert store.release(QUEUE, [first.lease]) == 0

    def test_release_counts_only_ours(self, store: Store) -> None:
        jobs = [make_job() for _ in range(3)]
        enqueue_many(store, jobs)
        claimed = claim_all(store)
        leases = [claimed[0].lease, Lease(claimed[1].id, "wrong"), claimed[2].lease]
        assert store.release(QUEUE, leases) == 2
        assert get_info(store, claimed[1].id).state == JobState.RUNNING
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=2, running=1)
