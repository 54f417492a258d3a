"""Conformance tests, dead letters: listing, replay and purge.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

from calmq.job import (
    JobState,
    NewJob,
    QueueCounts,
    new_job_id,
)
from calmq.stores.base import Store
from calmq.testing.conformance.helpers import (
    QUEUE,
    claim_all,
    claim_one,
    enqueue_many,
    enqueue_one,
    get_info,
    kill,
    make_job,
    one_count,
    wait_store_clock_past,
)

__all__ = ["TestDeadLetters"]


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
