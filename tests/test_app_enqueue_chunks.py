"""``enqueue_many`` in chunks: each store call (1,000 jobs) is sent as chunks the store runs
while the next is built (``ENQUEUE_CHUNK``). These tests use enough jobs to cross chunk and
batch edges and check what callers see: every job stored once and in order, the results
and events, validation before any store call, and errors mid-way. Every store kind; real
redis-server and SQLite files, nothing mocked.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from calmq import App, Call, JobState, PayloadTooLarge, Settings, StoreError
from calmq.app import ENQUEUE_BATCH, ENQUEUE_CHUNK
from calmq.events import Event, EventKind
from calmq.job import EnqueueOutcome
from calmq.stores.redis.keys import queue_keys

# Over two batches, not a multiple of the chunk: full, partial and last chunks all occur.
N = 2 * ENQUEUE_BATCH + ENQUEUE_CHUNK + 37


def noop(x: int) -> None:
    """Never run here."""


@pytest.fixture
def app(store_settings: Settings) -> Iterator[App]:
    application = App(settings=store_settings.replace(max_payload_bytes=200))
    application.task(name="tests.chunks.noop", retries=0)(noop)
    try:
        yield application
    finally:
        application.close()


def record_events(app: App) -> list[Event]:
    seen: list[Event] = []
    app.on_event(seen.append)
    return seen


def ready_ids(app: App) -> list[str]:
    return [info.id for info in app.store.list_jobs("default", JobState.READY, limit=N + 10)]


def test_many_chunks_store_every_job_once_in_order_with_results_and_events(app: App) -> None:
    task = app.get_task("tests.chunks.noop")
    task.enqueue(-1)  # the queue is known from now on: the lean, pipelined path on Redis
    events = record_events(app)
    jobs = task.enqueue_many([(i,) for i in range(N)])
    assert len(jobs) == N and len({job.id for job in jobs}) == N
    assert all(job.created and job.state is JobState.READY for job in jobs)
    assert ready_ids(app)[1:] == [job.id for job in jobs]  # claim order = input order
    assert [e.job_id for e in events] == [job.id for job in jobs]
    assert {e.kind for e in events} == {EventKind.ENQUEUED}
    assert all(e.run_ms is not None and e.run_ms > 0 for e in events)
    # One duration per store call (batch), shared by its jobs' events.
    assert len({e.run_ms for e in events}) == -(-N // ENQUEUE_BATCH)


def test_existing_ids_across_chunks_are_reported_and_left_alone(app: App) -> None:
    task = app.get_task("tests.chunks.noop")
    first = task.enqueue_many([Call((i,), job_id=f"id-{i}") for i in range(0, N, 7)])
    events = record_events(app)
    calls = [Call((i,), job_id=f"id-{i}") for i in range(N)]
    jobs = task.enqueue_many(calls)
    assert [job.id for job in jobs] == [f"id-{i}" for i in range(N)]
    assert [job.created for job in jobs] == [i % 7 != 0 for i in range(N)]
    assert all(jobs[i].outcome is EnqueueOutcome.EXISTS for i in range(0, N, 7))
    kinds = [e.kind for e in events]
    assert kinds == [EventKind.DUPLICATE if i % 7 == 0 else EventKind.ENQUEUED for i in range(N)]
    order = [job.id for job in first] + [f"id-{i}" for i in range(N) if i % 7 != 0]
    assert ready_ids(app) == order


@pytest.mark.parametrize("bad_at", [1, ENQUEUE_CHUNK + 1, N - 1])
def test_an_invalid_call_anywhere_stores_nothing(app: App, bad_at: int) -> None:
    task = app.get_task("tests.chunks.noop")
    events = record_events(app)
    calls = [Call((i,)) for i in range(N)]
    calls[bad_at] = Call(("x" * 500,))  # over max_payload_bytes
    with pytest.raises(PayloadTooLarge):
        task.enqueue_many(calls)
    assert app.store.counts(["default"])[0].ready == 0
    assert events == []


def test_a_chunk_refused_by_the_store_raises_and_the_others_stand(
    store_settings: Settings, app: App
) -> None:
    """Foreign data under one job id fails that chunk's script before any write of it; the
    chunks sent with it are atomic on their own and stored, with their events, and the
    error is raised. Redis only: SQLite applies a whole store call as one transaction."""
    if not store_settings.resolved_url().startswith("redis"):
        pytest.skip("a foreign key can be planted in Redis only")
    task = app.get_task("tests.chunks.noop")
    task.enqueue(-1)  # the queue is known: the lean, pipelined path
    raw = redis.Redis.from_url(store_settings.resolved_url())
    tag = queue_keys(store_settings.key_prefix, "default").tag
    bad = ENQUEUE_CHUNK + 5  # in the second chunk of the first batch
    raw.set(f"{tag}:job:id-{bad}", "foreign")
    events = record_events(app)
    calls = [Call((i,), job_id=f"id-{i}") for i in range(N)]
    with pytest.raises(StoreError, match="foreign data"):
        task.enqueue_many(calls)
    # The later batches were never sent; in the first, all chunks but the failed one.
    failed_chunk = range(ENQUEUE_CHUNK, 2 * ENQUEUE_CHUNK)
    expected = [f"id-{i}" for i in range(ENQUEUE_BATCH) if i not in failed_chunk]
    assert ready_ids(app)[1:] == expected
    assert [e.job_id for e in events] == expected
    assert raw.get(f"{tag}:job:id-{bad}") == b"foreign"
    # The connection was left in step: the next calls work and nothing is in flight.
    raw.delete(f"{tag}:job:id-{bad}")
    again = task.enqueue_many(calls)
    assert sum(job.created for job in again) == N - len(expected)
    assert ready_ids(app)[1:] == expected + [c.job_id for c in calls if c.job_id not in expected]
    assert app.store.connections_in_use() == 0
    raw.close()
