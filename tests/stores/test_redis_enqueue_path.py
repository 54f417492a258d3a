"""The lean enqueue path of the Redis store (issue 4): plain jobs of a queue the store has
already seen go through ``Scripts.run_pooled`` and the plain branches of enqueue.lua.

These tests warm each queue first so that path is the one exercised, then check what the
general path guarantees still holds on it: foreign data refused before any write, idempotent
ids (also within one batch), NOSCRIPT recovery, the bounded pool and its gauge, a
connection the server closed. Real redis-server processes; nothing is mocked.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from calmq.errors import ConfigurationError, QueueUnavailable, StoreError
from calmq.job import SCHEMA_VERSION, EnqueueOutcome, JobState, NewJob, QueueOverflow
from calmq.settings import Settings
from calmq.stores.base import Store
from calmq.stores.redis.keys import queue_keys
from calmq.stores.redis.replies import enqueue_args
from calmq.stores.redis.scripts import script_source
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
    # Stored like the general path stores them, as text; fields at their defaults left out
    # (attempt 0, no token, the key's id; priority 0, run_at = enq and version 1 for "a").
    fields = raw.hgetall(queue_keys(key_prefix, Q).job("c"))
    assert fields.keys() == {b"task", b"payload", b"state", b"max_attempts", b"seq", b"enq",
                             b"v", b"priority", b"run_at"}  # fmt: skip
    assert (fields[b"priority"], fields[b"v"], fields[b"state"]) == (b"5", b"1", b"ready")
    assert fields[b"enq"] == fields[b"run_at"]
    plain = raw.hgetall(queue_keys(key_prefix, Q).job("a"))
    assert plain.keys() == fields.keys() - {b"priority", b"run_at", b"v"}
    # Every reader applies the defaults.
    info = warm.get_job(Q, "a")
    assert info is not None
    assert (info.id, info.priority, info.attempt, info.schema_version) == ("a", 0, 0, 1)
    assert info.run_at_ms == info.enqueued_at_ms == int(plain[b"enq"])
    while warm.now_ms() <= info.enqueued_at_ms:  # the claim's clock is past the enqueue's
        time.sleep(0.001)
    claimed = warm.claim(Q, limit=10, lease_ms=10_000).jobs
    assert [j.id for j in claimed] == ["c", "a", "b"]  # priority first, then FIFO
    assert claimed[1].ready_at_ms == claimed[1].enqueued_at_ms  # not the claim's time
    assert claimed[1].schema_version == 1


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


def test_a_first_bulk_enqueue_loads_its_script_in_the_same_round_trip(
    redis_server: RedisServer, raw: redis.Redis, key_prefix: str
) -> None:
    def noscript_replies() -> int:
        stats = raw.info("errorstats").get("errorstat_NOSCRIPT", {"count": 0})
        return int(stats["count"])

    raw.script_flush()
    before = noscript_replies()
    store = RedisStore(redis_server.url, Settings(url=redis_server.url, key_prefix=key_prefix))
    try:
        chunks = [[job(f"c{c}-{i}") for i in range(3)] for c in range(4)]
        stored: list[str] = []
        store.enqueue_chunks(chunks, lambda chunk, results: stored.extend(r.id for r in results))
        assert stored == [j.id for chunk in chunks for j in chunk]
        assert noscript_replies() == before  # no chunk was answered NOSCRIPT and redone
        raw.script_flush()  # a flush later on is still recovered (NOSCRIPT, load, redo)
        store.enqueue_chunks([[job("after-1"), job("after-2")]], lambda chunk, results: None)
        assert noscript_replies() == before + 1
        assert raw.exists(queue_keys(key_prefix, Q).job("after-2"))
    finally:
        store.close()


def test_a_refused_script_load_does_not_stop_a_bulk_enqueue(
    redis_server: RedisServer, raw: redis.Redis, key_prefix: str
) -> None:
    # A user without SCRIPT LOAD (an operator loads the scripts): the preload is refused,
    # the calls run on the loaded script.
    user, password = f"noload-{key_prefix}"[:60], "pw-noload"
    keys = (f"~{key_prefix}:*", f"~{{{key_prefix}:*")
    raw.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", *keys, "+@all",
                        "-script|load")  # fmt: skip
    raw.script_load(script_source("enqueue"))
    url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
    store = RedisStore(url, Settings(url=url, key_prefix=key_prefix))
    try:
        results: list[bool] = []
        chunks = [[job(f"n{c}-{i}") for i in range(2)] for c in range(3)]
        store.enqueue_chunks(chunks, lambda chunk, done: results.extend(r.created for r in done))
        assert results == [True] * 6
    finally:
        store.close()
        raw.execute_command("ACL", "DELUSER", user)


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


# --- the shared form of a batch ------------------------------------------------------------
def _classic_args(jobs: list[NewJob]) -> list[Any]:
    """enqueue.lua's 8-field form of plain jobs, written out (the form the shared one must
    match)."""
    args: list[Any] = [SCHEMA_VERSION]
    for j in jobs:
        run_at = "" if j.run_at_ms is None else j.run_at_ms
        args += [j.id, j.task, j.payload, j.priority, j.max_attempts, j.delay_ms, run_at, ""]
    return args


SHARED_CASES: dict[str, tuple[dict[str, Any], list[str], int | None, QueueOverflow]] = {
    # name -> (fields every job has, ids in the batch, bound on ready jobs, overflow)
    "plain": ({}, ["a", "b", "c"], None, QueueOverflow.REJECT),
    "repeated ids": ({}, ["a", "b", "a", "old"], None, QueueOverflow.REJECT),
    "priority": ({"priority": 7}, ["a", "b"], None, QueueOverflow.REJECT),
    "delayed": ({"delay_ms": 60_000}, ["a", "b"], None, QueueOverflow.REJECT),
    "run at": ({"run_at_ms": 4_000_000_000_000}, ["a", "b"], None, QueueOverflow.REJECT),
    "bounded, reject": ({}, ["a", "b", "c"], 2, QueueOverflow.REJECT),
    "bounded, drop oldest": ({}, ["a", "b", "c"], 2, QueueOverflow.DROP_OLDEST),
    "bounded, priority": ({"priority": -3}, ["a", "b"], 5, QueueOverflow.REJECT),
}


@pytest.mark.parametrize("case", sorted(SHARED_CASES))
def test_the_shared_form_stores_and_answers_what_the_8_field_form_does(
    case: str, redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    fields, ids, bound, overflow = SHARED_CASES[case]
    source = script_source("enqueue")
    outcomes = {}
    for form in ("shared", "classic"):
        queue = f"{form}-q"
        jobs = [NewJob(id=i, queue=queue, task="t", payload=f"p-{i}".encode(), **fields)
                for i in ids]  # fmt: skip
        redis_store.enqueue([NewJob(id="old", queue=queue, task="t", payload=b"{}")])
        if bound is not None:
            redis_store.set_queue_limit(queue, bound, overflow)
        args = enqueue_args(jobs) if form == "shared" else _classic_args(jobs)
        assert (args[1] == "") == (form == "shared")
        keys = queue_keys(key_prefix, queue)
        reply = raw.eval(source, len(keys.for_script("enqueue")), *keys.for_script("enqueue"),
                         *args)  # fmt: skip
        records = {}
        for i in [*ids, "old"]:
            record = raw.hgetall(keys.job(i))
            for volatile in (b"enq", b"run_at", b"fin"):  # times; seq runs alike in each
                record.pop(volatile, None)
            records[i] = record
        ready = raw.zrange(keys.ready, 0, -1, withscores=True)
        scheduled = [m.decode() for m in raw.zrange(keys.scheduled, 0, -1)]
        dead = [m.decode() for m in raw.zrange(keys.dead, 0, -1)]
        outcomes[form] = (reply, records, ready, scheduled, dead)
    assert outcomes["shared"] == outcomes["classic"]


def test_the_shared_form_is_sent_only_for_jobs_that_differ_in_id_and_payload() -> None:
    def two(**second: Any) -> list[Any]:
        fields = {"task": "tests.task", "payload": b"{}", **second}
        return enqueue_args([job("a"), NewJob(id="b", queue=Q, **fields)])

    assert two() == [SCHEMA_VERSION, "", "tests.task", "", 0, 1, 0, "", "", "a", b"{}", "b", b"{}"]
    assert two(payload=b"[1]")[-1] == b"[1]"  # payloads are per job
    throttle = {"throttle_key": "k", "throttle_limit": 1, "throttle_period_ms": 10}
    for different in ({"priority": 1}, {"max_attempts": 3}, {"delay_ms": 5}, {"run_at_ms": 5},
                      {"task": "other"}, {"fairness_key": "t1"}, {"unique_key": "u"},
                      throttle):  # fmt: skip
        assert two(**different)[1:3] == ["a", "tests.task"], different  # the 8-field form
    assert enqueue_args([job("a")])[1] == "a"  # one job: the 8-field form
    with pytest.raises(ConfigurationError, match="must not be empty"):  # '' marks the template
        enqueue_args([job("")])
    with pytest.raises(ConfigurationError, match="must not be empty"):
        enqueue_args([job("a"), job("")])
