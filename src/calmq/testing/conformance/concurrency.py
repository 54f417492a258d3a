"""Conformance tests, concurrency: exactly-once under racing threads.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

from collections.abc import Callable

from calmq.job import (
    QueueCounts,
)
from calmq.stores.base import Store
from calmq.testing.conformance.helpers import (
    LONG_LEASE_MS,
    QUEUE,
    SHORT_LEASE_MS,
    claim_all,
    enqueue_many,
    make_job,
    one_count,
    run_threads,
    wait_store_clock_past,
)

__all__ = ["TestConcurrency"]


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
