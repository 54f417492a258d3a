"""Conformance tests, admin: get_job, listing by state and counts.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

from calmq.job import (
    JobState,
    QueueCounts,
    new_job_id,
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
    kill,
    make_job,
    one_count,
)

__all__ = ["TestAdmin"]


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
