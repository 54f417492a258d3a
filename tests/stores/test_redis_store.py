"""Redis-specific tests of ``RedisStore``: raw keys, Lua scripts, fencing, timeouts.

Behaviour shared with the SQLite store is covered by the conformance suite; this file
checks what only Redis has: key layout and hash tags, script headers and the script cache,
foreign data, server-side time, BLPOP wake-ups and the connection discipline that bounds
every producer call when the server is slow or gone. Everything runs against real
redis-server processes; nothing is mocked.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any, TypeVar

import msgspec
import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from calmq.errors import ConfigurationError, QueueUnavailable, StoreError
from calmq.job import EnqueueOutcome, FailOutcome, JobState, Lease, NewJob, WorkerInfo
from calmq.settings import Settings
from calmq.stores import open_store
from calmq.stores.base import CAP_BLOCKING_WAIT, CAP_CLAIM_WITH_WAIT, CAP_MULTI_PROCESS, Store
from calmq.stores.redis import store as store_module
from calmq.stores.redis.keys import (
    derived_key,
    queue_keys,
    queues_key,
    validate_queue_name,
    worker_keys,
)
from calmq.stores.redis.registry import PRUNE_LIMIT
from calmq.stores.redis.scripts import (
    QUEUE_SCRIPTS,
    REGISTRY_SCRIPTS,
    SCRIPT_NAMES,
    declared_key_count,
    script_source,
)
from calmq.stores.redis.store import RedisStore
from tests.redis_server import RedisServer, free_port

T = TypeVar("T")
Q = "default"


# --- helpers ----------------------------------------------------------------------------
def poll(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.01) -> T:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


def job(job_id: str, queue: str = Q, **options: Any) -> NewJob:
    return NewJob(id=job_id, queue=queue, task="tests.task", payload=b"{}", **options)


def as_redis(store: Store) -> RedisStore:
    assert isinstance(store, RedisStore)
    return store


def snapshot(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    """Every queue key under ``prefix`` with a DUMP of its value, to prove nothing changed.

    The queue registry (``<prefix>:queues``) is left out: the store may register a queue
    in the same round trip even when the script then refuses the write.
    """
    keys = client.keys(f"{{{prefix}:*")
    return {key: client.dump(key) for key in sorted(keys)}


@pytest.fixture
def private_server() -> Iterator[RedisServer]:
    """A redis-server of this test alone, so it can be stopped, frozen or misconfigured."""
    server = RedisServer("--enable-debug-command", "yes").start()
    try:
        yield server
    finally:
        server.cleanup()


def fast_settings(server: RedisServer, **changes: Any) -> Settings:
    return Settings(url=server.url, key_prefix="private", **changes)


# --- keys -------------------------------------------------------------------------------
def test_all_keys_of_a_queue_hash_to_one_slot() -> None:
    keys = queue_keys("calmq", "emails")
    names = [*keys.all_keys, keys.tag, keys.job("01j0000000000000000000000a")]
    names += [key for script in QUEUE_SCRIPTS for key in keys.for_script(script)]
    assert {key_slot(name.encode()) for name in names} == {key_slot(b"calmq:emails")}
    assert keys.ready == "{calmq:emails}:ready"
    assert keys.job("x") == "{calmq:emails}:job:x"
    assert queues_key("calmq") == "calmq:queues"


def test_worker_registry_keys_share_their_own_slot() -> None:
    keys = worker_keys("calmq")
    names = [keys.info, keys.seen, *(k for s in REGISTRY_SCRIPTS for k in keys.for_script(s))]
    assert {key_slot(name.encode()) for name in names} == {key_slot(b"calmq:workers")}
    assert (keys.info, keys.seen) == ("{calmq:workers}:info", "{calmq:workers}:seen")
    # A queue named "workers" shares the slot, but none of its keys is info or seen.
    assert not {keys.info, keys.seen} & set(queue_keys("calmq", "workers").all_keys)


def test_derived_keys_of_controls_share_the_queue_slot(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    keys = queue_keys(key_prefix, Q)
    limited = job("j1", unique_key="u", throttle_key="t", throttle_limit=5,
                  throttle_period_ms=60_000, rate_key="r", rate_limit=5, rate_period_ms=1000,
                  concurrency_key="c", concurrency_limit=2, fairness_key="f")  # fmt: skip
    redis_store.enqueue([limited])
    redis_store.claim(Q, limit=1, lease_ms=60_000)
    names = [derived_key(keys.tag, kind, value) for kind, value in
             [("uniq", "u"), ("throttle", "t"), ("rate", "r"), ("conc", "c")]]  # fmt: skip
    assert all(raw.exists(name) for name in names)
    assert raw.get(names[0]) == b"queued:j1"
    assert {key_slot(n.encode()) for n in names} == {key_slot(keys.tag.encode())}
    with pytest.raises(ValueError):
        derived_key(keys.tag, "nope", "x")


def test_foreign_lane_key_is_refused_before_any_write(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    lane = job("j1", fairness_key="f")
    redis_store.enqueue([lane])
    tag = queue_keys(key_prefix, Q).tag
    raw.delete(derived_key(tag, "lane", lane.lane or ""))
    raw.set(derived_key(tag, "lane", lane.lane or ""), "foreign")
    before = snapshot(raw, key_prefix)
    with pytest.raises(StoreError, match="foreign data"):
        redis_store.claim(Q, limit=1, lease_ms=1000)
    assert snapshot(raw, key_prefix) == before


@pytest.mark.parametrize("kind", ["uniq", "lane", "lanes"])
def test_one_job_with_controls_refuses_foreign_keys_before_any_write(
    kind: str, redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    keys = queue_keys(key_prefix, Q)
    new = job("j1", unique_key="u", rate_key="r", rate_limit=5, rate_period_ms=1000)
    redis_store.enqueue([job("first")])  # the queue exists
    name = {"uniq": derived_key(keys.tag, "uniq", "u"),
            "lane": derived_key(keys.tag, "lane", new.lane or ""),
            "lanes": keys.lanes}[kind]  # fmt: skip
    raw.delete(name)
    raw.hset(name, "x", "foreign")
    before = snapshot(raw, key_prefix)
    with pytest.raises(StoreError, match="foreign data"):
        redis_store.enqueue([new])
    assert snapshot(raw, key_prefix) == before


def test_one_job_with_controls_stores_what_a_batch_stores(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    # One job takes the short path of enqueue.lua, a batch the general one: same records.
    keys = queue_keys(key_prefix, Q)

    def limited(job_id: str, key: str = "", **kw: Any) -> NewJob:
        return job(job_id, unique_key=key or f"u-{job_id}", concurrency_key="c",
                   concurrency_limit=2, **kw)  # fmt: skip

    assert redis_store.enqueue([limited("one")])[0].created
    assert all(r.created for r in redis_store.enqueue([limited("b1"), limited("b2")]))
    assert redis_store.enqueue([limited("later", delay_ms=60_000)])[0].state == JobState.SCHEDULED

    def record(job_id: str) -> dict[bytes, bytes]:
        fields = raw.hgetall(keys.job(job_id))
        for volatile in (b"id", b"seq", b"enq", b"run_at", b"uk", b"payload"):
            fields.pop(volatile, None)
        return fields

    assert record("one") == record("b1")
    assert raw.get(derived_key(keys.tag, "uniq", "u-one")) == b"queued:one"
    lane = derived_key(keys.tag, "lane", limited("x").lane or "")
    assert [m.decode() for m in raw.zrange(lane, 0, -1)] == ["one", "b1", "b2"]
    assert raw.zscore(keys.lanes, limited("x").lane or "") is not None
    assert redis_store.enqueue([limited("dup", "u-one")])[0].outcome == (EnqueueOutcome.DUPLICATE)


@pytest.mark.parametrize("bad", ["", "a b", "a{b", "b}", "tab\there", "x" * 201])
def test_bad_queue_names_are_refused(bad: str, redis_store: Store) -> None:
    with pytest.raises(ConfigurationError):
        validate_queue_name(bad)
    with pytest.raises(ConfigurationError):
        redis_store.enqueue([job("a", queue=bad)])


# --- scripts ----------------------------------------------------------------------------
def test_every_lua_file_is_known_and_documented() -> None:
    lua_dir = resources.files("calmq.stores.redis").joinpath("lua")
    # lib/ holds the helpers scripts include (tests/stores/test_lua_includes.py).
    files = {entry.name.removesuffix(".lua") for entry in lua_dir.iterdir() if entry.is_file()}
    assert files == set(SCRIPT_NAMES)
    for name in SCRIPT_NAMES:
        header = script_source(name).split("\n\n", 1)[0]
        assert header.startswith(f"-- {name}.lua: "), name
        assert "-- ARGV[" in script_source(name), name
        assert "-- Returns:" in script_source(name), name
        assert "-- Errors:" in script_source(name), name


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_lua_header_key_count_matches_what_the_store_passes(name: str, redis_store: Store) -> None:
    source = script_source(name)
    declared = declared_key_count(source)
    keys = worker_keys("p") if name in REGISTRY_SCRIPTS else queue_keys("p", "q")
    assert declared == len(keys.for_script(name))
    assert declared == as_redis(redis_store)._scripts.key_count(name)
    # The body uses no KEYS[i] beyond the declared ones.
    body = "\n".join(line for line in source.splitlines() if not line.startswith("--"))
    used = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", body)}
    assert used <= set(range(1, declared + 1))


def test_header_parser_refuses_gaps() -> None:
    assert declared_key_count("-- KEYS[1] a\n-- KEYS[2] b\n") == 2
    with pytest.raises(ValueError):
        declared_key_count("-- KEYS[1] a\n-- KEYS[3] b\n")


def test_scripts_survive_script_flush(redis_store: Store, raw: redis.Redis) -> None:
    redis_store.enqueue([job("a")])
    raw.script_flush()
    assert redis_store.enqueue([job("b")])[0].created
    raw.script_flush()
    # A multi-queue enqueue goes through the pipelined path.
    results = redis_store.enqueue([job("c", queue="other"), job("d")])
    assert [r.created for r in results] == [True, True]
    raw.script_flush()
    assert [j.id for j in redis_store.claim(Q, limit=10, lease_ms=10_000).jobs] == ["a", "b", "d"]


# --- foreign data -----------------------------------------------------------------------
def test_foreign_ready_key_is_refused_without_writes(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    redis_store.enqueue([job("old", delay_ms=60_000)])
    keys = queue_keys(key_prefix, Q)
    raw.set(keys.ready, "not a zset")
    before = snapshot(raw, key_prefix)
    with pytest.raises(StoreError, match=r"calmq: foreign data in \{.*\}:ready"):
        redis_store.enqueue([job("new")])
    with pytest.raises(StoreError, match="foreign data"):
        redis_store.claim(Q, limit=5, lease_ms=1000)
    with pytest.raises(StoreError, match="foreign data"):
        redis_store.promote_due(Q)
    assert snapshot(raw, key_prefix) == before


# Every key a claim writes or must read before writing, as each kind of foreign value, on
# each path: plain (ready jobs only), a due scheduled job to promote, and lanes.
CLAIM_KEYS = ("ready", "scheduled", "leases", "dead", "wake", "token", "lanes", "seq")


@pytest.mark.parametrize("path", ["plain", "due", "lanes"])
@pytest.mark.parametrize("key", CLAIM_KEYS)
@pytest.mark.parametrize("foreign", ["other type", "text"])
def test_claim_refuses_foreign_keys_before_any_write(
    redis_store: Store, raw: redis.Redis, key_prefix: str, path: str, key: str, foreign: str
) -> None:
    keys = queue_keys(key_prefix, Q)
    redis_store.enqueue([job("a"), job("b")])
    if path == "due":
        redis_store.enqueue([job("d", delay_ms=3_600_000)])
        raw.zadd(keys.scheduled, {"d": 0})  # due long ago
    if path == "lanes":
        redis_store.enqueue([job("l", fairness_key="tenant-1")])
    name = getattr(keys, key)
    if key == "seq" and path == "plain":
        return  # a plain claim does not touch seq (covered: test_plain_claim_leaves_seq_alone)
    raw.delete(name)
    if foreign == "other type" and key == "wake":  # wake is the one list
        raw.hset(name, "x", "1")
    elif foreign == "other type":
        raw.rpush(name, "x")
    else:
        raw.set(name, "not a number")
    before = snapshot(raw, key_prefix)
    with pytest.raises(StoreError, match=r"calmq: foreign data in \{.*\}:" + key):
        redis_store.claim(Q, limit=5, lease_ms=10_000)
    assert snapshot(raw, key_prefix) == before


def test_plain_claim_leaves_seq_alone(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    """A claim with nothing to promote and no lanes never reads seq, so foreign data there
    (refused by the next enqueue) does not stop the queue's ready jobs from being served."""
    keys = queue_keys(key_prefix, Q)
    redis_store.enqueue([job("a")])
    raw.set(keys.seq, "not a number")
    assert [j.id for j in redis_store.claim(Q, limit=5, lease_ms=10_000).jobs] == ["a"]
    with pytest.raises(StoreError, match="foreign data"):
        redis_store.enqueue([job("b")])


