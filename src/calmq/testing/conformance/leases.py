"""Conformance tests, leases and fencing: extend, expiry, rescue and stale tokens.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

from calmq.job import (
    FailOutcome,
    JobState,
    Lease,
    QueueCounts,
    new_job_id,
)
from calmq.stores.base import Store
from calmq.testing.conformance.helpers import (
    LONG_LEASE_MS,
    QUEUE,
    SHORT_LEASE_MS,
    claim_all,
    claim_one,
    enqueue_many,
    enqueue_one,
    expire_and_reclaim,
    get_info,
    make_job,
    one_count,
    rescue_until,
    wait_store_clock_past,
)

__all__ = ["TestLeases"]


class TestLeases:
    """Leases: extension, fencing by token, expiry and rescue."""

    def test_extend_keeps_lease(self, store: Store) -> None:
        job = make_job()
        enqueue_one(store, job)
        claimed = claim_one(store, lease_ms=100)
        assert store.extend_leases(QUEUE, [claimed.lease], lease_ms=LONG_LEASE_MS) == []
        wait_store_clock_past(store, claimed.lease_deadline_ms + 50)
        rescued = store.rescue_expired(QUEUE)
        assert job.id not in rescued.requeued
        assert job.id not in rescued.dead
        assert get_info(store, job.id).state == JobState.RUNNING
        assert store.complete(QUEUE, [claimed.lease]) == [True]

    def test_extend_wrong_token_is_lost(self, store: Store) -> None:
        job, other = make_job(), make_job()
        enqueue_many(store, [job, other])
        claimed = claim_all(store)
        assert [c.id for c in claimed] == [job.id, other.id]
        leases = [Lease(job.id, "not-the-token"), claimed[1].lease]
        assert store.extend_leases(QUEUE, leases, lease_ms=LONG_LEASE_MS) == [job.id]
        # The real owner still holds it.
        assert get_info(store, job.id).state == JobState.RUNNING
        assert store.complete(QUEUE, [claimed[0].lease]) == [True]

    def test_extend_unknown_or_finished_is_lost(self, store: Store) -> None:
        job = make_job()
        enqueue_one(store, job)
        claimed = claim_one(store)
        assert store.complete(QUEUE, [claimed.lease]) == [True]
        unknown = Lease(new_job_id(), "token")
        lost = store.extend_leases(QUEUE, [claimed.lease, unknown], lease_ms=LONG_LEASE_MS)
        assert sorted(lost) == sorted([job.id, unknown.id])

    def test_expired_lease_is_ours_until_rescued(self, store: Store) -> None:
        job = make_job()
        enqueue_one(store, job)
        claimed = claim_one(store, lease_ms=SHORT_LEASE_MS)
        wait_store_clock_past(store, claimed.lease_deadline_ms + 20)
        # Expired but not rescued: nobody else holds it, so the lease still works.
        assert store.extend_leases(QUEUE, [claimed.lease], lease_ms=LONG_LEASE_MS) == []
        assert store.rescue_expired(QUEUE).requeued == []
        assert store.complete(QUEUE, [claimed.lease]) == [True]

    def test_lease_is_scoped_to_its_queue(self, store: Store) -> None:
        job = make_job()
        enqueue_one(store, job)
        claimed = claim_one(store)
        other = "another-queue"
        assert store.complete(other, [claimed.lease]) == [False]
        assert store.release(other, [claimed.lease]) == 0
        assert store.fail(other, claimed.lease, error="x") == FailOutcome.STALE
        assert store.extend_leases(other, [claimed.lease], lease_ms=LONG_LEASE_MS) == [job.id]
        assert get_info(store, job.id).state == JobState.RUNNING
        assert store.complete(QUEUE, [claimed.lease]) == [True]

    def test_rescue_limit(self, store: Store) -> None:
        jobs = [make_job() for _ in range(3)]
        enqueue_many(store, jobs)
        claimed = store.claim(QUEUE, limit=3, lease_ms=SHORT_LEASE_MS).jobs
        assert len(claimed) == 3
        wait_store_clock_past(store, max(c.lease_deadline_ms for c in claimed) + 20)
        first = store.rescue_expired(QUEUE, limit=2)
        assert len(first.requeued) == 2
        second = store.rescue_expired(QUEUE, limit=2)
        assert len(second.requeued) == 1
        assert sorted(first.requeued + second.requeued) == sorted(j.id for j in jobs)
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=3)

    def test_rescue_ignores_live_leases(self, store: Store) -> None:
        job = make_job()
        enqueue_one(store, job)
        claim_one(store)
        rescued = store.rescue_expired(QUEUE)
        assert (rescued.requeued, rescued.dead) == ([], [])
        assert get_info(store, job.id).state == JobState.RUNNING

    def test_lease_expiry(self, store: Store) -> None:
        job = make_job(max_attempts=3)
        enqueue_one(store, job)
        claim_one(store, lease_ms=SHORT_LEASE_MS)
        assert rescue_until(store, job.id) == (True, False)
        info = get_info(store, job.id)
        assert info.state == JobState.READY
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=1)
        again = claim_one(store)
        assert again.id == job.id
        assert again.attempt == 2

    def test_rescue_dead_letters_last_attempt(self, store: Store) -> None:
        job = make_job(max_attempts=1)
        enqueue_one(store, job)
        claimed = claim_one(store, lease_ms=SHORT_LEASE_MS)
        assert rescue_until(store, job.id) == (False, True)
        info = get_info(store, job.id)
        assert info.state == JobState.DEAD
        assert info.error is not None
        assert "lease" in info.error.lower(), info.error
        assert one_count(store) == QueueCounts(queue=QUEUE, dead=1)
        assert claim_all(store) == []
        assert store.complete(QUEUE, [claimed.lease]) == [False]

    def test_stale_token_is_fenced(self, store: Store) -> None:
        job = make_job(max_attempts=5)
        enqueue_one(store, job)
        stale, current = expire_and_reclaim(store, job)
        assert store.complete(QUEUE, [stale.lease]) == [False]
        assert store.fail(QUEUE, stale.lease, error="late", retry_in_ms=0) == FailOutcome.STALE
        assert store.fail(QUEUE, stale.lease, error="late") == FailOutcome.STALE
        assert store.release(QUEUE, [stale.lease]) == 0
        assert store.extend_leases(QUEUE, [stale.lease], lease_ms=LONG_LEASE_MS) == [job.id]
        info = get_info(store, job.id)
        assert info.state == JobState.RUNNING
        assert info.attempt == 2
        assert info.error != "late"
        assert one_count(store) == QueueCounts(queue=QUEUE, running=1)
        # The new owner is unaffected.
        assert store.extend_leases(QUEUE, [current.lease], lease_ms=LONG_LEASE_MS) == []
        assert store.complete(QUEUE, [current.lease]) == [True]
        assert one_count(store) == QueueCounts(queue=QUEUE)

    def test_complete_twice(self, store: Store) -> None:
        job = make_job()
        enqueue_one(store, job)
        claimed = claim_one(store)
        assert store.complete(QUEUE, [claimed.lease]) == [True]
        assert store.complete(QUEUE, [claimed.lease]) == [False]

    def test_fail_after_complete_is_stale(self, store: Store) -> None:
        job = make_job()
        enqueue_one(store, job)
        claimed = claim_one(store)
        assert store.complete(QUEUE, [claimed.lease]) == [True]
        assert store.fail(QUEUE, claimed.lease, error="late") == FailOutcome.STALE
        assert store.release(QUEUE, [claimed.lease]) == 0
        assert one_count(store) == QueueCounts(queue=QUEUE)
