"""Helpers for dashboard tests: a uvicorn server on a free loopback port in a thread, and
ways to put jobs into each state on a real store (no mocks)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import uvicorn

from calmq.job import JobState, WorkerInfo
from calmq.stores.base import Store
from tests.redis_server import free_port


class LiveServer:
    """Serves an ASGI app with uvicorn on 127.0.0.1 until :meth:`stop` (lifespan included)."""

    def __init__(self, asgi: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(asgi, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", ws="none")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="dashboard-test", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)


def make_dead(store: Store, queue: str, *, error: str = "ValueError: boom") -> str:
    """Claim the next ready job of ``queue`` and dead-letter it with a traceback."""
    claimed = store.claim(queue, limit=1, lease_ms=30_000).jobs
    assert claimed, f"no ready job in {queue}"
    job = claimed[0]
    trace = f'Traceback (most recent call last):\n  File "jobs.py", line 1\n{error}\n'
    store.fail(queue, job.lease, error=error, traceback=trace, retry_in_ms=None)
    assert store.get_job(queue, job.id).state is JobState.DEAD  # type: ignore[union-attr]
    return job.id


def worker_info(worker_id: str, queues: list[str], **stats: float) -> WorkerInfo:
    """A heartbeat record as a worker would send it."""
    return WorkerInfo(
        id=worker_id, host="web-1", pid=4242, queues=queues, concurrency=16,
        running=[], started_at_ms=int(time.time() * 1000) - 60_000, ttl_ms=60_000,
        versions={"calmq": "0.1.0", "python": "3.11", "store": "sqlite"}, stats=stats,
    )  # fmt: skip


def wait_until(condition: Any, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``condition()`` until it is truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
