"""The store conformance suite: the contract of :class:`calmq.stores.base.Store` as tests.

Every store calmq ships runs this suite, and so can a third-party store. The tests are
grouped by area, one ``Test...`` class per area, and need two pytest fixtures:

* ``store``: a fresh, empty store implementing :class:`~calmq.stores.base.Store`, closed by
  the fixture after the test;
* ``store_settings``: the :class:`~calmq.settings.Settings` that store was opened with (the
  suite reads ``completed_ttl`` from it).

To run it against your store, provide both fixtures (in the test module or a
``conftest.py``) and star-import this module so pytest collects the classes::

    # tests/test_my_store_conformance.py
    from collections.abc import Iterator

    import pytest

    from calmq.settings import Settings
    from calmq.stores.base import Store
    from calmq.testing.conformance import *  # noqa: F403

    from mystore import MyStore


    @pytest.fixture
    def store_settings() -> Settings:
        return Settings(url="mystore://localhost")


    @pytest.fixture
    def store(store_settings: Settings) -> Iterator[Store]:
        opened = MyStore(store_settings)
        try:
            yield opened
        finally:
            opened.close()

Parametrise ``store_settings`` to run the whole suite once per configuration. The lease
tests wait for short leases (50-100 ms) to expire on the store's clock; everything else
finishes in well under a second per test. Nothing here sleeps blindly: waits are polls with
a generous deadline, so a loaded machine slows the suite down but does not fail it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from calmq.job import (
    SCHEMA_VERSION,
    ClaimedJob,
    EnqueueOutcome,
    EnqueueResult,
    FailOutcome,
    JobInfo,
    JobState,
    Lease,
    NewJob,
    QueueCounts,
    new_job_id,
)
from calmq.settings import Settings
from calmq.stores.base import Store

__all__ = [
    "TestAdmin",
    "TestBoundedQueue",
    "TestCancel",
    "TestClaim",
    "TestClock",
    "TestClose",
    "TestCompleteAndFail",
    "TestConcurrency",
    "TestConcurrencyLimit",
    "TestDeadLetters",
    "TestEnqueue",
    "TestFairness",
    "TestLeases",
    "TestPause",
    "TestRateLimit",
    "TestRelease",
    "TestThrottle",
    "TestUnique",
    "TestWait",
    "TestWorkerRegistry",
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


# --- helpers ----------------------------------------------------------------------------


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


# --- enqueue ----------------------------------------------------------------------------


class TestEnqueue:
    """``enqueue``: results, idempotency, delays, ``queues`` and ``counts``."""

    def test_results_in_input_order(self, store: Store) -> None:
        jobs = [make_job(priority=p) for p in (5, 0, -5, 0)]
        results = store.enqueue(jobs)
        assert [r.id for r in results] == [j.id for j in jobs]
        assert all(r.created for r in results)
        assert all(r.state == JobState.READY for r in results)

    def test_empty_batch(self, store: Store) -> None:
        assert store.enqueue([]) == []

    def test_stores_the_job(self, store: Store) -> None:
        job = make_job(task="pkg.mod:fn", payload=b"\x00\xffbinary", priority=7, max_attempts=4)
        before = store.now_ms()
        enqueue_one(store, job)
        after = store.now_ms()
        info = get_info(store, job.id)
        assert info.id == job.id
        assert info.queue == QUEUE
        assert info.task == "pkg.mod:fn"
        assert info.payload == b"\x00\xffbinary"
        assert info.priority == 7
        assert info.max_attempts == 4
        assert info.state == JobState.READY
        assert before <= info.enqueued_at_ms <= after
        assert info.schema_version == SCHEMA_VERSION

    def test_binary_payload_round_trips(self, store: Store) -> None:
        payload = bytes(range(256)) * 4 + b"\x00"
        job = make_job(payload=payload)
        enqueue_one(store, job)
        assert get_info(store, job.id).payload == payload
        assert claim_one(store).payload == payload

    def test_idempotent_by_id(self, store: Store) -> None:
        job = make_job(payload=b"original", priority=1)
        enqueue_one(store, job)
        duplicate = NewJob(
            id=job.id, queue=job.queue, task="other.task", payload=b"changed", priority=9
        )
        results = store.enqueue([duplicate])
        assert results == [EnqueueResult(job.id, False, JobState.READY, EnqueueOutcome.EXISTS)]
        info = get_info(store, job.id)
        assert info.payload == b"original"
        assert info.task == TASK
        assert info.priority == 1
        assert one_count(store).ready == 1

    def test_duplicate_reports_existing_state(self, store: Store) -> None:
        running, scheduled = make_job(priority=1), make_job(delay_ms=60_000)
        enqueue_many(store, [running, scheduled])
        assert claim_one(store).id == running.id
        results = store.enqueue([scheduled, running])
        assert results == [
            EnqueueResult(scheduled.id, False, JobState.SCHEDULED, EnqueueOutcome.EXISTS),
            EnqueueResult(running.id, False, JobState.RUNNING, EnqueueOutcome.EXISTS),
        ]
        counts = one_count(store)
        assert (counts.ready, counts.scheduled, counts.running) == (0, 1, 1)

    def test_duplicate_in_mixed_batch(self, store: Store) -> None:
        old = make_job()
        enqueue_one(store, old)
        new1, new2 = make_job(), make_job()
        results = store.enqueue([new1, old, new2])
        assert [(r.id, r.created) for r in results] == [
            (new1.id, True),
            (old.id, False),
            (new2.id, True),
        ]
        assert one_count(store).ready == 3

    def test_batch_across_queues(self, store: Store) -> None:
        jobs = [make_job("q-b"), make_job("q-a"), make_job("q-c"), make_job("q-a")]
        enqueue_many(store, jobs)
        assert store.queues() == ["q-a", "q-b", "q-c"]
        by_queue = {c.queue: c for c in store.counts()}
        assert set(by_queue) == {"q-a", "q-b", "q-c"}
        assert by_queue["q-a"].ready == 2
        assert by_queue["q-b"].ready == 1
        assert by_queue["q-c"].ready == 1
        for job in jobs:
            assert get_info(store, job.id, job.queue).queue == job.queue

    def test_delay_ms_schedules(self, store: Store) -> None:
        job = make_job(delay_ms=60_000)
        before = store.now_ms()
        result = enqueue_one(store, job)
        after = store.now_ms()
        assert result.state == JobState.SCHEDULED
        info = get_info(store, job.id)
        assert info.state == JobState.SCHEDULED
        assert info.run_at_ms is not None
        assert before + 60_000 <= info.run_at_ms <= after + 60_000
        assert claim_all(store) == []

    def test_run_at_future_schedules(self, store: Store) -> None:
        run_at = store.now_ms() + 60_000
        job = make_job(run_at_ms=run_at)
        assert enqueue_one(store, job).state == JobState.SCHEDULED
        info = get_info(store, job.id)
        assert info.state == JobState.SCHEDULED
        assert info.run_at_ms == run_at
        assert claim_all(store) == []

    def test_run_at_past_is_ready(self, store: Store) -> None:
        job = make_job(run_at_ms=store.now_ms() - 60_000)
        assert enqueue_one(store, job).state == JobState.READY
        assert get_info(store, job.id).state == JobState.READY
        assert [c.id for c in claim_all(store)] == [job.id]

    def test_queues_empty_store(self, store: Store) -> None:
        assert store.queues() == []
        assert store.counts() == []

    def test_queues_sorted_and_remembered(self, store: Store) -> None:
        zed, alpha = make_job("zed"), make_job("alpha")
        enqueue_many(store, [zed, alpha])
        assert store.queues() == ["alpha", "zed"]
        # A queue that ever received a job stays known after it empties.
        claimed = claim_one(store, "zed")
        assert store.complete("zed", [claimed.lease]) == [True]
        assert store.queues() == ["alpha", "zed"]

    def test_counts(self, store: Store) -> None:
        enqueue_many(
            store,
            [make_job(), make_job(), make_job(), make_job(delay_ms=60_000), make_job("other")],
        )
        claim_one(store)
        counts = one_count(store)
        assert counts == QueueCounts(queue=QUEUE, ready=2, scheduled=1, running=1, dead=0)
        assert counts.total == 4
        selected = {c.queue: c for c in store.counts([QUEUE, "other"])}
        assert set(selected) == {QUEUE, "other"}
        assert selected["other"] == QueueCounts(queue="other", ready=1)


# --- claim ------------------------------------------------------------------------------


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


# --- leases and fencing -----------------------------------------------------------------


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


# --- complete and fail ------------------------------------------------------------------


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


# --- release ----------------------------------------------------------------------------


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


# --- dead letters -----------------------------------------------------------------------


def make_dead(store: Store, count: int) -> list[NewJob]:
    """``count`` dead jobs, dead-lettered one after another on distinct store milliseconds."""
    jobs = [make_job(max_attempts=2) for _ in range(count)]
    enqueue_many(store, jobs)
    for i, job in enumerate(jobs):
        kill(store, job, error=f"error {i}", traceback=f"traceback {i}")
        wait_store_clock_past(store, get_info(store, job.id).finished_at_ms or store.now_ms())
    return jobs


class TestDeadLetters:
    """Dead letters: listing, replay and purge."""

    def test_list_dead_newest_first(self, store: Store) -> None:
        jobs = make_dead(store, 3)
        dead = store.list_jobs(QUEUE, JobState.DEAD)
        assert [d.id for d in dead] == [j.id for j in reversed(jobs)]
        for info, i in zip(dead, (2, 1, 0), strict=True):
            assert info.state == JobState.DEAD
            assert info.error == f"error {i}"
            assert info.traceback == f"traceback {i}"
        assert one_count(store) == QueueCounts(queue=QUEUE, dead=3)
        page = store.list_jobs(QUEUE, JobState.DEAD, offset=1, limit=1)
        assert [d.id for d in page] == [jobs[1].id]

    def test_replay_one(self, store: Store) -> None:
        jobs = make_dead(store, 2)
        assert store.replay_dead(QUEUE, [jobs[0].id]) == 1
        assert get_info(store, jobs[0].id).state == JobState.READY
        assert get_info(store, jobs[1].id).state == JobState.DEAD
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=1, dead=1)
        claimed = claim_one(store)
        assert claimed.id == jobs[0].id
        assert claimed.attempt == 1
        assert claimed.max_attempts == 2

    def test_replay_all(self, store: Store) -> None:
        jobs = make_dead(store, 3)
        assert store.replay_dead(QUEUE) == 3
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=3)
        assert store.list_jobs(QUEUE, JobState.DEAD) == []
        claimed = claim_all(store)
        assert sorted(c.id for c in claimed) == sorted(j.id for j in jobs)
        assert all(c.attempt == 1 for c in claimed)
        assert store.replay_dead(QUEUE) == 0

    def test_replay_ignores_non_dead(self, store: Store) -> None:
        (dead,) = make_dead(store, 1)
        ready = make_job()
        enqueue_one(store, ready)
        assert store.replay_dead(QUEUE, [ready.id, new_job_id()]) == 0
        assert store.replay_dead(QUEUE, [dead.id]) == 1
        assert store.replay_dead(QUEUE, [dead.id]) == 0
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=2)

    def test_replayed_job_can_die_again(self, store: Store) -> None:
        (job,) = make_dead(store, 1)
        assert store.replay_dead(QUEUE, [job.id]) == 1
        kill(store, job, error="second death")
        info = get_info(store, job.id)
        assert info.state == JobState.DEAD
        assert info.error == "second death"

    def test_purge_one(self, store: Store) -> None:
        jobs = make_dead(store, 2)
        assert store.purge_dead(QUEUE, [jobs[0].id]) == 1
        assert store.get_job(QUEUE, jobs[0].id) is None
        assert get_info(store, jobs[1].id).state == JobState.DEAD
        assert one_count(store) == QueueCounts(queue=QUEUE, dead=1)
        assert store.purge_dead(QUEUE, [jobs[0].id]) == 0

    def test_purge_all(self, store: Store) -> None:
        jobs = make_dead(store, 3)
        ready = make_job()
        enqueue_one(store, ready)
        assert store.purge_dead(QUEUE) == 3
        for job in jobs:
            assert store.get_job(QUEUE, job.id) is None
        assert store.list_jobs(QUEUE, JobState.DEAD) == []
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=1)
        assert store.purge_dead(QUEUE) == 0

    def test_empty_id_list_means_none(self, store: Store) -> None:
        make_dead(store, 2)
        assert store.replay_dead(QUEUE, []) == 0
        assert store.purge_dead(QUEUE, []) == 0
        assert one_count(store) == QueueCounts(queue=QUEUE, dead=2)

    def test_purge_ignores_non_dead(self, store: Store) -> None:
        ready = make_job()
        enqueue_one(store, ready)
        assert store.purge_dead(QUEUE, [ready.id]) == 0
        assert get_info(store, ready.id).state == JobState.READY


# --- admin ------------------------------------------------------------------------------


class TestAdmin:
    """``get_job``, ``list_jobs`` and ``counts``."""

    def test_get_job_each_state(self, store: Store, store_settings: Settings) -> None:
        scheduled = make_job("q-scheduled", delay_ms=60_000)
        ready = make_job("q-ready")
        running = make_job("q-running")
        succeeded = make_job("q-succeeded")
        dead = make_job("q-dead")
        enqueue_many(store, [scheduled, ready, running, succeeded, dead])
        claim_one(store, "q-running")
        done = claim_one(store, "q-succeeded")
        assert store.complete("q-succeeded", [done.lease]) == [True]
        kill(store, dead)
        expected = {
            scheduled: JobState.SCHEDULED,
            ready: JobState.READY,
            running: JobState.RUNNING,
            dead: JobState.DEAD,
        }
        if store_settings.completed_ttl > 0:
            expected[succeeded] = JobState.SUCCEEDED
        for job, state in expected.items():
            info = get_info(store, job.id, job.queue)
            assert info.state == state, (job.queue, info)
            assert (info.id, info.queue, info.task) == (job.id, job.queue, job.task)
            if state != JobState.SUCCEEDED:  # a store may drop a finished job's payload
                assert info.payload == job.payload
            assert (info.priority, info.max_attempts) == (job.priority, job.max_attempts)
        assert get_info(store, ready.id, "q-ready").attempt == 0
        assert get_info(store, running.id, "q-running").attempt == 1

    def test_get_job_unknown(self, store: Store) -> None:
        assert store.get_job(QUEUE, new_job_id()) is None
        job = make_job()
        enqueue_one(store, job)
        assert store.get_job("another-queue", job.id) is None

    def test_list_ready_in_claim_order(self, store: Store) -> None:
        jobs = [make_job(priority=p) for p in (0, 5, 0, 5, -1)]
        enqueue_many(store, jobs)
        order = [jobs[1].id, jobs[3].id, jobs[0].id, jobs[2].id, jobs[4].id]
        listed = store.list_jobs(QUEUE, JobState.READY)
        assert [i.id for i in listed] == order
        assert all(i.state == JobState.READY for i in listed)
        page = store.list_jobs(QUEUE, JobState.READY, offset=1, limit=2)
        assert [i.id for i in page] == order[1:3]
        assert store.list_jobs(QUEUE, JobState.READY, offset=5) == []
        assert [i.id for i in store.list_jobs(QUEUE, JobState.READY, limit=3)] == order[:3]
        assert [c.id for c in claim_all(store)] == order

    def test_list_scheduled_in_due_order(self, store: Store) -> None:
        jobs = [make_job(delay_ms=d) for d in (30_000, 10_000, 20_000, 40_000)]
        enqueue_many(store, jobs)
        order = [jobs[1].id, jobs[2].id, jobs[0].id, jobs[3].id]
        listed = store.list_jobs(QUEUE, JobState.SCHEDULED)
        assert [i.id for i in listed] == order
        assert all(i.state == JobState.SCHEDULED for i in listed)
        page = store.list_jobs(QUEUE, JobState.SCHEDULED, offset=1, limit=2)
        assert [i.id for i in page] == order[1:3]
        assert store.list_jobs(QUEUE, JobState.READY) == []

    def test_list_running_in_deadline_order(self, store: Store) -> None:
        jobs = [make_job() for _ in range(4)]
        enqueue_many(store, jobs)
        for job, lease_ms in zip(jobs, (30_000, 10_000, 20_000, 40_000), strict=True):
            assert claim_one(store, lease_ms=lease_ms).id == job.id
        order = [jobs[1].id, jobs[2].id, jobs[0].id, jobs[3].id]
        listed = store.list_jobs(QUEUE, JobState.RUNNING)
        assert [i.id for i in listed] == order
        assert all(i.state == JobState.RUNNING for i in listed)
        page = store.list_jobs(QUEUE, JobState.RUNNING, offset=2, limit=10)
        assert [i.id for i in page] == order[2:]

    def test_list_unknown_queue(self, store: Store) -> None:
        for state in (JobState.READY, JobState.SCHEDULED, JobState.RUNNING, JobState.DEAD):
            assert store.list_jobs("nope", state) == []

    def test_empty_inputs(self, store: Store) -> None:
        enqueue_one(store, make_job())
        assert store.complete(QUEUE, []) == []
        assert store.release(QUEUE, []) == 0
        assert store.extend_leases(QUEUE, [], lease_ms=LONG_LEASE_MS) == []
        assert store.counts([]) == []
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=1)

    def test_counts_unknown_queue(self, store: Store) -> None:
        enqueue_one(store, make_job())
        assert store.counts(["nope"]) == [QueueCounts(queue="nope")]
        assert "nope" not in store.queues()


# --- wait -------------------------------------------------------------------------------


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


# --- clock ------------------------------------------------------------------------------


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


# --- concurrency ------------------------------------------------------------------------


class TestConcurrency:
    """Thread safety: concurrent claimers never share a job."""

    def test_concurrent_claims_exactly_once(self, store: Store) -> None:
        jobs = [make_job() for _ in range(400)]
        enqueue_many(store, jobs)
        claimed: list[list[str]] = [[] for _ in range(4)]

        def claimer(mine: list[str]) -> Callable[[], None]:
            def run() -> None:
                while batch := store.claim(QUEUE, limit=7, lease_ms=LONG_LEASE_MS).jobs:
                    mine.extend(c.id for c in batch)
                    assert store.complete(QUEUE, [c.lease for c in batch]) == [True] * len(batch)

            return run

        run_threads([claimer(mine) for mine in claimed])
        everything = [job_id for mine in claimed for job_id in mine]
        assert len(everything) == len(jobs)
        assert set(everything) == {j.id for j in jobs}
        assert one_count(store) == QueueCounts(queue=QUEUE)

    def test_concurrent_duplicate_enqueue_creates_once(self, store: Store) -> None:
        jobs = [make_job() for _ in range(50)]
        created: list[list[str]] = [[] for _ in range(4)]

        def producer(mine: list[str]) -> Callable[[], None]:
            def run() -> None:
                mine.extend(r.id for r in store.enqueue(jobs) if r.created)

            return run

        run_threads([producer(mine) for mine in created])
        everything = [job_id for mine in created for job_id in mine]
        assert sorted(everything) == sorted(j.id for j in jobs)
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=50)

    def test_concurrent_rescue_exactly_once(self, store: Store) -> None:
        jobs = [make_job(max_attempts=3) for _ in range(40)]
        enqueue_many(store, jobs)
        claimed = store.claim(QUEUE, limit=40, lease_ms=SHORT_LEASE_MS).jobs
        assert len(claimed) == 40
        wait_store_clock_past(store, max(c.lease_deadline_ms for c in claimed) + 20)
        rescued: list[list[str]] = [[] for _ in range(4)]

        def rescuer(mine: list[str]) -> Callable[[], None]:
            def run() -> None:
                while True:
                    result = store.rescue_expired(QUEUE, limit=3)
                    assert result.dead == []
                    if not result.requeued:
                        return
                    mine.extend(result.requeued)

            return run

        run_threads([rescuer(mine) for mine in rescued])
        everything = [job_id for mine in rescued for job_id in mine]
        assert sorted(everything) == sorted(j.id for j in jobs)
        assert one_count(store) == QueueCounts(queue=QUEUE, ready=40)

    def test_concurrent_complete_same_lease_once(self, store: Store) -> None:
        jobs = [make_job() for _ in range(30)]
        enqueue_many(store, jobs)
        leases = [c.lease for c in claim_all(store)]
        assert len(leases) == 30
        wins: list[list[bool]] = [[] for _ in range(4)]

        def completer(mine: list[bool]) -> Callable[[], None]:
            def run() -> None:
                for lease in leases:
                    mine.extend(store.complete(QUEUE, [lease]))

            return run

        run_threads([completer(mine) for mine in wins])
        for i in range(len(leases)):
            assert sum(mine[i] for mine in wins) == 1, f"lease {i} completed more than once"
        assert one_count(store) == QueueCounts(queue=QUEUE)


# --- close ------------------------------------------------------------------------------


class TestClose:
    """``close`` is idempotent."""

    def test_close_twice(self, store: Store) -> None:
        store.close()
        store.close()

    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.capabilities, frozenset)
        assert isinstance(store.display_url, str)


# The tests of the needless-work and overload controls, and of the worker registry, live in
# their own modules (this one is long enough); imported last, as they use the helpers above,
# and listed in __all__.
from calmq.testing.conformance_limits import (  # noqa: E402
    TestBoundedQueue,
    TestCancel,
    TestConcurrencyLimit,
    TestFairness,
    TestPause,
    TestRateLimit,
    TestThrottle,
    TestUnique,
)
from calmq.testing.conformance_workers import TestWorkerRegistry  # noqa: E402
