"""Acknowledgements: batched while other jobs still run, sent at once for a lone job (by
the lane thread that ran it, in the threads pool).

The linger is set far beyond the tests' deadlines where it must not apply, so a lone job
that waited for it fails the test instead of passing late. Real stores; nothing mocked (the
worker tests wrap the store's ``complete`` to record which thread called it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from calmq import App, JobState, Settings
from calmq.job import ClaimedJob, NewJob, new_job_id
from calmq.stores.base import Store
from calmq.worker import acker as acker_module
from calmq.worker.acker import Acker
from calmq.worker.lease_keeper import InFlight
from calmq.worker.worker import Worker, WorkerConfig
from tests.jobs import lines, make_app
from tests.worker.helpers import ack_senders, running, until

QUEUE = "default"


def claim(store: Store, count: int) -> list[ClaimedJob]:
    ids = [new_job_id() for _ in range(count)]
    store.enqueue([NewJob(id=i, queue=QUEUE, task="t", payload=b"{}") for i in ids])
    jobs = store.claim(QUEUE, limit=count, lease_ms=60_000).jobs
    assert sorted(j.id for j in jobs) == sorted(ids)
    return jobs


class Recorder:
    """The acker's store and loop around it: every complete call and every acked batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[list[str]] = []
        self.acked: list[bool | None] = []
        self.inflight = InFlight()

    def complete(self, queue: str, leases: list[Any]) -> list[bool]:
        self.calls.append([lease.id for lease in leases])
        return self.store.complete(queue, leases)

    async def run_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def on_acked(self, jobs: list[tuple[ClaimedJob, float]], acked: list[bool | None]) -> None:
        self.acked += acked

    def acker(self) -> Acker:
        return Acker(self.complete, self.inflight, self.run_io, self.on_acked)


async def test_a_lone_job_is_acknowledged_without_the_linger(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acker_module, "ACK_LINGER", 3600.0)
    recorder = Recorder(store)
    (job,) = claim(store, 1)
    recorder.inflight.add(job)
    acker = recorder.acker()
    task = asyncio.create_task(acker.run_forever())
    try:
        acker.add(job, 1.0)
        await until(lambda: recorder.acked == [True])
        assert recorder.calls == [[job.id]] and len(recorder.inflight) == 0
    finally:
        task.cancel()


async def test_acknowledgements_gather_while_other_jobs_run(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acker_module, "ACK_LINGER", 0.5)
    recorder = Recorder(store)
    first, second, third = claim(store, 3)
    recorder.inflight.add(first, second, third)
    acker = recorder.acker()
    task = asyncio.create_task(acker.run_forever())
    try:
        acker.add(first, 1.0)  # two others still run: it waits for the linger...
        acker.add(second, 1.0)  # ...and this one joins it
        await until(lambda: len(recorder.acked) == 2)
        assert recorder.calls == [[first.id, second.id]]
        acker.add(third, 1.0)  # the last one running: sent at once
        await until(lambda: len(recorder.acked) == 3)
        assert recorder.calls[1:] == [[third.id]] and recorder.acked == [True] * 3
    finally:
        task.cancel()


# --- through a worker: who sends the acknowledgement ----------------------------------------
def run_recording_threads(app: App, done: Callable[[], bool]) -> tuple[Worker, list[str]]:
    """Run a threads-pool worker until ``done()``; the names of the threads that sent each
    acknowledgement (the worker's own store, instrumented: it still does the work)."""
    worker = Worker(app, WorkerConfig(concurrency=4, lease=5, max_idle_wait=0.05))
    senders = ack_senders(worker)

    async def main() -> None:
        async with running(worker):
            await until(done, 30.0)

    asyncio.run(asyncio.wait_for(main(), 60))
    return worker, senders


def test_a_lone_sync_job_is_acknowledged_by_the_thread_that_ran_it(
    store_settings: Settings, tmp_path: Path
) -> None:
    app = make_app(store_settings)
    out = tmp_path / "out.txt"
    try:
        job = app.enqueue("append", str(out), "one")
        worker, senders = run_recording_threads(app, lambda: len(lines(out)) == 1 and (
            (info := app.store.get_job("default", job.id)) is not None
            and info.state is JobState.SUCCEEDED))  # fmt: skip
        assert len(senders) == 1 and senders[0].startswith("calmq-job"), senders
        assert (worker.stats.succeeded, worker.stats.stale_acks) == (1, 0)
    finally:
        app.close()


def test_jobs_that_end_together_are_acknowledged_in_batches(
    store_settings: Settings, tmp_path: Path
) -> None:
    app = make_app(store_settings)
    out, gate = tmp_path / "out.txt", tmp_path / "gate"
    try:
        for _ in range(3):
            app.enqueue("wait_for_file", str(out), str(gate), 30.0)

        def all_started_then_open() -> bool:
            if sum(line.startswith("start") for line in lines(out)) == 3:
                gate.touch()
            return sum(line.startswith("end") for line in lines(out)) == 3

        worker, senders = run_recording_threads(
            app, lambda: all_started_then_open() and worker_done(app)
        )
        # The first to end saw the others running: its acknowledgement waited for company on
        # the acknowledgement thread. Every job was acknowledged once.
        assert "calmq-ack" in {name.rsplit("_", 1)[0] for name in senders}, senders
        assert len(senders) <= 3
        assert (worker.stats.succeeded, worker.stats.stale_acks) == (3, 0)
    finally:
        app.close()


def worker_done(app: App) -> bool:
    """No job of the queue holds a lease: every one was acknowledged."""
    counts = app.store.counts(["default"])
    return not counts or counts[0].running == 0


def test_a_worker_cancelled_from_outside_stops_with_acknowledgements_pending(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every task of the loop cancelled at once (what ``asyncio.run`` does when something
    escapes it): the stop does not wait for an acknowledger that is gone. The job whose
    acknowledgement was pending keeps its lease until the worker releases it, and runs
    again (at least once)."""
    monkeypatch.setattr(acker_module, "ACK_LINGER", 3600.0)  # pending while the other runs
    out, gate = tmp_path / "out.txt", tmp_path / "gate"
    worker = Worker(app, WorkerConfig(concurrency=4, lease=5, grace=0.5, max_idle_wait=0.05))

    async def main() -> None:
        runner = asyncio.create_task(worker.run())
        await asyncio.to_thread(app.enqueue, "wait_for_file", str(out), str(gate), 30.0)
        await until(lambda: any(line.startswith("start") for line in lines(out)))
        await asyncio.to_thread(app.enqueue, "append", str(out), "quick")
        await until(lambda: "quick" in lines(out) and len(worker.acker.pending) == 1)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(runner, 30)

    try:
        asyncio.run(main())
    finally:
        gate.touch()
    counts = app.store.counts(["default"])[0]
    assert (counts.running, counts.ready) == (0, 2)  # both released: they run again
