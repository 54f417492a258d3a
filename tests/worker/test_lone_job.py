"""A lone job claimed by an idle worker runs on the thread that claimed it (threads pool):
no hand-off to a lane thread. One such job at a time; a stuck one never blocks the claims.

The worker runs in this process, so the jobs can tell which thread ran them and a stuck job
can be released with a ``threading.Event``. The idle wait is set far beyond the deadlines:
only a wake-up from the enqueue ends it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from calmq import App, Settings
from calmq.worker.worker import Worker, WorkerConfig
from tests.jobs import make_app
from tests.worker.helpers import ack_senders, running, until

NEVER = 3600.0


class Jobs:
    """An app with a job that records its thread, and one that hangs until released."""

    def __init__(self, settings: Settings) -> None:
        self.app: App = make_app(settings)
        self.ran_on: dict[str, str] = {}
        self.release = threading.Event()
        self.daemon: bool | None = None

        @self.app.task(name="where", retries=0)
        def where(name: str) -> None:
            self.ran_on[name] = threading.current_thread().name

        @self.app.task(name="stuck", retries=0, timeout=0.3)
        def stuck(name: str) -> None:
            self.ran_on[name] = threading.current_thread().name
            self.daemon = threading.current_thread().daemon
            self.release.wait(60)

        self.where, self.stuck = where, stuck


def run_worker(jobs: Jobs, scenario: Callable[[Worker], Any]) -> Worker:
    """Run a threads-pool worker (idle at first) through ``scenario(worker)``, then stop it;
    the acknowledgements' sending threads are kept in ``worker.senders``."""
    worker = Worker(jobs.app, WorkerConfig(concurrency=4, lease=5, max_idle_wait=NEVER))
    worker.senders = ack_senders(worker)  # type: ignore[attr-defined]

    async def main() -> None:
        async with running(worker):
            # Started and idle: the next claim follows a wake-up.
            await until(lambda: getattr(worker, "fetcher", None) is not None
                        and worker.fetcher.drained)  # fmt: skip
            await scenario(worker)

    asyncio.run(asyncio.wait_for(main(), 90))
    return worker


def test_a_lone_job_runs_and_is_acknowledged_on_the_claiming_thread(
    store_settings: Settings,
) -> None:
    jobs = Jobs(store_settings)

    async def scenario(worker: Worker) -> None:
        await asyncio.to_thread(jobs.where.enqueue, "lone")
        await until(lambda: worker.stats.succeeded == 1)

    try:
        worker = run_worker(jobs, scenario)
    finally:
        jobs.app.close()
    assert jobs.ran_on["lone"].startswith("calmq-wait"), jobs.ran_on
    assert worker.senders == [jobs.ran_on["lone"]]  # type: ignore[attr-defined]
    assert worker.stats.stale_acks == 0


def test_a_stuck_lone_job_leaves_the_claims_and_other_jobs_running(
    store_settings: Settings,
) -> None:
    """The stuck job holds its claiming thread past its timeout: the next wake-up is served
    by the other waiter thread, and its job goes to a lane thread, not to a waiter."""
    jobs = Jobs(store_settings)

    async def scenario(worker: Worker) -> None:
        await asyncio.to_thread(jobs.stuck.enqueue, "stuck")
        await until(lambda: worker.stats.dead == 1)  # timed out, no retries left
        await asyncio.to_thread(jobs.where.enqueue, "after")
        await until(lambda: worker.stats.succeeded == 1)
        jobs.release.set()

    try:
        worker = run_worker(jobs, scenario)
    finally:
        jobs.release.set()
        jobs.app.close()
    assert jobs.ran_on["stuck"].startswith("calmq-wait"), jobs.ran_on
    assert jobs.daemon  # a hung job there never holds up the process's exit
    assert jobs.ran_on["after"].startswith("calmq-job"), jobs.ran_on
    assert worker.jobs.lane is not None and len(worker.jobs.lane._threads) == 4  # not grown
    assert (worker.stats.timed_out, worker.stats.stale_acks) == (1, 0)
