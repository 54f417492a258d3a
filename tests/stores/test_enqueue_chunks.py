"""``Store.enqueue_chunks`` on Redis, the pipelined path's own cases (the conformance suite
checks every store): chunks built lazily while earlier ones are in
flight, NOSCRIPT part-way through, an exception while replies are in flight, a chunk of
another queue, Cluster and Sentinel. Real servers; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import redis

from calmq import App, JobState, Settings
from calmq.job import EnqueueResult, NewJob
from calmq.stores.base import Store
from tests.redis_topologies import RedisClusterProcesses, SentinelGroup

Q = "chunks"


def jobs(prefix: str, n: int, queue: str = Q) -> list[NewJob]:
    return [NewJob(f"{prefix}-{i}", queue, "tests.task", b"{}") for i in range(n)]


class Reported:
    """The ``stored`` callback: what it was given, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Sequence[NewJob], list[EnqueueResult]]] = []

    def __call__(self, chunk: Sequence[NewJob], results: list[EnqueueResult]) -> None:
        self.calls.append((chunk, results))

    def ids(self) -> list[str]:
        return [r.id for _, results in self.calls for r in results]


def ready(store: Store, queue: str = Q) -> list[str]:
    return [info.id for info in store.list_jobs(queue, JobState.READY, limit=10_000)]


@pytest.fixture
def warm(redis_store: Store) -> Store:
    """The Redis store after one enqueue that registered the queue (the lean path next)."""
    assert redis_store.enqueue(jobs("warm", 1))[0].created
    return redis_store


def test_chunks_are_built_while_earlier_ones_are_in_flight(warm: Store) -> None:
    """The lean path takes (builds) every chunk before reading any reply: one round trip."""
    built: list[int] = []
    reported = Reported()

    def lazily() -> Iterator[list[NewJob]]:
        for k in range(4):
            assert not reported.calls  # no reply read yet
            built.append(k)
            yield jobs(f"k{k}", 100)

    warm.enqueue_chunks(lazily(), reported)
    assert built == [0, 1, 2, 3]
    assert ready(warm)[1:] == reported.ids() == [f"k{k}-{i}" for k in range(4) for i in range(100)]


def test_script_flush_part_way_runs_every_chunk_once_in_order(
    warm: Store, raw: redis.Redis
) -> None:
    """NOSCRIPT means the script did not run: those chunks are sent again after SCRIPT LOAD.
    The flush arrives on another connection while chunks are in flight, so which chunks it
    hits varies; the outcome may not."""
    reported = Reported()

    def flushing() -> Iterator[list[NewJob]]:
        for k in range(5):
            yield jobs(f"f{k}", 200)
            if k == 1:
                raw.script_flush()

    warm.enqueue_chunks(flushing(), reported)
    expected = [f"f{k}-{i}" for k in range(5) for i in range(200)]
    assert reported.ids() == expected
    assert all(r.created for _, results in reported.calls for r in results)
    assert ready(warm)[1:] == expected
    raw.script_flush()
    warm.enqueue_chunks(iter([jobs("g", 2), jobs("h", 2)]), reported)  # all NOSCRIPT
    assert ready(warm)[-4:] == ["g-0", "g-1", "h-0", "h-1"]


def test_an_exception_while_replies_are_in_flight_leaves_no_stale_reply(warm: Store) -> None:
    def explode(chunk: Sequence[NewJob], results: list[EnqueueResult]) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        warm.enqueue_chunks(iter([jobs("x", 10), jobs("y", 10), jobs("z", 10)]), explode)
    assert warm.connections_in_use() == 0
    # The next calls read their own replies, not the three left unread above.
    assert [r.id for r in warm.enqueue(jobs("next", 2))] == ["next-0", "next-1"]
    reported = Reported()
    warm.enqueue_chunks(iter([jobs("x", 10), jobs("w", 3)]), reported)
    assert [r.created for r in reported.calls[0][1]] == [False] * 10
    assert [r.created for r in reported.calls[1][1]] == [True] * 3


def test_a_chunk_of_another_queue_goes_the_general_way(warm: Store) -> None:
    reported = Reported()
    chunks = [jobs("p", 5), jobs("o", 5, queue="other"), jobs("q", 5)]
    warm.enqueue_chunks(iter(chunks), reported)
    assert [chunk for chunk, _ in reported.calls] == chunks
    assert ready(warm)[1:] == [job.id for job in chunks[0] + chunks[2]]
    assert ready(warm, "other") == [job.id for job in chunks[1]]
    assert "other" in warm.queues()


def noop(x: int) -> None:
    """Never run here."""


def enqueue_many_everywhere(settings: Settings) -> None:
    app = App(settings=settings)
    task = app.task(name="tests.chunks.noop", retries=0)(noop)
    try:
        task.enqueue(-1)
        made = task.enqueue_many([(i,) for i in range(2_345)])
        assert all(job.created for job in made)
        assert app.store.counts(["default"])[0].ready == 2_346
        listed = app.store.list_jobs("default", JobState.READY, limit=3_000)
        assert [info.id for info in listed][1:] == [job.id for job in made]
    finally:
        app.close()


def test_enqueue_many_on_a_cluster(redis_cluster: RedisClusterProcesses, key_prefix: str) -> None:
    enqueue_many_everywhere(Settings(url=redis_cluster.url, key_prefix=key_prefix))


def test_enqueue_many_through_sentinel(sentinel_group: SentinelGroup, key_prefix: str) -> None:
    enqueue_many_everywhere(Settings(url=sentinel_group.url, key_prefix=key_prefix))
