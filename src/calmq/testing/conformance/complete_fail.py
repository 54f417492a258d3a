"""Conformance tests, complete and fail: results, retries and dead-lettering.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

from calmq.job import (
    ClaimedJob,
    EnqueueOutcome,
    EnqueueResult,
    FailOutcome,
    JobState,
    Lease,
    QueueCounts,
)
from calmq.settings import Settings
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
    poll,
)

__all__ = ["TestCompleteAndFail"]


class TestCompleteAndFail:
    """``complete`` and ``fail``: success, retries, dead letters, long errors."""

    def test_complete(self, store: Store, store_settings: Settings) -> None:
        job = make_job()
        enqueue_one(store, job)
        claimed = claim_one(store)
        assert one_count(store).running == 1
        assert store.complete(QUEUE, [claimed.lease]) == [True]
        assert one_count(store) == QueueCounts(queue=QUEUE)
        assert claim_all(store) == []
        info = store.get_job(QUEUE, job.id)
        if store_settings.completed_ttl == 0:
            assert info is None or info.state == JobState.SUCCEEDED
            return
        assert info is not None
        assert info.state == JobState.SUCCEEDED
        assert info.finished_at_ms is not None
        assert info.finished_at_ms >= claimed.claimed_at_ms
        # Remembered, so a late duplicate enqueue stays a no-op.
        results = store.enqueue([job])
        assert results == [EnqueueResult(job.id, False, JobState.SUCCEEDED, EnqueueOutcome.EXISTS)]
        assert claim_all(store) == []
        assert one_count(store) == QueueCounts(queue=QUEUE)

    def test_complete_batch_mixed(self, store: Store) -> None:
        jobs = [make_job() for _ in range(3)]
        enqueue_many(store, jobs)
        claimed = claim_all(store)
        leases = [claimed[0].lease, Lease(claimed[1].id, "wrong"), claimed[2].lease]
        assert store.complete(QUEUE, leases) == [True, False, True]
        assert one_count(store) == QueueCounts(queue=QUEUE, running=1)
        assert get_info(store, claimed[1].id).state == JobState.RUNNING

    def test_fail_with_retry(self, store: Store) -> None:
        job = make_job(max_attempts=3)
        enqueue_one(store, job)
        first = claim_one(store)
        outcome = store.fail(
            QUEUE, first.lease, error="ValueError: nope", traceback="tb 1", retry_in_ms=100
        )
        assert outcome == FailOutcome.RETRY_SCHEDULED
        info = get_info(store, job.id)
        assert info.state == JobState.SCHEDULED
        assert info.error == "ValueError: nope"
        assert info.attempt == 1
        assert info.run_at_ms is not None
        assert one_count(store) == QueueCounts(queue=QUEUE, scheduled=1)
        # The failed lease is spent.
        assert store.complete(QUEUE, [first.lease]) == [False]

        def try_claim() -> ClaimedJob | None:
            jobs = store.claim(QUEUE, limit=1, lease_ms=LONG_LEASE_MS).jobs
            return jobs[0] if jobs else None

        second = poll(try_claim, "the retry to become claimable")
        assert second.id == job.id
        assert second.attempt == 2
        assert second.token != first.token
        assert second.claimed_at_ms >= info.run_at_ms

    def test_fail_with_zero_delay_retry(self, store: Store) -> None:
        job = make_job(max_attempts=3)
        enqueue_one(store, job)
        first = claim_one(store)
        outcome = store.fail(QUEUE, first.lease, error="again", retry_in_ms=0)
        assert outcome == FailOutcome.RETRY_SCHEDULED
        second = claim_one(store)
        assert second.id == job.id
        assert second.attempt == 2

    def test_fail_to_dead(self, store: Store) -> None:
        job = make_job(max_attempts=3)
        enqueue_one(store, job)
        claimed = claim_one(store)
        outcome = store.fail(
            QUEUE, claimed.lease, error="RuntimeError: fatal", traceback="Traceback...\n  boom"
        )
        assert outcome == FailOutcome.DEAD
        info = get_info(store, job.id)
        assert info.state == JobState.DEAD
        assert info.error == "RuntimeError: fatal"
        assert info.traceback == "Traceback...\n  boom"
        assert info.finished_at_ms is not None
        assert one_count(store) == QueueCounts(queue=QUEUE, dead=1)
        assert claim_all(store) == []
        assert store.fail(QUEUE, claimed.lease, error="again") == FailOutcome.STALE

    def test_long_error_is_truncated(self, store: Store) -> None:
        job = make_job()
        enqueue_one(store, job)
        claimed = claim_one(store)
        error = "E" * 10 + "x" * 2_000_000
        traceback = "T" * 10 + "y" * 2_000_000
        outcome = store.fail(QUEUE, claimed.lease, error=error, traceback=traceback)
        assert outcome == FailOutcome.DEAD
        info = get_info(store, job.id)
        assert info.state == JobState.DEAD
        assert info.error is not None
        assert info.error.startswith("E" * 10)
        assert len(info.error) < len(error)
        assert info.traceback is not None
        assert len(info.traceback) < len(traceback)