def test_foreign_job_key_is_refused_by_enqueue(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    raw.set(queue_keys(key_prefix, Q).job("b"), "foreign")
    before = snapshot(raw, key_prefix)
    with pytest.raises(StoreError, match="foreign data"):
        redis_store.enqueue([job("a"), job("b")])
    assert snapshot(raw, key_prefix) == before


def test_ready_member_without_record_is_dead_lettered_and_others_are_served(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    keys = queue_keys(key_prefix, Q)
    redis_store.enqueue([job("a"), job("b")])
    # Lowest scores: claim meets the broken members first.
    raw.zadd(keys.ready, {"ghost": -(10**15), "alien": -(10**15) + 1})
    raw.set(keys.job("alien"), "a foreign string")
    claimed = redis_store.claim(Q, limit=10, lease_ms=10_000)
    assert [j.id for j in claimed.jobs] == ["a", "b"]
    assert set(raw.zrange(keys.dead, 0, -1)) == {b"ghost", b"alien"}
    ghost = redis_store.get_job(Q, "ghost")
    assert ghost is not None
    assert ghost.state is JobState.DEAD
    assert ghost.error == "job record missing or corrupt"
    assert raw.get(keys.job("alien")) == b"a foreign string"  # foreign data left as found
    listed = {j.id: j.error for j in redis_store.list_jobs(Q, JobState.DEAD)}
    assert listed == {"ghost": "job record missing or corrupt", "alien": listed["alien"]}
    assert listed["alien"] == "job record missing or corrupt"


# --- wait_then_claim ----------------------------------------------------------------------
def test_wait_then_claim_after_a_script_flush(redis_store: Store, raw: redis.Redis) -> None:
    redis_store.enqueue([job("a")])
    raw.script_flush()  # the claim sent behind the BLPOP answers NOSCRIPT: claimed again
    result = redis_store.wait_then_claim([Q], 5.0, Q, limit=5, lease_ms=10_000)
    assert [j.id for j in result.jobs] == ["a"]
    assert [j.attempt for j in result.jobs] == [1]


def test_wait_then_claim_refuses_foreign_data_and_its_connection_recovers(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    keys = queue_keys(key_prefix, Q)
    redis_store.enqueue([job("a")])
    raw.set(keys.leases, "foreign")
    before = snapshot(raw, key_prefix)
    with pytest.raises(StoreError, match=r"calmq: foreign data in \{.*\}:leases"):
        redis_store.wait_then_claim([Q], 5.0, Q, limit=5, lease_ms=10_000)
    del before[keys.wake.encode()]  # the BLPOP took the wake-up: the only change
    assert snapshot(raw, key_prefix) == before
    raw.delete(keys.leases)
    result = redis_store.wait_then_claim([Q], 0.2, Q, limit=5, lease_ms=10_000)
    assert [j.id for j in result.jobs] == ["a"]


# --- fencing ----------------------------------------------------------------------------
def test_wrong_token_changes_nothing(redis_store: Store, raw: redis.Redis, key_prefix: str) -> None:
    redis_store.enqueue([job("a", max_attempts=3)])
    claimed = redis_store.claim(Q, limit=1, lease_ms=60_000).jobs[0]
    stale = Lease("a", str(int(claimed.token) + 100))
    before = snapshot(raw, key_prefix)
    assert redis_store.complete(Q, [stale]) == [False]
    assert redis_store.fail(Q, stale, error="x", retry_in_ms=0) is FailOutcome.STALE
    assert redis_store.fail(Q, stale, error="x") is FailOutcome.STALE
    assert redis_store.extend_leases(Q, [stale], lease_ms=1) == ["a"]
    assert redis_store.release(Q, [stale]) == 0
    assert snapshot(raw, key_prefix) == before
    assert redis_store.complete(Q, [claimed.lease]) == [True]


def test_extend_moves_the_deadline_on_the_server_clock(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    redis_store.enqueue([job("a")])
    claimed = redis_store.claim(Q, limit=1, lease_ms=1_000).jobs[0]
    leases = queue_keys(key_prefix, Q).leases
    assert raw.zscore(leases, "a") == claimed.lease_deadline_ms == claimed.claimed_at_ms + 1_000
    before = redis_store.now_ms()
    assert redis_store.extend_leases(Q, [claimed.lease], lease_ms=50_000) == []
    deadline = raw.zscore(leases, "a")
    assert deadline is not None
    assert before + 50_000 <= deadline <= redis_store.now_ms() + 50_000


def test_lease_expiry_and_rescue_use_server_time(redis_store: Store) -> None:
    redis_store.enqueue([job("a", max_attempts=2)])
    first = redis_store.claim(Q, limit=1, lease_ms=50).jobs[0]
    assert redis_store.rescue_expired(Q).requeued == []  # not expired yet (50 ms)
    rescued = poll(lambda: redis_store.rescue_expired(Q).requeued)
    assert rescued == ["a"]
    info = redis_store.get_job(Q, "a")
    assert info is not None
    assert info.state is JobState.READY
    assert info.error is not None
    assert info.error.startswith("lease expired on attempt 1 of 2")
    assert redis_store.complete(Q, [first.lease]) == [False]  # the lost worker is fenced off

    second = redis_store.claim(Q, limit=1, lease_ms=50).jobs[0]
    assert second.attempt == 2
    assert second.token != first.token
    dead = poll(lambda: redis_store.rescue_expired(Q).dead)
    assert dead == ["a"]
    info = redis_store.get_job(Q, "a")
    assert info is not None
    assert info.state is JobState.DEAD
    assert info.error == (
        "lease expired on attempt 2 of 2: the worker was lost (crashed, killed or partitioned)"
    )


def test_rescue_forgets_dead_jobs_after_dead_ttl(
    redis_server: RedisServer, key_prefix: str
) -> None:
    settings = Settings(url=redis_server.url, key_prefix=key_prefix, dead_ttl=0.05)
    store = RedisStore(redis_server.url, settings)
    try:
        store.enqueue([job("a")])
        claimed = store.claim(Q, limit=1, lease_ms=10_000).jobs[0]
        assert store.fail(Q, claimed.lease, error="boom") is FailOutcome.DEAD
        poll(lambda: store.rescue_expired(Q) and store.get_job(Q, "a") is None)
        assert store.counts([Q])[0].dead == 0
    finally:
        store.close()


# --- wake-ups ---------------------------------------------------------------------------
def test_wait_for_work_returns_promptly_after_enqueue_in_another_thread(
    redis_store: Store, raw: redis.Redis
) -> None:
    outcome: list[tuple[bool, float]] = []

    def waiter() -> None:
        started = time.monotonic()
        woke = redis_store.wait_for_work([Q, "other"], 30)
        outcome.append((woke, time.monotonic() - started))

    thread = threading.Thread(target=waiter)
    thread.start()
    # Enqueue only once the BLPOP is really blocked in the server.
    poll(lambda: any(c.get("cmd") == "blpop" for c in raw.client_list()))
    enqueued = time.monotonic()
    redis_store.enqueue([job("a")])
    thread.join(timeout=10)
    assert outcome
    assert outcome[0][0] is True
    assert time.monotonic() - enqueued < 2.0


def test_chained_wake_ups(redis_store: Store, raw: redis.Redis, key_prefix: str) -> None:
    wake = queue_keys(key_prefix, Q).wake
    redis_store.enqueue([job("a"), job("b"), job("c")])
    assert raw.llen(wake) == 1  # one element however many jobs
    assert redis_store.wait_for_work([Q], 1) is True
    assert raw.llen(wake) == 0
    redis_store.claim(Q, limit=1, lease_ms=10_000)
    assert raw.llen(wake) == 1  # ready is not empty: the next idle worker wakes too
    assert redis_store.wait_for_work([Q], 1) is True
    assert len(redis_store.claim(Q, limit=5, lease_ms=10_000).jobs) == 2
    assert raw.llen(wake) == 0
    assert redis_store.wait_for_work([Q], 0.05) is False


def test_wait_for_work_does_not_use_the_producer_pool(
    redis_server: RedisServer, key_prefix: str
) -> None:
    settings = Settings(url=redis_server.url, key_prefix=key_prefix, pool_size=1)
    store = RedisStore(redis_server.url, settings)
    try:
        thread = threading.Thread(target=store.wait_for_work, args=([Q], 30))
        thread.start()
        client = redis_server.client()
        poll(lambda: any(c.get("cmd") == "blpop" for c in client.client_list()))
        client.close()
        started = time.monotonic()
        store.enqueue([job("a")])  # the only pooled connection is free
        assert time.monotonic() - started < settings.enqueue_bound
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        store.close()


def test_wait_for_work_rounds_tiny_timeouts_up(redis_store: Store) -> None:
    started = time.monotonic()
    assert redis_store.wait_for_work([Q], 0) is False  # never BLPOP 0 (= forever)
    assert redis_store.wait_for_work([Q], 0.0001) is False
    assert time.monotonic() - started < 1.0


# --- connection discipline --------------------------------------------------------------
def test_stopped_server_raises_queue_unavailable_fast(private_server: RedisServer) -> None:
    admin = private_server.client()
    admin.config_set("requirepass", "s3cret")  # after start: RedisServer pings without one
    admin.close()
    url = f"redis://:s3cret@127.0.0.1:{private_server.port}/0"
    store = RedisStore(url, fast_settings(private_server))
    try:
        assert "s3cret" not in store.display_url
        assert store.enqueue([job("a")])[0].created
        private_server.stop()
        for _ in range(3):  # fast every time: no retries, no piling up
            started = time.monotonic()
            with pytest.raises(QueueUnavailable) as caught:
                store.enqueue([job("b")])
            assert time.monotonic() - started < 1.0
            assert caught.value.reason == "connection"
            assert isinstance(caught.value.__cause__, redis.RedisError)
            assert "s3cret" not in str(caught.value)
            assert store.display_url in str(caught.value)
        with pytest.raises(QueueUnavailable):
            store.claim(Q, limit=1, lease_ms=1000)
        with pytest.raises(QueueUnavailable):
            store.wait_for_work([Q], 0.1)
    finally:
        store.close()


def test_nothing_listening_raises_queue_unavailable_fast() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = RedisStore(url, Settings(url=url))
    try:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable):
            store.enqueue([job("a")])
        assert time.monotonic() - started < 1.0
    finally:
        store.close()


def test_paused_server_fails_within_bound_without_leaking_connections(
    private_server: RedisServer,
) -> None:
    settings = fast_settings(private_server, pool_size=2)
    store = RedisStore(private_server.url, settings)
    admin = private_server.client()
    try:
        store.enqueue([job("warm")])
        # WRITE mode: scripts block, but the admin connection can still UNPAUSE.
        admin.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
        # Twice the pool size: a leaked connection would surface as "pool_exhausted".
        for i in range(2 * settings.pool_size):
            started = time.monotonic()
            with pytest.raises(QueueUnavailable) as caught:
                store.enqueue([job(f"p{i}")])
            assert time.monotonic() - started < settings.enqueue_bound + 0.1
            assert caught.value.reason == "timeout"
        admin.execute_command("CLIENT", "UNPAUSE")
        # A timed-out enqueue has an unknown outcome: retrying the same id is safe.
        poll(lambda: store.enqueue([job("p0")]))
        assert store.get_job(Q, "p0") is not None
        assert store.enqueue([job("after")])[0].created
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        store.close()


def test_frozen_server_fails_within_bound_and_recovers(private_server: RedisServer) -> None:
    settings = fast_settings(private_server)
    store = RedisStore(private_server.url, settings)
    sleeper = threading.Thread(
        target=lambda: redis.Redis(port=private_server.port, socket_timeout=10).execute_command(
            "DEBUG", "SLEEP", 3
        )
    )
    # No retries, or redis-py would retry the probe's timeouts until the sleep ends.
    probe = redis.Redis(port=private_server.port, socket_timeout=0.1, retry=Retry(NoBackoff(), 0))
    try:
        store.enqueue([job("warm")])
        sleeper.start()

        def frozen() -> bool:
            try:
                probe.ping()
            except redis.TimeoutError:
                return True
            return False

        poll(frozen)
        for name in ("first", "second"):
            started = time.monotonic()
            with pytest.raises(QueueUnavailable) as caught:
                store.enqueue([job(name)])
            assert time.monotonic() - started < settings.enqueue_bound + 0.1
            assert caught.value.reason == "timeout"
        sleeper.join(timeout=10)
        poll(lambda: store.enqueue([job("first")]))
        assert store.counts([Q])[0].ready >= 2
    finally:
        sleeper.join(timeout=10)
        probe.close()
        store.close()


def test_exhausted_pool_raises_after_pool_timeout(private_server: RedisServer) -> None:
    settings = fast_settings(private_server, pool_size=1)
    store = RedisStore(private_server.url, settings)
    held = store._pool.get_connection()  # the only connection, taken by "another caller"
    try:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable) as caught:
            store.enqueue([job("a")])
        assert caught.value.reason == "pool_exhausted"
        assert time.monotonic() - started < settings.pool_timeout + 0.3
    finally:
        store._pool.release(held)
    assert store.enqueue([job("a")])[0].created
    store.close()


def test_refused_writes_raise_queue_unavailable(private_server: RedisServer) -> None:
    store = RedisStore(private_server.url, fast_settings(private_server))
    admin = private_server.client()
    try:
        store.enqueue([job("warm")])
        admin.config_set("maxmemory", 1)
        with pytest.raises(QueueUnavailable) as caught:
            store.enqueue([job("a")])
        assert caught.value.reason == "oom"
        admin.config_set("maxmemory", 0)

        admin.execute_command("REPLICAOF", "127.0.0.1", free_port())
        with pytest.raises(QueueUnavailable) as caught:
            store.enqueue([job("b")])
        assert caught.value.reason == "readonly"
        admin.execute_command("REPLICAOF", "NO", "ONE")

        assert store.enqueue([job("c")])[0].created
    finally:
        admin.config_set("maxmemory", 0)
        admin.execute_command("REPLICAOF", "NO", "ONE")
        admin.close()
        store.close()


def test_max_clients_raises_queue_unavailable(private_server: RedisServer) -> None:
    store = RedisStore(private_server.url, fast_settings(private_server))
    admin = private_server.client()
    try:
        admin.ping()
        admin.config_set("maxclients", 1)  # admin holds the only slot
        with pytest.raises(QueueUnavailable) as caught:
            store.enqueue([job("a")])
        assert caught.value.reason == "max_clients"
    finally:
        admin.config_set("maxclients", 10_000)
        admin.close()
    assert poll(lambda: store.enqueue([job("a")]))[0].created
    store.close()


# --- behaviour (Redis view) -------------------------------------------------------------
def test_open_store_and_properties(redis_settings: Settings) -> None:
    store = open_store(redis_settings.url, redis_settings)
    assert isinstance(store, RedisStore)
    assert isinstance(store, Store)
    assert store.capabilities == frozenset(
        {CAP_BLOCKING_WAIT, CAP_MULTI_PROCESS, CAP_CLAIM_WITH_WAIT}
    )
    store.close()
    store.close()  # idempotent
    with pytest.raises(ConfigurationError):
        RedisStore("redis://host:notaport/0")


def test_priority_then_fifo_order(redis_store: Store, raw: redis.Redis, key_prefix: str) -> None:
    redis_store.enqueue([job("low1", priority=-5), job("mid1"), job("high1", priority=7)])
    redis_store.enqueue([job("mid2"), job("high2", priority=7), job("low2", priority=-5)])
    order = [j.id for j in redis_store.claim(Q, limit=10, lease_ms=10_000).jobs]
    assert order == ["high1", "high2", "mid1", "mid2", "low1", "low2"]
    assert raw.zcard(queue_keys(key_prefix, Q).leases) == 6


def test_enqueue_is_idempotent_and_records_server_time(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    before = redis_store.now_ms()
    first = redis_store.enqueue([job("a"), job("a"), job("s", delay_ms=60_000)])
    after = redis_store.now_ms()
    assert [(r.created, r.state) for r in first] == [
        (True, JobState.READY),
        (False, JobState.READY),
        (True, JobState.SCHEDULED),
    ]
    fields = raw.hgetall(queue_keys(key_prefix, Q).job("a"))
    assert before <= int(fields[b"enq"]) <= after
    assert fields[b"state"] == b"ready"
    assert b"v" not in fields  # version 1 is the hash without one
    claimed = redis_store.claim(Q, limit=5, lease_ms=10_000).jobs
    assert [j.id for j in claimed] == ["a"]
    again = redis_store.enqueue([job("a")])[0]
    assert (again.created, again.state) == (False, JobState.RUNNING)
    redis_store.complete(Q, [claimed[0].lease])
    done = redis_store.enqueue([job("a")])[0]
    assert (done.created, done.state) == (False, JobState.SUCCEEDED)
    # Kept for completed_ttl (60 s) without payload (emptied: reads as none), then gone.
    assert 0 < raw.pttl(queue_keys(key_prefix, Q).job("a")) <= 60_000
    assert raw.hget(queue_keys(key_prefix, Q).job("a"), "payload") == b""
    assert redis_store.get_job(Q, "a").payload == b""  # type: ignore[union-attr]


def test_a_retried_job_that_succeeds_keeps_no_error_or_traceback(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    redis_store.enqueue([job("r")])
    first = redis_store.claim(Q, limit=1, lease_ms=10_000).jobs[0]
    redis_store.fail(Q, first.lease, error="boom", traceback="Traceback ...", retry_in_ms=0)
    again = redis_store.claim(Q, limit=1, lease_ms=10_000).jobs[0]
    assert again.attempt == 2
    assert redis_store.complete(Q, [again.lease]) == [True]
    fields = raw.hgetall(queue_keys(key_prefix, Q).job("r"))
    assert fields[b"state"] == b"succeeded"
    assert b"error" not in fields and b"tb" not in fields
    assert fields[b"payload"] == b""


def test_completed_ttl_zero_deletes_the_record(redis_server: RedisServer, key_prefix: str) -> None:
    settings = Settings(url=redis_server.url, key_prefix=key_prefix, completed_ttl=0)
    store = RedisStore(redis_server.url, settings)
    try:
        store.enqueue([job("a")])
        store.complete(Q, [store.claim(Q, limit=1, lease_ms=1000).jobs[0].lease])
        assert store.get_job(Q, "a") is None
    finally:
        store.close()


def test_multi_queue_enqueue_registers_queues(redis_store: Store, raw: redis.Redis) -> None:
    results = redis_store.enqueue([job("a", queue="q1"), job("b", queue="q2"), job("c", "q1")])
    assert [r.id for r in results] == ["a", "b", "c"]
    assert redis_store.queues() == ["q1", "q2"]
    counts = {c.queue: c.ready for c in redis_store.counts()}
    assert counts == {"q1": 2, "q2": 1}


def test_delayed_job_is_claimed_once_due(redis_store: Store) -> None:
    redis_store.enqueue([job("later", delay_ms=150), job("now")])
    first = redis_store.claim(Q, limit=5, lease_ms=10_000)
    assert [j.id for j in first.jobs] == ["now"]
    assert first.next_due_ms is not None
    assert first.now_ms < first.next_due_ms <= first.now_ms + 150
    late = poll(lambda: redis_store.claim(Q, limit=5, lease_ms=10_000).jobs)
    assert [j.id for j in late] == ["later"]
    assert late[0].ready_at_ms == first.next_due_ms
    assert late[0].claimed_at_ms >= late[0].ready_at_ms


def test_retry_scheduling_then_dead_replay_and_purge(redis_store: Store) -> None:
    redis_store.enqueue([job("a", max_attempts=2), job("b")])
    jobs = {j.id: j for j in redis_store.claim(Q, limit=5, lease_ms=10_000).jobs}
    retry = redis_store.fail(Q, jobs["a"].lease, error="e" * 3000, retry_in_ms=50)
    assert retry is FailOutcome.RETRY_SCHEDULED
    info = redis_store.get_job(Q, "a")
    assert info is not None
    assert info.state is JobState.SCHEDULED
    assert info.error == "e" * 2000  # truncated
    second = poll(lambda: redis_store.claim(Q, limit=5, lease_ms=10_000).jobs)[0]
    assert (second.id, second.attempt) == ("a", 2)
    assert redis_store.fail(Q, second.lease, error="x", traceback="tb") is FailOutcome.DEAD
    assert redis_store.fail(Q, jobs["b"].lease, error="y") is FailOutcome.DEAD
    assert [j.id for j in redis_store.list_jobs(Q, JobState.DEAD)] == ["b", "a"]  # newest first
    assert redis_store.replay_dead(Q, ["a", "missing"]) == 1
    replayed = redis_store.claim(Q, limit=5, lease_ms=10_000).jobs
    assert [(j.id, j.attempt) for j in replayed] == [("a", 1)]
    assert redis_store.purge_dead(Q) == 1
    assert redis_store.get_job(Q, "b") is None
    assert redis_store.counts([Q])[0].dead == 0


def test_replay_and_purge_all_work_in_batches(
    redis_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "ADMIN_BATCH", 2)
    redis_store.enqueue([job(f"j{i}") for i in range(5)])
    for claimed in redis_store.claim(Q, limit=5, lease_ms=10_000).jobs:
        redis_store.fail(Q, claimed.lease, error="boom")
    assert redis_store.replay_dead(Q) == 5
    for claimed in redis_store.claim(Q, limit=5, lease_ms=10_000).jobs:
        redis_store.fail(Q, claimed.lease, error="boom")
    assert redis_store.purge_dead(Q, [f"j{i}" for i in range(3)]) == 3
    assert redis_store.purge_dead(Q) == 2
    assert redis_store.counts([Q])[0].total == 0


def test_release_restores_place_and_attempt(redis_store: Store) -> None:
    redis_store.enqueue([job("a"), job("b"), job("c")])
    first = redis_store.claim(Q, limit=1, lease_ms=10_000).jobs[0]
    assert redis_store.release(Q, [first.lease, Lease("b", "nope")]) == 1
    again = redis_store.claim(Q, limit=3, lease_ms=10_000).jobs
    assert [(j.id, j.attempt) for j in again] == [("a", 1), ("b", 1), ("c", 1)]


def test_list_jobs_orders(redis_store: Store) -> None:
    redis_store.enqueue([job("s2", delay_ms=20_000), job("s1", delay_ms=10_000)])
    redis_store.enqueue([job("r1"), job("r2", priority=1), job("r3")])
    assert [j.id for j in redis_store.list_jobs(Q, JobState.SCHEDULED)] == ["s1", "s2"]
    assert [j.id for j in redis_store.list_jobs(Q, JobState.READY)] == ["r2", "r1", "r3"]
    assert [j.id for j in redis_store.list_jobs(Q, JobState.READY, offset=1, limit=1)] == ["r1"]
    redis_store.claim(Q, limit=1, lease_ms=50_000)
    redis_store.claim(Q, limit=1, lease_ms=5_000)
    assert [j.id for j in redis_store.list_jobs(Q, JobState.RUNNING)] == ["r1", "r2"]
    assert redis_store.list_jobs(Q, JobState.SUCCEEDED) == []


# --- worker registry --------------------------------------------------------------------
def worker(worker_id: str, **changes: Any) -> WorkerInfo:
    return WorkerInfo(id=worker_id, host="h", pid=1, queues=[Q], concurrency=1, **changes)


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_heartbeat_keys_hold_the_record_and_the_server_clock_expiry(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    keys = worker_keys(key_prefix)
    before = server_ms(raw)
    redis_store.heartbeat(worker("w1", ttl_ms=30_000, running=["j1"]))
    after = server_ms(raw)
    expiry = int(raw.zscore(keys.seen, "w1") or 0)
    assert before + 30_000 <= expiry <= after + 30_000
    assert msgspec.json.decode(raw.hget(keys.info, "w1") or b"", type=WorkerInfo).running == ["j1"]
    [listed] = redis_store.workers()
    assert listed.seen_at_ms == expiry - 30_000
    redis_store.forget_worker("w1")
    assert not raw.exists(keys.seen, keys.info)


def test_expired_workers_are_dropped_a_batch_per_call(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    keys = worker_keys(key_prefix)
    stale = {f"gone-{i}": 1 for i in range(2 * PRUNE_LIMIT + 50)}  # expired in 1970
    raw.zadd(keys.seen, stale)
    raw.hset(keys.info, mapping=dict.fromkeys(stale, b"{}"))
    assert redis_store.workers() == []
    assert raw.zcard(keys.seen) == raw.hlen(keys.info) == PRUNE_LIMIT + 50
    redis_store.heartbeat(worker("w1"))  # heartbeats prune too
    assert raw.zcard(keys.seen) == raw.hlen(keys.info) == 50 + 1
    assert [w.id for w in redis_store.workers()] == ["w1"]
    assert raw.zcard(keys.seen) == raw.hlen(keys.info) == 1


def test_foreign_registry_data_is_refused_before_any_write(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    keys = worker_keys(key_prefix)
    raw.hset(keys.info, "old", b"{}")
    raw.set(keys.seen, "foreign")
    before = snapshot(raw, key_prefix)
    for call in (
        lambda: redis_store.heartbeat(worker("w1")),
        redis_store.workers,
        lambda: redis_store.forget_worker("old"),
    ):
        with pytest.raises(StoreError, match="foreign data"):
            call()
    assert snapshot(raw, key_prefix) == before


def test_undecodable_worker_records_are_left_out(
    redis_store: Store, raw: redis.Redis, key_prefix: str
) -> None:
    keys = worker_keys(key_prefix)
    redis_store.heartbeat(worker("w1"))
    far = server_ms(raw) + 60_000
    raw.zadd(keys.seen, {"junk": far, "renamed": far, "missing": far})
    raw.hset(keys.info, mapping={"junk": b"not json", "renamed": msgspec.json.encode(worker("x"))})
    assert [w.id for w in redis_store.workers()] == ["w1"]
