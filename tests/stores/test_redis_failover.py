"""Failover with real servers: SIGKILL a Cluster primary or the Sentinel primary mid-run.

A producer enqueues one job at a time and, after each acknowledged enqueue, asks ``WAIT 1``
on the same connection (``pool_size=1``, so it *is* the same connection) whether a replica
has the write. A worker (in-process ``Worker``) drains meanwhile. Each job appends its id
to a file. After the kill we count:

* lost: acknowledged *and replicated* jobs that never ran (must be 0);
* lost_unreplicated: acknowledged jobs whose write had not reached the replica when the
  primary died and that never ran (Redis's asynchronous replication window: reported);
* duplicates: jobs that ran more than once (at-least-once: a job whose completion was not
  replicated runs again after its lease expires; reported).

The figures are printed (run with ``-s``) and recorded in docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from calmq import App
from calmq.errors import QueueUnavailable
from calmq.job import new_job_id
from calmq.settings import Settings
from calmq.worker.worker import Worker, WorkerConfig
from tests.jobs import lines, make_app
from tests.redis_server import unique_prefix
from tests.redis_topologies import RedisClusterProcesses, SentinelGroup, poll_until

pytestmark = pytest.mark.slow

QUEUE = "failover"
#: Enqueues before the kill, and successful enqueues wanted after it.
BEFORE_KILL = 150
AFTER_KILL = 50
WAIT_MS = 100


class Producer(threading.Thread):
    """Enqueues jobs one by one, recording for each ack whether ``WAIT 1`` confirmed it."""

    def __init__(self, app: App, out: Path, wait: Callable[[], int]) -> None:
        super().__init__(daemon=True)
        self.app, self.out, self.wait = app, out, wait
        self.acked: dict[str, bool] = {}  # job id -> replicated
        self.failures: list[str] = []
        self.first_failure: float | None = None
        self.last_failure: float | None = None
        self.killed = threading.Event()
        self.ready_to_kill = threading.Event()
        self.after_kill = 0
        self.crashed: BaseException | None = None

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # surfaced by the test, not lost in a thread
            self.crashed = exc
            raise

    def _produce(self) -> None:
        task = self.app.get_task("append")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.after_kill < AFTER_KILL:
            job_id = new_job_id()
            try:
                task.options(job_id=job_id, queue=QUEUE).enqueue(str(self.out), job_id)
            except QueueUnavailable as exc:
                now = time.monotonic()
                self.first_failure = self.first_failure or now
                self.last_failure = now
                self.failures.append(exc.reason)
                time.sleep(0.05)  # pacing a retry loop, not waiting for a condition
                continue
            try:
                replicated = self.wait() >= 1
            except Exception:
                replicated = False
            self.acked[job_id] = replicated
            if self.killed.is_set():
                self.after_kill += 1
            elif len(self.acked) >= BEFORE_KILL:
                self.ready_to_kill.set()


def run_failover(
    tmp_path: Path,
    url: str,
    kill: Callable[[], None],
    wait_for: Callable[[App], Callable[[], int]],
) -> dict[str, Any]:
    prefix = unique_prefix("failover")
    out = tmp_path / "ran.txt"
    producer_app = make_app(Settings(url=url, key_prefix=prefix, pool_size=1))
    worker_app = make_app(Settings(url=url, key_prefix=prefix))
    worker = Worker(worker_app, WorkerConfig(queues=(QUEUE,), lease=2, max_idle_wait=0.1))
    loop_done = threading.Event()

    def work() -> None:
        try:
            asyncio.run(worker.run())
        finally:
            loop_done.set()

    worker_thread = threading.Thread(target=work, daemon=True)
    producer = Producer(producer_app, out, wait_for(producer_app))
    try:
        worker_thread.start()
        producer.start()
        assert producer.ready_to_kill.wait(60), f"producer stuck: {producer.crashed!r}"
        killed_at = time.monotonic()
        kill()
        producer.killed.set()
        producer.join(120)
        assert not producer.is_alive()
        replicated = {j for j, ok in producer.acked.items() if ok}

        def drained() -> bool:
            return replicated <= set(lines(out))

        # Jobs the dead primary had leased come back when their 2 s lease expires.
        with contextlib.suppress(RuntimeError):  # counted as lost below
            poll_until(drained, "replicated jobs to run", 60)
        time.sleep(3)  # let rescued leases (2 s) run once more, to count duplicates
        ran = collections.Counter(lines(out))
    finally:
        worker.request_stop()
        loop_done.wait(30)
        producer_app.close()
        worker_app.close()
    window = (producer.last_failure - producer.first_failure) if producer.first_failure else 0.0
    unreplicated = {j for j, ok in producer.acked.items() if not ok}
    figures = {
        "acked": len(producer.acked),
        "acked_replicated": len(replicated),
        "lost": len(replicated - set(ran)),
        "lost_unreplicated": len(unreplicated - set(ran)),
        "duplicates": sum(1 for n in ran.values() if n > 1),
        "producer_errors": len(producer.failures),
        "error_reasons": sorted(set(producer.failures)),
        "unavailable_window_s": round(window, 2),
        "first_error_after_kill_s": round(producer.first_failure - killed_at, 2)
        if producer.first_failure
        else None,
    }
    print(f"\nfailover figures: {figures}")
    return figures


@pytest.fixture
def private_cluster() -> Iterator[RedisClusterProcesses]:
    cluster = RedisClusterProcesses().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def private_sentinels() -> Iterator[SentinelGroup]:
    group = SentinelGroup().start()
    try:
        yield group
    finally:
        group.cleanup()


def test_cluster_primary_killed(private_cluster: RedisClusterProcesses, tmp_path: Path) -> None:
    from redis.cluster import key_slot

    from calmq.stores.redis.keys import queue_keys

    victim: list[Any] = []

    def wait_for(app: App) -> Callable[[], int]:
        store: Any = app.store
        slot = key_slot(queue_keys(store.settings.key_prefix, QUEUE).tag.encode())
        victim.append(private_cluster.node_for_slot(slot))

        def wait() -> int:
            cluster = store._conn.cluster.cluster
            node = cluster.nodes_manager.get_node_from_slot(slot)
            # pool_size=1: the node's only connection, the one the enqueue just used.
            return int(cluster.get_redis_connection(node).execute_command("WAIT", 1, WAIT_MS))

        return wait

    figures = run_failover(tmp_path, private_cluster.url, lambda: victim[0].kill(), wait_for)
    assert figures["lost"] == 0, figures
    private_cluster.wait_ok()


def test_sentinel_primary_killed(private_sentinels: SentinelGroup, tmp_path: Path) -> None:
    old_port = private_sentinels.master_port()

    def wait_for(app: App) -> Callable[[], int]:
        store: Any = app.store

        def wait() -> int:
            # pool_size=1: the pool's only connection, the one the enqueue just used.
            return int(store._client.execute_command("WAIT", 1, WAIT_MS))

        return wait

    figures = run_failover(
        tmp_path, private_sentinels.url, private_sentinels.primary.kill, wait_for
    )
    assert figures["lost"] == 0, figures
    assert private_sentinels.master_port() != old_port  # the replica was promoted
