"""Conformance tests, enqueue: ids, batches, delays and the per-queue counts.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

from collections.abc import Sequence

from calmq.job import (
    SCHEMA_VERSION,
    EnqueueOutcome,
    EnqueueResult,
    JobState,
    NewJob,
    QueueCounts,
)
from calmq.stores.base import Store
from calmq.testing.conformance.helpers import (
    QUEUE,
    TASK,
    claim_all,
    claim_one,
    enqueue_many,
    enqueue_one,
    get_info,
    make_job,
    one_count,
)

__all__ = ["TestEnqueue"]


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

    def test_chunks_reported_in_order_with_their_results(self, store: Store) -> None:
        """``enqueue_chunks``: ``stored(chunk, results)`` once per chunk, in order, each job
        stored once (a job already there is reported, not stored again)."""
        chunks = [[make_job() for _ in range(n)] for n in (3, 1, 250)]
        enqueue_one(store, chunks[1][0])
        reported: list[tuple[Sequence[NewJob], list[EnqueueResult]]] = []
        store.enqueue_chunks(iter(chunks), lambda chunk, results: reported.append((chunk, results)))
        assert [list(chunk) for chunk, _ in reported] == chunks
        results = [r for _, rs in reported for r in rs]
        assert [r.id for r in results] == [job.id for chunk in chunks for job in chunk]
        assert [r.created for r in results].count(False) == 1
        ready = [job.id for job in claim_all(store, limit=1000)]
        assert ready == [chunks[1][0].id] + [job.id for job in chunks[0] + chunks[2]]
        store.enqueue_chunks(iter([]), lambda chunk, results: reported.append((chunk, results)))
        assert len(reported) == 3

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
