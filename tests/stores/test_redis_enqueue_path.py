"""The lean enqueue path of the Redis store (issue 4): plain jobs of a queue the store has
already seen go through ``Scripts.run_pooled`` and the plain branches of enqueue.lua.

These tests warm each queue first so that path is the one exercised, then check what the
general path guarantees still holds on it: foreign data refused before any write, idempotent
ids (also within one batch), NOSCRIPT recovery, the bounded pool and its gauge, a
connection the server closed. Real redis-server processes; nothing is mocked.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from calmq.errors import QueueUnavailable, StoreError
from calmq.job import EnqueueOutcome, JobState, NewJob
from calmq.settings import Settings
from calmq.stores.base import Store
from calmq.stores.redis.keys import queue_keys
from calmq.stores.redis.store import RedisStore
from tests.redis_server import RedisServer

Q = "lean"


def job(job_id: str, **options: Any) -> NewJob:
    return NewJob(id=job_id, queue=Q, task="tests.task", payload=b"{}", **options)


def snapshot(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    """Every key of the queue with a DUMP of its value, to prove nothing changed."""
    return {key: client.dump(key) for key in sorted(client.keys(f"{{{prefix}:*"))}


@pytest.fixture
def warm(redis_store: Store) -> Store:
    """The store, after one enqueue that registered the queue (the next ones are lean)."""
    assert redis_store.enqueue([job("warm", delay_ms=600_000)])[0].created
    return redis_store


# --- foreign data -------------------------------------------------------------------------
FOREIGN_CASES = {
    # key attribute of QueueKeys -> how the foreign value is written
    "seq": lambda r, k: r.set(k, "not a number"),
    "wake": lambda r, k: r.set(k, "a string"),
    "config": lambda r, k: r.rpush(k, "a list"),
    "ready": lambda r, k: r.hset(k, "a", "hash"),
}


@pytest.mark.parametrize("batch", [1, 3], ids=["one", "batch"])
@pytest.mark.parametrize("name", sorted(FOREIGN_CASES))
def test_foreign_queue_keys_are_refused_before_any_write(
    name: str, batch: int, warm: Store, raw: redis.Redis, key_prefix: str
) -> None:
    key = getattr(queue_keys(key_prefix, Q), name)
    raw.delete(key)
    FOREIGN_CASES[name](raw, key)
    before = snapshot(raw, key_prefix)
    with pytest.raises(StoreError, match=rf"calmq: foreign data in \{{.*\}}:{name}"):
        warm.enqueue([job(f"j{i}") for i in range(batch)])
    assert snapshot(raw, key_prefix) == before


@pytest.mark.parametrize("batch", [1, 3], ids=["one", "batch"])
def test_foreign_scheduled_key_is_refused_for_a_delayed_job(
    batch: int, warm: Store, raw: redis.Redis, key_prefix: str
) -> None:
    keys = queue_keys(key_prefix, Q)
    raw.delete(keys.scheduled)
    raw.set(keys.scheduled, "a string")
    before = snapshot(raw, key_prefix)
    with pytest.raises(StoreError, match=r"calmq: foreign data in \{.*\}:scheduled"):
        warm.enqueue([job(f"d{i}", delay_ms=60_000) for i in range(batch)])
    assert snapshot(raw, key_prefix) == before
    # A job ready now does not touch `scheduled`: it is stored.
    assert warm.enqueue([job("now")])[0].created


@pytest.mark.parametrize("batch", [1, 3], ids=["one", "batch"])
def test_foreign_job_key_is_refused_before_any_write(
    batch: int, warm: Store, raw: redis.Redis, key_prefix: str
) -> None:
    raw.set(queue_keys(key_prefix, Q).job("j0"), "foreign")
    before = snapshot(raw, key_prefix)
    with pytest.raises(StoreError, match=r"calmq: foreign data in \{.*\}:job:j0"):
        warm.enqueue([job(f"j{i}") for i in range(batch)])
    assert snapshot(raw, key_prefix) == before


# --- idempotence and order ----------------------------------------------------------------
def test_existing_and_repeated_ids_in_a_batch(
    warm: Store, raw: redis.Redis, key_prefix: str
) -> None:
    assert warm.enqueue([job("a")])[0].created
    results = warm.enqueue([job("a"), job("b"), job("b"), job("c", priority=5)])
    assert [(r.created, r.state, r.outcome) for r in results] == [
        (False, JobState.READY, EnqueueOutcome.EXISTS),
        (True, JobState.READY, EnqueueOutcome.CREATED),
        (False, JobState.READY, EnqueueOutcome.EXISTS),
        (True, JobState.READY, EnqueueOutcome.CREATED),
    ]
    # Stored like the general path stores them: every field, as text.
    fields = raw.hgetall(queue_keys(key_prefix, Q).job("c"))
    assert {k: fields[k] for k in (b"id", b"priority", b"attempt", b"token", b"v")} == {
        b"id": b"c",
        b"priority": b"5",
        b"attempt": b"0",
        b"token": b"",
        b"v": b"1",
    }
    assert fields[b"enq"] == fields[b"run_at"]
    claimed = warm.claim(Q, limit=10, lease_ms=10_000).jobs
    assert [j.id for j in claimed] == ["c", "a", "b"]  # priority first, then FIFO


def test_one_wake_up_per_idle_queue(warm: Store, raw: redis.Redis, key_prefix: str) -> None:
    wake = queue_keys(key_prefix, Q).wake
    for i in range(3):
        warm.enqueue([job(f"w{i}")])
    warm.enqueue([job("x1"), job("x2")])
    assert raw.llen(wake) == 1


def test_delayed_and_run_at_jobs_are_scheduled(warm: Store, key_prefix: str) -> None:
    now = warm.now_ms()
    results = warm.enqueue([job("later", delay_ms=60_000)])
    results += warm.enqueue([job("at", run_at_ms=now + 60_000), job("past", run_at_ms=now - 1)])
    assert [r.state for r in results] == [JobState.SCHEDULED, JobState.SCHEDULED, JobState.READY]
    info = warm.get_job(Q, "at")
    assert info is not None and info.run_at_ms == now + 60_000


# --- connections --------------------------------------------------------------------------
def test_script_flush_is_recovered_on_the_lean_path(warm: Store, raw: redis.Redis) -> None:
    raw.script_flush()
    assert warm.enqueue([job("a")])[0].created
    raw.script_flush()
    assert [r.created for r in warm.enqueue([job("b"), job("c")])] == [True, True]


def test_lean_path_honours_the_bounded_pool(redis_server: RedisServer, key_prefix: str) -> None:
    settings = Settings(url=redis_server.url, key_prefix=key_prefix, pool_size=1,
                        pool_timeout=0.2)  # fmt: skip
    store = RedisStore(redis_server.url, settings)
    try:
        store.enqueue([job("warm")])
        assert store._pool is not None
        held = store._pool.get_connection()  # the only connection, taken by another caller
        try:
            with pytest.raises(QueueUnavailable) as caught:
                store.enqueue([job("a")])
            assert caught.value.reason == "pool_exhausted"
        finally:
            store._pool.release(held)
        assert store.connections_in_use() == 0
        assert store.enqueue([job("a")])[0].created
        assert store.connections_in_use() == 0
    finally:
        store.close()


def test_a_connection_closed_by_the_server_is_replaced(
    redis_server: RedisServer, key_prefix: str, raw: redis.Redis
) -> None:
    settings = Settings(url=redis_server.url, key_prefix=key_prefix, pool_size=1)
    store = RedisStore(redis_server.url, settings)
    try:
        store.enqueue([job("warm")])
        store.enqueue([job("lean")])
        assert store._pool is not None
        conn = store._pool.get_connection()
        host, port = conn._sock.getsockname()[:2]
        store._pool.release(conn)
        assert raw.client_kill(f"{host}:{port}")
        # redis-py's pool notices the closed socket and reconnects: no error, no retry.
        assert store.enqueue([job("after")])[0].created
    finally:
        store.close()


def test_resp3_connections_take_redis_py_own_pool_path(
    redis_server: RedisServer, key_prefix: str
) -> None:
    """With RESP3, redis-py 8 may leave server pushes waiting on idle connections; the lean
    path must not mistake them for unread replies (it hands such pools to redis-py)."""
    from calmq.stores.redis.connection import _plain

    plain = RedisStore(redis_server.url, Settings(url=redis_server.url, key_prefix=key_prefix))
    try:
        assert plain._pool is not None and _plain(plain._pool)  # RESP2: the lean path
    finally:
        plain.close()
    url = f"{redis_server.url}?protocol=3"
    store = RedisStore(url, Settings(url=url, key_prefix=key_prefix, pool_size=1))
    try:
        assert store._pool is not None and not _plain(store._pool)
        for n in range(3):
            assert store.enqueue([job(f"j{n}")])[0].created
        claimed = store.claim(Q, limit=10, lease_ms=30_000)
        assert sorted(j.id for j in claimed.jobs) == ["j0", "j1", "j2"]
        assert store.connections_in_use() == 0
    finally:
        store.close()
