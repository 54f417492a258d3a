"""Conformance tests of the needless-work and overload controls (part of the store suite).

Unique jobs, throttles, rate and concurrency limits, fair lanes, bounded queues, pause and
cancel, each enforced by the store at enqueue or claim time. ``calmq.testing.conformance``
re-exports these classes, so a star import of it collects them too; the fixtures are the
same (``store`` and ``store_settings``).

The race tests print what they observed (maximum concurrency, achieved rate); run pytest
with ``-s`` to see it. The 10-second rate test is marked ``slow``.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import msgspec
import pytest

from calmq.job import (
    CancelOutcome,
    ClaimedJob,
    DuplicatePolicy,
    EnqueueOutcome,
    FailOutcome,
    JobState,
    NewJob,
    QueueConfig,
    QueueOverflow,
    UniqueScope,
    new_job_id,
)
from calmq.settings import Settings
from calmq.stores.base import CAP_MULTI_PROCESS, Store
from calmq.testing.conformance.helpers import (
    LONG_LEASE_MS,
    QUEUE,
    SHORT_LEASE_MS,
    claim_all,
    claim_one,
    enqueue_many,
    enqueue_one,
    get_info,
    make_job,
    one_count,
    patiently,
    poll,
    rescue_until,
    run_threads,
)
from calmq.testing.processes import enqueue_unique

__all__ = [
    "TestBoundedQueue",
    "TestCancel",
    "TestConcurrencyLimit",
    "TestFairness",
    "TestPause",
    "TestRateLimit",
    "TestThrottle",
    "TestUnique",
]


def limited(**fields: Any) -> NewJob:
    """A :func:`make_job` job with control fields set."""
    return msgspec.structs.replace(make_job(), **fields)


def uniq(unique_key: str = "k", **fields: Any) -> NewJob:
    return limited(unique_key=unique_key, **fields)


# --- unique -----------------------------------------------------------------------------


class TestUnique:
    """Unique keys: duplicates return the existing job; replace debounces."""

    def test_duplicate_returns_existing(self, store: Store) -> None:
        first = uniq()
        enqueue_one(store, first)
        result = store.enqueue([uniq()])[0]
        assert (result.id, result.created, result.outcome) == (
            first.id, False, EnqueueOutcome.DUPLICATE,
        )  # fmt: skip
        assert result.duplicate_of == first.id
        assert result.state == JobState.READY
        assert one_count(store).ready == 1

    def test_duplicate_in_one_batch(self, store: Store) -> None:
        a, b = uniq(), uniq()
        results = store.enqueue([a, b])
        assert [r.outcome for r in results] == [EnqueueOutcome.CREATED, EnqueueOutcome.DUPLICATE]
        assert results[1].duplicate_of == a.id

    def test_batch_of_new_keys_reports_each_state(self, store: Store) -> None:
        now, later = uniq("a"), uniq("b", delay_ms=60_000)
        results = store.enqueue([now, later])
        assert [(r.id, r.created, r.state, r.outcome) for r in results] == [
            (now.id, True, JobState.READY, EnqueueOutcome.CREATED),
            (later.id, True, JobState.SCHEDULED, EnqueueOutcome.CREATED),
        ]

    def test_every_control_on_one_job(self, store: Store) -> None:
        def job(key: str) -> NewJob:
            return uniq(key, unique_scope=UniqueScope.ACTIVE, throttle_key="t",
                        throttle_limit=2, throttle_period_ms=60_000, rate_key="r",
                        rate_limit=5, rate_period_ms=60_000, concurrency_key="c",
                        concurrency_limit=1, fairness_key="f")  # fmt: skip

        first, second = job("a"), job("b")
        enqueue_many(store, [first, second])
        assert store.enqueue([job("a")])[0].outcome == EnqueueOutcome.DUPLICATE  # unique
        assert store.enqueue([job("c")])[0].outcome == EnqueueOutcome.THROTTLED  # 2 per minute
        running = claim_all(store)
        assert [j.id for j in running] == [first.id]  # one slot
        assert store.enqueue([job("a")])[0].outcome == EnqueueOutcome.DUPLICATE  # active
        assert store.complete(QUEUE, [running[0].lease]) == [True]
        assert [j.id for j in claim_all(store)] == [second.id]

    def test_other_keys_and_queues_are_independent(self, store: Store) -> None:
        enqueue_one(store, uniq("a"))
        enqueue_one(store, uniq("b"))
        enqueue_one(store, msgspec.structs.replace(uniq("a"), queue="other"))

    def test_scope_queued_ends_when_running(self, store: Store) -> None:
        enqueue_one(store, uniq())
        claim_one(store)
        enqueue_one(store, uniq())

    def test_scope_active_holds_while_running(self, store: Store) -> None:
        enqueue_one(store, uniq(unique_scope=UniqueScope.ACTIVE))
        claimed = claim_one(store)
        dup = store.enqueue([uniq(unique_scope=UniqueScope.ACTIVE)])[0]
        assert dup.outcome == EnqueueOutcome.DUPLICATE
        assert dup.state == JobState.RUNNING
        assert store.complete(QUEUE, [claimed.lease]) == [True]
        enqueue_one(store, uniq(unique_scope=UniqueScope.ACTIVE))

    def test_scope_ttl_outlives_the_job(self, store: Store) -> None:
        ttl: dict[str, Any] = {"unique_scope": UniqueScope.TTL, "unique_ttl_ms": 300}
        enqueue_one(store, uniq(**ttl))
        claimed = claim_one(store)
        assert store.complete(QUEUE, [claimed.lease]) == [True]
        assert store.enqueue([uniq(**ttl)])[0].outcome == EnqueueOutcome.DUPLICATE
        poll(lambda: store.enqueue([uniq(**ttl)])[0].created, "the unique TTL to pass")

    def test_replace_is_debounce(self, store: Store) -> None:
        first = uniq(payload=b"v1")
        enqueue_one(store, first)
        before = store.now_ms()
        replace = {"unique_policy": DuplicatePolicy.REPLACE}
        result = store.enqueue([uniq(payload=b"v2", delay_ms=60_000, **replace)])[0]
        assert (result.id, result.outcome) == (first.id, EnqueueOutcome.REPLACED)
        assert result.state == JobState.SCHEDULED
        info = get_info(store, first.id)
        assert info.payload == b"v2"
        assert info.state == JobState.SCHEDULED
        assert info.run_at_ms is not None
        assert info.run_at_ms >= before + 60_000
        result = store.enqueue([uniq(payload=b"v3", **replace)])[0]
        assert (result.outcome, result.state) == (EnqueueOutcome.REPLACED, JobState.READY)
        claimed = claim_one(store)
        assert (claimed.id, claimed.payload) == (first.id, b"v3")
        assert one_count(store).total == 1

    def test_raise_policy_is_reported_like_keep(self, store: Store) -> None:
        enqueue_one(store, uniq())
        result = store.enqueue([uniq(unique_policy=DuplicatePolicy.RAISE)])[0]
        assert result.outcome == EnqueueOutcome.DUPLICATE

    def test_cancelled_holder_frees_the_key(self, store: Store) -> None:
        first = uniq()
        enqueue_one(store, first)
        assert store.cancel(QUEUE, first.id) == CancelOutcome.CANCELLED
        enqueue_one(store, uniq())

    def test_processes_race_creates_exactly_one(
        self, store: Store, store_settings: Settings
    ) -> None:
        if CAP_MULTI_PROCESS not in store.capabilities:
            pytest.skip("store is private to one process")
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(8), ctx.Queue()
        procs = [
            ctx.Process(target=enqueue_unique, args=(store_settings, QUEUE, "race", barrier, out))
            for _ in range(8)
        ]
        for proc in procs:
            proc.start()
        outcomes = [out.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(30)
            assert proc.exitcode == 0
        assert sorted(outcomes) == ["created"] + ["duplicate"] * 7
        assert one_count(store).ready == 1

    def test_threads_race_creates_exactly_one(self, store: Store) -> None:
        outcomes: list[EnqueueOutcome] = []

        def producer() -> None:
            outcomes.append(store.enqueue([uniq("race")])[0].outcome)

        run_threads([producer] * 8)
        assert sorted(outcomes) == [EnqueueOutcome.CREATED] + [EnqueueOutcome.DUPLICATE] * 7


# --- throttle ---------------------------------------------------------------------------


class TestThrottle:
    """Throttles: at most N enqueues of a key per period; the rest are not stored."""

    def throttled(self, period_ms: int = 60_000, limit: int = 3, key: str = "t") -> NewJob:
        return limited(throttle_key=key, throttle_limit=limit, throttle_period_ms=period_ms)

    def test_over_the_limit_is_dropped(self, store: Store) -> None:
        results = [store.enqueue([self.throttled()])[0] for _ in range(5)]
        assert [r.created for r in results] == [True, True, True, False, False]
        assert results[3].outcome == EnqueueOutcome.THROTTLED
        assert results[3].state == JobState.DROPPED
        assert store.get_job(QUEUE, results[3].id) is None
        assert one_count(store).ready == 3
        assert store.enqueue([self.throttled(key="other")])[0].created

    def test_limit_is_exact_one_by_one_and_in_a_batch(self, store: Store) -> None:
        one_by_one = [store.enqueue([self.throttled(limit=20)])[0] for _ in range(25)]
        assert sum(r.created for r in one_by_one) == 20
        assert [r.created for r in one_by_one[20:]] == [False] * 5
        batch = store.enqueue([self.throttled(limit=20, key="b") for _ in range(25)])
        assert [r.created for r in batch] == [True] * 20 + [False] * 5

    def test_window_slides(self, store: Store) -> None:
        assert store.enqueue([self.throttled(300, 1)])[0].created
        assert store.enqueue([self.throttled(300, 1)])[0].outcome == EnqueueOutcome.THROTTLED
        poll(lambda: store.enqueue([self.throttled(300, 1)])[0].created, "the window to slide")


# --- rate limits ------------------------------------------------------------------------


def rated(limit: int, period_ms: int, key: str = "r", **fields: Any) -> NewJob:
    return limited(rate_key=key, rate_limit=limit, rate_period_ms=period_ms, **fields)


def drain(store: Store, seconds: float, threads: int, *, limit: int = 5) -> list[ClaimedJob]:
    """Claim and complete from QUEUE on ``threads`` threads for ``seconds``."""
    claimed: list[ClaimedJob] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < end:
            jobs = store.claim(QUEUE, limit=limit, lease_ms=LONG_LEASE_MS).jobs
            if not jobs:
                time.sleep(0.002)
                continue
            with lock:
                claimed.extend(jobs)
            assert store.complete(QUEUE, [j.lease for j in jobs]) == [True] * len(jobs)

    run_threads([worker] * threads, timeout=seconds + 60)
    return claimed


def max_in_window(times_ms: list[int], window_ms: int) -> int:
    """The most events in any half-open window [t, t + window_ms)."""
    times = sorted(times_ms)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window_ms:
            start += 1
        best = max(best, end - start + 1)
    return best


class TestRateLimit:
    """Rate limits: at most N starts per period; the rest wait, no attempt spent."""

    def test_over_the_limit_stays_queued(self, store: Store) -> None:
        jobs = [rated(2, 60_000) for _ in range(5)]
        enqueue_many(store, jobs)
        result = store.claim(QUEUE, limit=10, lease_ms=LONG_LEASE_MS)
        assert [j.id for j in result.jobs] == [jobs[0].id, jobs[1].id]
        assert store.claim(QUEUE, limit=10, lease_ms=LONG_LEASE_MS).jobs == []
        assert one_count(store).ready == 3
        info = get_info(store, jobs[2].id)
        assert (info.state, info.attempt) == (JobState.READY, 0)
        assert result.next_due_ms is not None
        assert result.now_ms < result.next_due_ms <= result.now_ms + 60_000

    def test_limit_is_exact_over_small_claims(self, store: Store) -> None:
        # Claims of 3 reach a limit of 10 over several calls: each must know the count,
        # and the starts of another key must neither count nor block.
        enqueue_many(store, [rated(100, 60_000, key="other") for _ in range(6)])
        assert len(claim_all(store)) == 6
        jobs = [rated(10, 60_000) for _ in range(15)]
        enqueue_many(store, jobs)
        started: list[ClaimedJob] = []
        for _ in range(8):
            started += store.claim(QUEUE, limit=3, lease_ms=LONG_LEASE_MS).jobs
        assert [j.id for j in started] == [j.id for j in jobs[:10]]
        assert one_count(store).ready == 5

    def test_other_work_is_not_blocked(self, store: Store) -> None:
        enqueue_many(store, [rated(1, 60_000) for _ in range(3)])
        plain, other = make_job(), rated(1, 60_000, key="other")
        enqueue_many(store, [plain, other])
        got = {j.id for j in claim_all(store)}
        assert {plain.id, other.id} <= got
        assert len(got) == 3

    def test_window_reopens(self, store: Store) -> None:
        enqueue_many(store, [rated(2, 300) for _ in range(4)])
        first = claim_all(store)
        assert len(first) == 2
        later = poll(lambda: claim_all(store), "the rate window to reopen")
        assert len(later) == 2
        assert later[0].claimed_at_ms - first[0].claimed_at_ms >= 300

    def _hold_rate(self, store: Store, seconds: float, rate: int) -> None:
        enqueue_many(store, [rated(rate, 1000) for _ in range(int(rate * seconds * 1.5) + 50)])
        claimed = drain(store, seconds, threads=4)
        starts = [j.claimed_at_ms for j in claimed]
        peak = max_in_window(starts, 1000)
        average = len(starts) / seconds
        print(f"\nrate limit {rate}/s over {seconds}s: {len(starts)} starts,"
              f" peak {peak} in any 1 s window, average {average:.1f}/s")  # fmt: skip
        assert peak <= rate, f"{peak} starts in one second, limit {rate}"
        assert len(starts) >= rate * (seconds - 1) * 0.8  # the limit is reached, not choked

    def test_rate_holds_for_two_seconds(self, store: Store) -> None:
        self._hold_rate(store, 2.0, 50)

    @pytest.mark.slow
    def test_rate_holds_for_ten_seconds(self, store: Store) -> None:
        self._hold_rate(store, 10.0, 50)


# --- concurrency limits -----------------------------------------------------------------


def capped(limit: int, key: str = "c", **fields: Any) -> NewJob:
    return limited(concurrency_key=key, concurrency_limit=limit, **fields)


class TestConcurrencyLimit:
    """Concurrency limits: at most N running at once; every way out frees the slot."""

    def test_limit_and_release_on_complete(self, store: Store) -> None:
        enqueue_many(store, [capped(2) for _ in range(5)])
        running = claim_all(store)
        assert len(running) == 2
        assert claim_all(store) == []
        assert store.complete(QUEUE, [running[0].lease]) == [True]
        assert len(claim_all(store)) == 1

    def test_fail_and_release_free_the_slot(self, store: Store) -> None:
        enqueue_many(store, [capped(1, max_attempts=3) for _ in range(3)])
        first = claim_one(store)
        outcome = store.fail(QUEUE, first.lease, error="x", retry_in_ms=60_000)
        assert outcome == FailOutcome.RETRY_SCHEDULED
        second = claim_one(store)
        assert claim_all(store) == []
        assert store.release(QUEUE, [second.lease]) == 1
        assert claim_one(store).id == second.id

    def test_crashed_worker_slot_comes_back(self, store: Store) -> None:
        jobs = [capped(1, max_attempts=3) for _ in range(2)]
        enqueue_many(store, jobs)
        lost = claim_one(store, lease_ms=SHORT_LEASE_MS)
        assert claim_all(store) == []
        assert rescue_until(store, lost.id) == (True, False)
        assert len(poll(lambda: claim_all(store), "the slot to come back")) == 1

    def test_other_keys_unaffected(self, store: Store) -> None:
        enqueue_many(store, [capped(1) for _ in range(2)])
        enqueue_many(store, [capped(1, key="other"), make_job()])
        assert len(claim_all(store)) == 3

    def test_limit_holds_under_racing_workers(self, store: Store) -> None:
        enqueue_many(store, [capped(3) for _ in range(2000)])
        lock = threading.Lock()
        seen = {"max": 0, "done": 0}

        def worker() -> None:  # racing for the write lock: busy answers are tried again
            while True:
                jobs = patiently(lambda: store.claim(QUEUE, limit=2, lease_ms=LONG_LEASE_MS)).jobs
                running = patiently(lambda: one_count(store)).running  # slots held now
                with lock:
                    seen["max"] = max(seen["max"], running)
                if not jobs:
                    counts = patiently(lambda: one_count(store))
                    if counts.ready == 0 and counts.running == 0:
                        return
                    time.sleep(0.001)
                    continue
                leases = [j.lease for j in jobs]
                assert patiently(lambda: store.complete(QUEUE, leases)) == [True] * len(jobs)  # noqa: B023
                with lock:
                    seen["done"] += len(jobs)

        run_threads([worker] * 4, timeout=120)
        print(f"\nconcurrency limit 3, 4 threads, 2000 jobs: max running observed {seen['max']}")
        assert seen["done"] == 2000
        assert 1 <= seen["max"] <= 3


# --- fairness ---------------------------------------------------------------------------


class TestFairness:
    """Fair lanes: a tenant with many jobs does not starve one with few."""

    def test_small_tenant_is_served_early(self, store: Store) -> None:
        enqueue_many(store, [limited(fairness_key="A") for _ in range(1000)])
        small = [limited(fairness_key="B") for _ in range(10)]
        enqueue_many(store, small)
        order = [claim_one(store).id for _ in range(30)]
        assert {j.id for j in small} <= set(order)

    def test_round_robin_in_one_claim_and_fifo_per_lane(self, store: Store) -> None:
        a = [limited(fairness_key="A") for _ in range(4)]
        b = [limited(fairness_key="B") for _ in range(2)]
        plain = [make_job() for _ in range(2)]
        enqueue_many(store, [*a, *b, *plain])
        ids = [j.id for j in claim_all(store)]
        assert sorted(ids) == sorted(j.id for j in [*a, *b, *plain])
        assert [i for i in ids if i in {j.id for j in a}] == [j.id for j in a]
        assert one_count(store).running == 8


# --- bounded queues ---------------------------------------------------------------------


class TestBoundedQueue:
    """A queue's bound on ready jobs: reject, or drop the oldest to the dead letters."""

    def test_reject(self, store: Store) -> None:
        store.set_queue_limit(QUEUE, 2, QueueOverflow.REJECT)
        assert store.queue_config(QUEUE) == QueueConfig(QUEUE, False, 2, QueueOverflow.REJECT)
        enqueue_many(store, [make_job(), make_job()])
        result = store.enqueue([make_job()])[0]
        assert (result.created, result.outcome) == (False, EnqueueOutcome.REJECTED)
        assert result.state == JobState.DROPPED
        assert store.enqueue([make_job(delay_ms=60_000)])[0].created  # not ready: admitted
        claim_one(store)
        assert store.enqueue([make_job()])[0].created
        store.set_queue_limit(QUEUE, None)
        assert store.queue_config(QUEUE).max_ready is None
        assert store.enqueue([make_job()])[0].created

    def test_drop_oldest(self, store: Store) -> None:
        store.set_queue_limit(QUEUE, 2, QueueOverflow.DROP_OLDEST)
        jobs = [make_job(), limited(fairness_key="A"), make_job()]
        for job in jobs:
            enqueue_one(store, job)
        oldest = get_info(store, jobs[0].id)
        assert (oldest.state, oldest.error) == (JobState.DEAD, "dropped: queue full")
        assert one_count(store).ready == 2
        assert [j.id for j in store.list_jobs(QUEUE, JobState.DEAD)] == [jobs[0].id]


