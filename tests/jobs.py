"""Job functions for tests, importable by dotted path (``tests.jobs:app``) from subprocesses.

The app reads its store URL and key prefix from CALMQ_URL / CALMQ_KEY_PREFIX, so a test
points a worker subprocess at its own store through the environment. Jobs record what they
did by appending lines to a file named in their arguments: the checker trusts those files,
not the store.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from calmq import App, Backoff, ConcurrencyLimit, Retry, Settings
from calmq.context import current_job

fast = Backoff(base=0.05, cap=0.2, jitter=0.0)


def record(path: str, line: str) -> None:
    """Append one line and flush it to disk before returning."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def lines(path: str | Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def make_app(settings: Settings | None = None) -> App:
    """A fresh App with every test task registered (one per test, or per subprocess)."""
    app = App(settings=settings)

    @app.task(name="append", backoff=fast)
    def append(path: str, value: str) -> None:
        record(path, value)

    @app.task(name="append_async", backoff=fast)
    async def append_async(path: str, value: str) -> None:
        await asyncio.sleep(0)
        record(path, value)

    @app.task(name="flaky", retries=3, backoff=fast)
    def flaky(path: str, failures: int) -> None:
        """Fails ``failures`` times, then succeeds; each attempt is recorded."""
        record(path, "attempt")
        if len(lines(path)) <= failures:
            raise RuntimeError(f"flaky failure {len(lines(path))}")

    @app.task(name="always_fails", retries=2, backoff=fast)
    def always_fails(path: str) -> None:
        record(path, "attempt")
        raise ValueError("this job can never succeed")

    @app.task(name="asks_retry", retries=2)
    def asks_retry(path: str, delay: float) -> None:
        record(path, f"attempt {time.time():.3f}")
        if len(lines(path)) == 1:
            raise Retry(delay=delay, reason="come back later")

    @app.task(name="slow_async", retries=0, timeout=0.3)
    async def slow_async(path: str) -> None:
        record(path, "started")
        await asyncio.sleep(30)
        record(path, "finished")

    @app.task(name="slow_sync", retries=0, timeout=0.3)
    def slow_sync(path: str) -> None:
        record(path, "started")
        time.sleep(3)
        record(path, "finished")

    @app.task(name="exits", retries=0)
    def exits(path: str) -> None:
        record(path, "exits")
        sys.exit(3)

    @app.task(name="exits_async", retries=0, timeout=30)
    async def exits_async(path: str) -> None:
        record(path, "exits_async")
        sys.exit(4)

    @app.task(name="raises_cancelled", retries=0)
    def raises_cancelled(path: str) -> None:
        record(path, "raises_cancelled")
        raise asyncio.CancelledError("from the job")

    @app.task(name="raises_cancelled_async", retries=0)
    async def raises_cancelled_async(path: str) -> None:
        record(path, "raises_cancelled_async")
        raise asyncio.CancelledError("from the job")

    @app.task(name="wait_for_file", retries=3, backoff=fast)
    def wait_for_file(path: str, gate: str, seconds: float) -> None:
        """Records start, waits until ``gate`` exists (at most ``seconds``), records end."""
        record(path, f"start {os.getpid()}")
        deadline = time.monotonic() + seconds
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        record(path, f"end {os.getpid()}")

    @app.task(name="sleepy", retries=3, backoff=fast)
    def sleepy(path: str, seconds: float) -> None:
        """Records start, sleeps, records end (with the pid, to tell workers apart)."""
        record(path, f"start {os.getpid()}")
        time.sleep(seconds)
        record(path, f"end {os.getpid()}")

    @app.task(name="crash", retries=1)
    def crash(path: str) -> None:
        """Kills its own worker process every time: a poison pill."""
        record(path, f"crash {os.getpid()}")
        os._exit(17)

    @app.task(name="cooperative", retries=0)
    def cooperative(path: str) -> None:
        """A long sync job that stops when asked (current_job().cancelled)."""
        job = current_job()
        record(path, f"start {job.id} attempt {job.attempt}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if job.cancelled:
                record(path, "stopped")
                return
            time.sleep(0.01)
        record(path, "ran to the end")

    @app.task(name="long_async", retries=0)
    async def long_async(path: str) -> None:
        record(path, "start")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            record(path, "cancelled")
            raise

    @app.task(name="capped", retries=0, concurrency_limit=ConcurrencyLimit(3))
    def capped(path: str) -> None:
        """At most 3 at once across all workers; appends 'start end pid' (wall clock)."""
        start = time.time()
        time.sleep(0.002)
        with open(path, "a", encoding="utf-8") as f:  # one short line: an atomic append
            f.write(f"{start!r} {time.time()!r} {os.getpid()}\n")

    return app


#: The app worker subprocesses load (``tests.jobs:app``); configured by CALMQ_* variables.
app = make_app()
