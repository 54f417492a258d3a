"""``calmq demo``: web requests dispatch jobs while a worker drains them, with a summary.

Runs on the embedded SQLite store by default (a fresh file in a temporary folder), or on any
store given with ``--url``. The jobs are in :mod:`calmq.demo.jobs`.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from calmq.events import Event, EventKind
from calmq.quantile import percentile

DEMO_QUEUES = ("sms", "email", "integrations", "documents", "exports")


class Tally:
    """Jobs dispatched by the simulated web tier and finished by the worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enqueued = 0
        self.finished = 0
        self.retried = 0
        self.dead = 0
        self.enqueue_ms: list[float] = []
        self.producer_done = threading.Event()
        self.error: BaseException | None = None

    def all_done(self) -> bool:
        return self.producer_done.is_set() and self.finished >= self.enqueued


def simulate_web_requests(jobs: Any, tally: Tally, requests: int, rate: float) -> None:
    """One thread of web requests; each dispatches the jobs a real request would."""
    rng = random.Random(42)  # noqa: S311 - a reproducible demo, not security
    start = time.monotonic()
    try:
        for n in range(requests):
            pause = start + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            dispatched = dispatch_request(jobs, rng, n, tally)
            with tally.lock:
                tally.enqueued += dispatched
    except BaseException as exc:  # shown in the summary instead of dying silently
        tally.error = exc
    finally:
        tally.producer_done.set()


def dispatch_request(jobs: Any, rng: random.Random, n: int, tally: Tally) -> int:
    """The jobs of one web request; returns how many were enqueued."""
    account = rng.randrange(1, 1000)
    roll = rng.random()
    started = time.perf_counter()
    if roll < 0.35:
        jobs.send_sms.enqueue(f"+3160000{n:04d}", "Your appointment is confirmed")
        count = 1
    elif roll < 0.45:  # a workflow step texts a whole team: one round trip for all
        count = len(jobs.send_sms.enqueue_many(
            [(f"+3161{n:04d}{i}", "Shift swap approved") for i in range(8)]
        ))  # fmt: skip
    elif roll < 0.70:
        jobs.send_email.enqueue(f"user{account}@example.com", "Invoice available")
        count = 1
    elif roll < 0.85:
        jobs.sync_crm.enqueue(account)
        count = 1
    elif roll < 0.95:
        jobs.generate_contract.enqueue(account, "services-agreement")
        count = 1
    else:  # exports are scheduled for a quieter moment
        jobs.export_report.enqueue_in(rng.uniform(0.5, 2.0), account, "invoices")
        count = 1
    tally.enqueue_ms.append((time.perf_counter() - started) * 1000)
    return count


@click.command()
@click.option("--url", default=None, help="Store URL (default: a fresh SQLite file).")
@click.option(
    "--requests", "requests_", default=1500, show_default=True, help="Simulated web requests."
)
@click.option("--rate", default=300.0, show_default=True, help="Web requests per second.")
@click.option("--concurrency", default=64, show_default=True, help="Worker concurrency.")
def demo(url: str | None, requests_: int, rate: float, concurrency: int) -> None:
    """A busy platform's jobs (SMS, e-mail, contracts, CRM, exports) end to end."""
    from rich.console import Console

    console = Console()
    workdir = None
    if url is None and not os.environ.get("CALMQ_URL"):
        workdir = tempfile.mkdtemp(prefix="calmq-demo-")
        url = f"sqlite:///{Path(workdir) / 'demo.sqlite3'}"
    if url:
        os.environ["CALMQ_URL"] = url
    from calmq.demo import jobs

    tally = Tally()
    console.print(
        f"[bold]calmq demo[/] on {jobs.app.store_display_url}: {requests_} web requests"
        f" at {rate:.0f}/s, one worker with concurrency {concurrency}"
    )
    started = time.monotonic()
    stats = run_demo(jobs, tally, requests_, rate, concurrency, console)
    elapsed = time.monotonic() - started
    print_summary(console, tally, stats, elapsed, jobs.app)
    jobs.app.close()
    if tally.error is not None:
        raise click.ClickException(f"the producer failed: {tally.error!r}")


def run_demo(jobs: Any, tally: Tally, requests_: int, rate: float, concurrency: int,
             console: Any) -> Any:  # fmt: skip
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from calmq.worker.worker import Worker, WorkerConfig

    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console)  # fmt: skip
    bar = progress.add_task("jobs done", total=None)
    config = WorkerConfig(queues=DEMO_QUEUES, concurrency=concurrency, lease=10, log_jobs=False,
                          max_idle_wait=0.2, grace=5)  # fmt: skip
    worker: Worker

    def on_event(event: Event) -> None:
        if event.kind not in (EventKind.SUCCEEDED, EventKind.DEAD, EventKind.RETRIED):
            return
        with tally.lock:
            if event.kind in (EventKind.SUCCEEDED, EventKind.DEAD):
                tally.finished += 1
            tally.retried += event.kind is EventKind.RETRIED
            tally.dead += event.kind is EventKind.DEAD
            total = tally.enqueued
        progress.update(bar, completed=tally.finished, total=total)
        if tally.all_done():
            worker.request_stop()

    worker = Worker(jobs.app, config, hooks=[on_event])
    producer = threading.Thread(target=simulate_web_requests,
                                args=(jobs, tally, requests_, rate), daemon=True)  # fmt: skip
    with progress:
        producer.start()
        import asyncio

        async def main() -> None:
            watcher = asyncio.create_task(_stop_when_idle(worker, tally))
            await worker.run()
            watcher.cancel()

        asyncio.run(main())
    producer.join(timeout=5)
    return worker.stats


async def _stop_when_idle(worker: Any, tally: Tally) -> None:
    """Covers the case where the producer finishes after the last job did."""
    import asyncio

    while not tally.all_done():  # noqa: ASYNC110 - the tally changes on other threads
        await asyncio.sleep(0.1)
    worker.request_stop()


def print_summary(console: Any, tally: Tally, stats: Any, elapsed: float, app: Any) -> None:
    from rich.table import Table

    table = Table(title="calmq demo summary", show_header=False)
    waits = list(stats.recent_wait_ms)
    rows = [
        ("store", app.store_display_url),
        ("jobs enqueued", f"{tally.enqueued}"),
        ("jobs finished", f"{tally.finished} ({stats.succeeded} succeeded, {tally.dead} dead)"),
        ("retries", f"{tally.retried}"),
        ("dead letters", f"{tally.dead} (see: calmq dead list --url {app.store_display_url})"),
        ("elapsed", f"{elapsed:.1f} s ({tally.finished / max(elapsed, 1e-9):.0f} jobs/s overall)"),
        ("wait time p50 / p99", f"{percentile(waits, 50):.0f} / "
                                f"{percentile(waits, 99):.0f} ms ({len(waits):,} last jobs)"),
        ("enqueue latency p50 / p99", f"{percentile(tally.enqueue_ms, 50):.2f} / "
                                      f"{percentile(tally.enqueue_ms, 99):.2f} ms"),
        ("lease rescues / stale acks", f"{stats.lease_lost} / {stats.stale_acks}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