# --- pause ------------------------------------------------------------------------------


class TestPause:
    """Pause and resume: claims stop, enqueue goes on."""

    def test_pause_and_resume(self, store: Store) -> None:
        enqueue_one(store, make_job())
        store.pause(QUEUE)
        store.pause(QUEUE)  # idempotent
        assert store.queue_config(QUEUE).paused
        assert store.claim(QUEUE, limit=10, lease_ms=LONG_LEASE_MS).jobs == []
        enqueue_one(store, make_job())  # a paused queue still takes jobs
        assert store.claim(QUEUE, limit=10, lease_ms=LONG_LEASE_MS).jobs == []
        store.resume(QUEUE)
        assert store.wait_for_work([QUEUE], 5.0) is True
        assert not store.queue_config(QUEUE).paused
        assert len(claim_all(store)) == 2

    def test_pause_is_per_queue(self, store: Store) -> None:
        enqueue_one(store, make_job("other"))
        store.pause(QUEUE)
        assert len(claim_all(store, "other")) == 1


# --- cancel -----------------------------------------------------------------------------


class TestCancel:
    """Cancel: a queued job is removed; a running one loses its lease."""

    def test_cancel_queued(self, store: Store) -> None:
        ready, scheduled, laned = make_job(), make_job(delay_ms=60_000), limited(fairness_key="A")
        enqueue_many(store, [ready, scheduled, laned])
        for job in (ready, scheduled, laned):
            assert store.cancel(QUEUE, job.id) == CancelOutcome.CANCELLED
            assert get_info(store, job.id).state == JobState.CANCELLED
        assert store.cancel(QUEUE, ready.id) == CancelOutcome.NOT_CANCELLABLE
        assert claim_all(store) == []
        assert one_count(store).total == 0

    def test_cancel_unknown(self, store: Store) -> None:
        assert store.cancel(QUEUE, new_job_id()) == CancelOutcome.NOT_CANCELLABLE

    def test_cancel_running_revokes_the_lease(self, store: Store) -> None:
        enqueue_many(store, [capped(1), capped(1)])
        claimed = claim_one(store)
        assert store.cancel(QUEUE, claimed.id) == CancelOutcome.CANCELLING
        assert store.extend_leases(QUEUE, [claimed.lease], lease_ms=LONG_LEASE_MS) == [claimed.id]
        assert claim_all(store) == []  # the slot is held until the worker lets go
        assert store.complete(QUEUE, [claimed.lease]) == [False]
        assert get_info(store, claimed.id).state == JobState.CANCELLED
        assert len(claim_all(store)) == 1  # slot freed

    def test_cancel_running_then_fail_is_stale(self, store: Store) -> None:
        enqueue_one(store, make_job())
        claimed = claim_one(store)
        store.cancel(QUEUE, claimed.id)
        assert store.fail(QUEUE, claimed.lease, error="x", retry_in_ms=0) == FailOutcome.STALE
        assert get_info(store, claimed.id).state == JobState.CANCELLED
        assert claim_all(store) == []

    def test_cancel_running_then_lease_expiry(self, store: Store) -> None:
        enqueue_one(store, make_job(max_attempts=3))
        claimed = claim_one(store, lease_ms=SHORT_LEASE_MS)
        store.cancel(QUEUE, claimed.id)

        def finished() -> bool:
            store.rescue_expired(QUEUE)
            return get_info(store, claimed.id).state == JobState.CANCELLED

        poll(finished, "rescue to finish the cancelled job")
        assert claim_all(store) == []
