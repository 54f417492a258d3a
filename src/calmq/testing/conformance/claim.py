"""Conformance tests, claim: priority and FIFO order, limits, lease tokens, due jobs.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

from calmq.job import (
    SCHEMA_VERSION,
    ClaimedJob,
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
    expire_and_reclaim,
    get_info,
    make_job,
    one_count,
    poll,
    wait_store_clock_past,
)

__all__ = ["TestClaim"]


class TestClaim:
    """``claim``: order, limit, attempts, tokens, fields, delays and ``next_due_ms``."""

    def test_priority_order(self, store: Store) -> None:
        low, mid, high, neg = (make_job(priority=p) for p in (0, 10, 1000, -1000))
        enqueue_many(store, [low, mid, high, neg])
        assert [c.id for c in claim_all(store)] == [high.id, mid.id, low.id, neg.id]

    def test_fifo_within_priority_one_batch(self, store: Store) -> None:
        jobs = [make_job() for _ in range(8)]
        enqueue_many(store, jobs)
        assert [c.id for c in claim_all(store)] == [j.id for j in jobs]

    def test_fifo_within_priority_separate_calls(self, store: Store) -> None:
        # Several enqueues usually land in the same millisecond: order must still hold.
        jobs = [make_job(priority=i % 2) for i in range(10)]
        for job in jobs:
            enqueue_one(store, job)
        expected = [j.id for j in jobs if j.priority == 1] + [j.id for j in jobs if j.priority == 0]
        got: list[str] = []
        while batch := store.claim(QUEUE, limit=3, lease_ms=LONG_LEASE_MS).jobs:
            got.extend(c.id for c in batch)
        assert got == expected

    def test_limit(self, store: Store) -> None:
        enqueue_many(store, [make_job() for _ in range(5)])
        first = store.claim(QUEUE, limit=2, lease_ms=LONG_LEASE_MS).jobs
        assert len(first) == 2
        counts = one_count(store)
        assert (counts.ready, counts.running) == (3, 2)
        rest = store.claim(QUEUE, limit=10, lease_ms=LONG_LEASE_MS).jobs
        assert len(rest) == 3
        assert {c.id for c in first}.isdisjoint(c.id for c in rest)
        assert claim_all(store) == []
        counts = one_count(store)
        assert (counts.ready, counts.running) == (0, 5)

    def test_claimed_job_fields(self, store: Store) -> None:
        job = make_job(task="pkg.mod:fn", payload=b"\x01\x02", priority=3, max_attempts=5)
        before = store.now_ms()
        enqueue_one(store, job)
        info = get_info(store, job.id)
        result = store.claim(QUEUE, limit=1, lease_ms=30_000)
        after = store.now_ms()
        (claimed,) = result.jobs
        assert claimed.id == job.id
        assert claimed.queue == QUEUE
        assert claimed.task == "pkg.mod:fn"
        assert claimed.payload == b"\x01\x02"
        assert claimed.priority == 3
        assert claimed.max_attempts == 5
        assert claimed.attempt == 1
        assert claimed.enqueued_at_ms == info.enqueued_at_ms
        assert before <= claimed.enqueued_at_ms <= claimed.claimed_at_ms <= after
        assert claimed.enqueued_at_ms <= claimed.ready_at_ms <= claimed.claimed_at_ms
        deadline_error = claimed.lease_deadline_ms - (claimed.claimed_at_ms + 30_000)
        assert abs(deadline_error) <= 1_000, claimed
        assert claimed.schema_version == SCHEMA_VERSION
        assert isinstance(claimed.token, str)
        assert claimed.token
        assert claimed.lease == Lease(job.id, claimed.token)
        assert before <= result.now_ms <= after
        running = get_info(store, job.id)
        assert running.state == JobState.RUNNING
        assert running.attempt == 1

    def test_every_claimed_job_has_a_token(self, store: Store) -> None:
        # Jobs of one claim may share a token (a lease is the pair id + token); what
        # fencing needs is a new token on every claim of the same job, tested below.
        enqueue_many(store, [make_job() for _ in range(5)])
        claimed = claim_all(store)
        assert len(claimed) == 5
        assert all(isinstance(c.token, str) and c.token for c in claimed)

    def test_token_changes_after_release(self, store: Store) -> None:
        job = make_job()
        enqueue_one(store, job)
        first = claim_one(store)
        assert store.release(QUEUE, [first.lease]) == 1
        second = claim_one(store)
        assert second.id == job.id
        assert second.token != first.token

    def test_token_changes_after_rescue(self, store: Store) -> None:
        job = make_job(max_attempts=3)
        enqueue_one(store, job)
        first, second = expire_and_reclaim(store, job)
        assert second.token != first.token
        assert (first.attempt, second.attempt) == (1, 2)

    def test_empty_queue(self, store: Store) -> None:
        result = store.claim(QUEUE, limit=10, lease_ms=LONG_LEASE_MS)
        assert result.jobs == []
        assert result.next_due_ms is None

    def test_other_queues_untouched(self, store: Store) -> None:
        mine = [make_job("mine") for _ in range(2)]
        theirs = [make_job("theirs", priority=100) for _ in range(3)]
        enqueue_many(store, [*theirs, *mine])
        claimed = claim_all(store, "mine")
        assert sorted(c.id for c in claimed) == sorted(j.id for j in mine)
        assert all(c.queue == "mine" for c in claimed)
        assert one_count(store, "theirs") == QueueCounts(queue="theirs", ready=3)
        for job in theirs:
            assert get_info(store, job.id, "theirs").state == JobState.READY

    def test_delayed_job_claimable_once_due(self, store: Store) -> None:
        job = make_job(delay_ms=100)
        enqueue_one(store, job)
        run_at = get_info(store, job.id).run_at_ms
        assert run_at is not None

        def try_claim() -> ClaimedJob | None:
            result = store.claim(QUEUE, limit=1, lease_ms=LONG_LEASE_MS)
            if result.jobs:
                return result.jobs[0]
            # Not claimable yet: only acceptable while the store's clock has not reached run_at.
            assert result.now_ms == 0 or result.now_ms <= run_at, result
            assert result.next_due_ms == run_at, result
            return None

        claimed = poll(try_claim, "the delayed job to become claimable")
        assert claimed.id == job.id
        assert claimed.attempt == 1
        assert claimed.claimed_at_ms >= run_at
        assert claimed.ready_at_ms >= run_at
        counts = one_count(store)
        assert (counts.scheduled, counts.running) == (0, 1)

    def test_not_claimable_before_due(self, store: Store) -> None:
        job = make_job(delay_ms=2_000)
        enqueue_one(store, job)
        run_at = get_info(store, job.id).run_at_ms
        assert run_at is not None
        result = store.claim(QUEUE, limit=10, lease_ms=LONG_LEASE_MS)
        if store.now_ms() < run_at:
            assert result.jobs == []
            assert get_info(store, job.id).state == JobState.SCHEDULED

    def test_due_job_promoted_before_claiming(self, store: Store) -> None:
        ready = make_job(priority=0)
        due_at = store.now_ms() + 50
        urgent = make_job(priority=5, run_at_ms=due_at)
        enqueue_many(store, [ready, urgent])
        wait_store_clock_past(store, due_at)
        # No promote_due call: claim itself promotes what is due, then picks by priority.
        assert claim_one(store).id == urgent.id
        assert claim_one(store).id == ready.id

    def test_next_due_ms_none_without_scheduled(self, store: Store) -> None:
        enqueue_many(store, [make_job(), make_job()])
        result = store.claim(QUEUE, limit=1, lease_ms=LONG_LEASE_MS)
        assert len(result.jobs) == 1
        assert result.next_due_ms is None

    def test_next_due_ms(self, store: Store) -> None:
        later, sooner = make_job(delay_ms=60_000), make_job(delay_ms=30_000)
        ready = make_job()
        enqueue_many(store, [later, sooner, ready])
        sooner_at = get_info(store, sooner.id).run_at_ms
        assert sooner_at is not None
        result = store.claim(QUEUE, limit=10, lease_ms=LONG_LEASE_MS)
        assert [c.id for c in result.jobs] == [ready.id]
        assert result.next_due_ms == sooner_at
        empty = store.claim(QUEUE, limit=10, lease_ms=LONG_LEASE_MS)
        assert empty.jobs == []
        assert empty.next_due_ms == sooner_at

    def test_promote_due(self, store: Store) -> None:
        due, later = make_job(delay_ms=100), make_job(delay_ms=60_000)
        enqueue_many(store, [due, later])
        moved = poll(lambda: store.promote_due(QUEUE), "promote_due to move the due job")
        assert moved == 1
        assert get_info(store, due.id).state == JobState.READY
        assert get_info(store, later.id).state == JobState.SCHEDULED
        assert store.promote_due(QUEUE) == 0
        counts = one_count(store)
        assert (counts.ready, counts.scheduled) == (1, 1)

    def test_promote_due_limit(self, store: Store) -> None:
        past = store.now_ms() + 50
        jobs = [make_job(run_at_ms=past) for _ in range(3)]
        enqueue_many(store, jobs)
        wait_store_clock_past(store, past)
        assert store.promote_due(QUEUE, limit=2) == 2
        assert one_count(store).ready == 2
        assert store.promote_due(QUEUE, limit=2) == 1
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=3)
