"""Redis Cluster, Sentinel, TLS and ACL: URL forms, slot layout, workers, auth and TLS errors.

The conformance suite runs against the same topologies in test_conformance_topologies.py;
failover tests are in test_redis_failover.py (slow).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.cluster import key_slot

from calmq import App
from calmq.errors import ConfigurationError, QueueUnavailable
from calmq.settings import Settings
from calmq.stores import open_store, redact_url
from calmq.stores.base import CAP_CLAIM_WITH_WAIT
from calmq.stores.redis.connection import parse_multi_host_url
from calmq.stores.redis.keys import queue_keys
from calmq.stores.redis.store import RedisStore
from calmq.testing.conformance import make_job
from calmq.worker.worker import Worker, WorkerConfig
from tests.jobs import lines, make_app
from tests.redis_server import RedisServer, unique_prefix
from tests.redis_topologies import (
    RedisClusterProcesses,
    SentinelGroup,
    TlsFiles,
    start_tls_server,
    tls_server,
)
from tests.stores.acl import create_user, documented_commands, documented_rules

LUA_DIR = Path(__file__).resolve().parents[2] / "src" / "calmq" / "stores" / "redis" / "lua"


def queues_on_distinct_primaries(cluster: RedisClusterProcesses, prefix: str) -> list[str]:
    """One queue name per primary of the cluster (found by hashing candidate names)."""
    found: dict[int, str] = {}
    for i in range(1000):
        name = f"q{i}"
        port = cluster.node_for_slot(key_slot(queue_keys(prefix, name).tag.encode())).port
        found.setdefault(port, name)
        if len(found) == len(cluster.primaries()):
            return list(found.values())
    raise AssertionError("could not spread queues over every primary")


# --- URLs -------------------------------------------------------------------------------


def test_multi_host_urls_parse() -> None:
    target = parse_multi_host_url("redis+sentinel://u:p%40ss@h1:26379,h2:26380/mymaster/2")
    assert target.topology == "sentinel"
    assert target.hosts == (("h1", 26379), ("h2", 26380))
    assert (target.service, target.db, target.username, target.password) == (
        "mymaster",
        2,
        "u",
        "p@ss",
    )
    cluster = parse_multi_host_url("rediss+cluster://h1:7000,[::1]:7001?ssl_cert_reqs=none")
    assert cluster.topology == "cluster" and cluster.tls
    assert cluster.hosts == (("h1", 7000), ("::1", 7001))
    assert cluster.options == {"ssl_cert_reqs": "none"}


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:1,h2:2",  # no master name
        "redis+sentinel://h1:1/m/x",  # db not a number
        "redis+cluster://h1:1/3",  # a cluster has db 0 only
        "redis+cluster://h1:1?nope=1",  # unknown option
        "redis+cluster://h1:notaport",
    ],
)
def test_bad_multi_host_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_store(url, Settings(url=url))


def test_passwords_never_shown() -> None:
    for url in (
        "redis+cluster://calmq:s3cret@h1:1,h2:2",
        "redis+sentinel://calmq:s3cret@h1:1,h2:2/m?sentinel_password=s3cret",
        "rediss://calmq:s3cret@h:6380/0",
    ):
        assert "s3cret" not in redact_url(url)
    with pytest.raises(ConfigurationError) as caught:
        open_store("redis+cluster://calmq:s3cret@h1:1/9", Settings())
    assert "s3cret" not in str(caught.value)
    settings = Settings(redis_password="s3cret", redis_sentinel_password="s3cret")
    assert "s3cret" not in repr(settings)


# --- Cluster ----------------------------------------------------------------------------


def test_queue_keys_share_one_slot_and_queues_spread(redis_cluster: RedisClusterProcesses) -> None:
    prefix = unique_prefix("slots")
    for name in ("default", "emails", "a:b", "q-1"):
        keys = queue_keys(prefix, name)
        slots = {key_slot(k.encode()) for k in (*keys.all_keys, keys.job("some-id"))}
        assert len(slots) == 1, (name, slots)
    queues = [f"queue-{i}" for i in range(30)]
    owners = {
        redis_cluster.node_for_slot(key_slot(queue_keys(prefix, q).tag.encode())).port
        for q in queues
    }
    assert len(owners) == 3, "30 queues should land on all 3 shards"
    # And the data really lands there: each primary holds keys of this prefix.
    settings = Settings(url=redis_cluster.url, key_prefix=prefix)
    store = open_store(settings.url, settings)
    try:
        store.enqueue([make_job(q) for q in queues])
        assert sum(c.ready for c in store.counts()) == 30
    finally:
        store.close()
    for node in redis_cluster.primaries():
        with redis.Redis(port=node.port) as client:
            assert client.keys(f"{{{prefix}:*"), f"no calmq keys on {node.port}"


def test_wait_wakes_for_a_queue_on_another_shard(redis_cluster: RedisClusterProcesses) -> None:
    prefix = unique_prefix("wait")
    queues = queues_on_distinct_primaries(redis_cluster, prefix)
    settings = Settings(url=redis_cluster.url, key_prefix=prefix)
    store = open_store(settings.url, settings)
    try:
        # The wait fans out over shards, so a claim cannot ride along with it.
        assert CAP_CLAIM_WITH_WAIT not in store.capabilities
        assert store.wait_for_work(queues, 0.2) is False
        for target in (queues[-1], queues[0]):
            timer = threading.Timer(0.2, lambda t=target: store.enqueue([make_job(t)]))  # type: ignore[misc]
            started = time.monotonic()
            timer.start()
            try:
                assert store.wait_for_work(queues, 20.0) is True
            finally:
                timer.join(10)
            assert time.monotonic() - started < 5.0
            assert len(store.claim(target, limit=10, lease_ms=10_000).jobs) == 1
    finally:
        store.close()


def test_worker_serves_queues_on_every_shard(
    redis_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    prefix = unique_prefix("worker")
    queues = queues_on_distinct_primaries(redis_cluster, prefix)
    app: App = make_app(Settings(url=redis_cluster.url, key_prefix=prefix))
    out = tmp_path / "out.txt"
    try:
        task = app.get_task("append")
        expected = []
        for queue in queues:
            for i in range(10):
                task.options(queue=queue).enqueue(str(out), f"{queue}-{i}")
                expected.append(f"{queue}-{i}")
        worker = Worker(app, WorkerConfig(queues=queues, burst=True, lease=5, max_idle_wait=0.05))
        asyncio.run(asyncio.wait_for(worker.run(), timeout=60))
        assert sorted(lines(out)) == sorted(expected)  # each job ran exactly once
        assert all(c.ready == c.running == 0 for c in app.store.counts(queues))
    finally:
        app.close()


def test_cluster_pool_is_bounded(redis_cluster: RedisClusterProcesses) -> None:
    prefix = unique_prefix("bounded")
    settings = Settings(url=redis_cluster.url, key_prefix=prefix, pool_size=1)
    store = open_store(settings.url, settings)
    assert isinstance(store, RedisStore)
    try:
        store.enqueue([make_job("default")])  # builds the client, learns the slots
        cluster = store._conn.cluster
        assert cluster is not None
        slot = key_slot(queue_keys(prefix, "default").tag.encode())
        node = cluster.cluster.nodes_manager.get_node_from_slot(slot)
        pool = node.redis_connection.connection_pool
        held = pool.get_connection()  # the node's only connection, taken by "another caller"
        try:
            started = time.monotonic()
            with pytest.raises(QueueUnavailable) as caught:
                store.enqueue([make_job("default")])
            assert caught.value.reason == "pool_exhausted"
            assert time.monotonic() - started < settings.pool_timeout + 0.5
        finally:
            pool.release(held)
        assert store.enqueue([make_job("default")])[0].created
    finally:
        store.close()


def test_unreachable_cluster_is_queue_unavailable() -> None:
    from tests.redis_server import free_port

    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    settings = Settings(url=url, key_prefix="nowhere")
    store = open_store(url, settings)  # opening contacts nobody
    try:
        with pytest.raises(QueueUnavailable) as caught:
            store.enqueue([make_job()])
        assert caught.value.__cause__ is not None
    finally:
        store.close()


# --- ACL and auth -----------------------------------------------------------------------


def test_documented_acl_covers_every_command_calmq_sends() -> None:
    """Every command a Lua script calls, plus what the client sends itself, is allowed."""
    in_scripts = set()
    for path in LUA_DIR.rglob("*.lua"):  # the scripts and the lib/ helpers they include
        found = re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", path.read_text())
        in_scripts |= {c.lower() for c in found}
    client_side = {"ping", "time", "evalsha", "script|load", "blpop", "sadd", "smembers"}
    client_side |= {"hgetall", "zcard", "zrange", "zrevrange"}
    allowed = documented_commands(documented_rules()["base"])
    missing = (in_scripts | client_side) - allowed
    assert not missing, f"docs/scaling.md ACL lacks: {sorted(missing)}"


def test_wrong_password_names_the_cause_not_the_password(redis_server: RedisServer) -> None:
    prefix = unique_prefix("authfail")
    with redis_server.client() as admin:
        user, _ = create_user(admin, prefix)
    for url in (
        f"redis://{user}:not-the-password@127.0.0.1:{redis_server.port}/0",
        f"redis://nosuchuser:not-the-password@127.0.0.1:{redis_server.port}/0",
    ):
        store = open_store(url, Settings(url=url, key_prefix=prefix))
        try:
            with pytest.raises(QueueUnavailable) as caught:
                store.enqueue([make_job()])
        finally:
            store.close()
        assert caught.value.reason == "auth"
        assert "not-the-password" not in str(caught.value)
        assert "password" in str(caught.value)  # "invalid username-password pair"


def test_password_from_settings(redis_server: RedisServer) -> None:
    prefix = unique_prefix("authsettings")
    with redis_server.client() as admin:
        user, password = create_user(admin, prefix)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    settings = Settings(url=url, key_prefix=prefix, redis_username=user, redis_password=password)
    store = open_store(url, settings)
    try:
        assert store.enqueue([make_job()])[0].created
    finally:
        store.close()


def test_acl_user_cannot_touch_other_keys(redis_server: RedisServer) -> None:
    prefix = unique_prefix("aclkeys")
    with redis_server.client() as admin:
        user, password = create_user(admin, prefix)
    with redis.Redis(port=redis_server.port, username=user, password=password) as client:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.sadd("someone-else:queues", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command("FLUSHALL")


def test_cluster_as_acl_user(redis_cluster: RedisClusterProcesses) -> None:
    prefix = unique_prefix("clusteracl")
    for node in redis_cluster.live_nodes():
        with redis.Redis(port=node.port) as admin:
            user, password = create_user(admin, prefix, cluster=True)
    seeds = redis_cluster.url.split("://", 1)[1]
    url = f"redis+cluster://{user}:{password}@{seeds}"
    store = open_store(url, Settings(url=url, key_prefix=prefix))
    try:
        jobs = [make_job(f"q{i}") for i in range(6)]
        assert all(r.created for r in store.enqueue(jobs))
        claimed = store.claim("q0", limit=5, lease_ms=10_000).jobs
        assert store.complete("q0", [c.lease for c in claimed]) == [True]
        assert store.wait_for_work(["q1", "q2", "q3"], 1.0) is True
        assert sorted(store.queues()) == [f"q{i}" for i in range(6)]
        assert password not in store.display_url
    finally:
        store.close()


def test_sentinel_display_url_and_round_trip(sentinel_group: SentinelGroup) -> None:
    prefix = unique_prefix("sentinel")
    settings = Settings(url=sentinel_group.url, key_prefix=prefix)
    store = open_store(settings.url, settings)
    try:
        job = make_job()
        store.enqueue([job])
        claimed = store.claim("default", limit=1, lease_ms=10_000).jobs
        assert [c.id for c in claimed] == [job.id]
        with redis.Redis(port=sentinel_group.master_port()) as primary:
            assert primary.exists(queue_keys(prefix, "default").leases)
    finally:
        store.close()


# --- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_setup(tmp_path_factory: pytest.TempPathFactory) -> object:
    directory = tmp_path_factory.mktemp("tls")
    files = TlsFiles(directory).create()
    wrong = TlsFiles(directory, "other").create()
    server = tls_server(files)
    try:
        start_tls_server(server, files)
        yield server, files, wrong
    finally:
        server.cleanup()


def test_tls_round_trip(tls_setup: tuple[RedisServer, TlsFiles, TlsFiles]) -> None:
    server, files, _ = tls_setup
    url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={files.ca_cert}&ssl_cert_reqs=required"
    for settings in (
        Settings(url=url, key_prefix=unique_prefix("tls")),
        Settings(
            url=f"rediss://127.0.0.1:{server.port}/0",
            key_prefix=unique_prefix("tls-settings"),
            redis_tls_ca_certs=str(files.ca_cert),
        ),
    ):
        store = open_store(settings.url, settings)
        try:
            job = make_job()
            assert store.enqueue([job])[0].created
            assert store.wait_for_work(["default"], 1.0) is True
            claimed = store.claim("default", limit=1, lease_ms=10_000).jobs
            assert [c.id for c in claimed] == [job.id]
            assert store.complete("default", [claimed[0].lease]) == [True]
        finally:
            store.close()


def test_tls_wrong_ca_is_a_clear_error(tls_setup: tuple[RedisServer, TlsFiles, TlsFiles]) -> None:
    server, _, wrong = tls_setup
    url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={wrong.ca_cert}"
    store = open_store(url, Settings(url=url, key_prefix=unique_prefix("tlswrong")))
    try:
        with pytest.raises(QueueUnavailable) as caught:
            store.enqueue([make_job()])
    finally:
        store.close()
    assert caught.value.reason == "tls"
    assert "certificate verify failed" in str(caught.value).lower()


def test_tls_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    for url in (
        f"rediss://127.0.0.1:6390/0?ssl_ca_certs={missing}",
        f"rediss+cluster://127.0.0.1:7000?ssl_ca_certs={missing}",
    ):
        with pytest.raises(ConfigurationError, match="does not exist"):
            open_store(url, Settings(url=url))
