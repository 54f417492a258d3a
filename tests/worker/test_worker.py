"""The worker in this process, against every store: outcomes, retries, timeouts, bad jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from calmq import App, JobState
from calmq.job import NewJob, new_job_id
from calmq.worker.worker import Worker, WorkerConfig
from tests.jobs import lines


def run_burst(app: App, **config: object) -> Worker:
    """Run a burst worker until the queue is idle; fail the test if it takes too long."""
    worker = Worker(app, WorkerConfig(burst=True, lease=5, max_idle_wait=0.05, **config))  # type: ignore[arg-type]
    asyncio.run(asyncio.wait_for(worker.run(), timeout=60))
    return worker


def run_until(
    app: App, done: Callable[[], bool], *, action: Callable[[], object] | None = None,
    lease: float = 5, **config: object,
) -> Worker:  # fmt: skip
    """Run a worker until ``done()`` is true (for jobs with retries scheduled in the future),
    calling ``action()`` once (on a thread) after it starts."""
    worker = Worker(app, WorkerConfig(lease=lease, max_idle_wait=0.05, **config))  # type: ignore[arg-type]

    async def main() -> None:
        runner = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(60):
                if action is not None:
                    await asyncio.to_thread(action)
                while not done():
                    await asyncio.sleep(0.02)
        finally:
            worker.request_stop()
            await runner

    asyncio.run(main())
    return worker


def test_sync_and_async_jobs_run_once_each(app: App, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    for i in range(20):
        app.enqueue("append", str(out), f"sync-{i}")
        app.enqueue("append_async", str(out), f"async-{i}")
    worker = run_burst(app, concurrency=8)
    assert sorted(lines(out)) == sorted(
        [f"sync-{i}" for i in range(20)] + [f"async-{i}" for i in range(20)]
    )
    assert worker.stats.succeeded == 40
    counts = app.store.counts(["default"])[0]
    assert (counts.ready, counts.running, counts.scheduled, counts.dead) == (0, 0, 0, 0)


def test_failed_job_is_retried_until_it_succeeds(app: App, tmp_path: Path) -> None:
    out = tmp_path / "attempts.txt"
    job = app.enqueue("flaky", str(out), 2)
    worker = run_until(
        app, lambda: (info := job.info()) is None or info.state == JobState.SUCCEEDED
    )
    assert lines(out) == ["attempt"] * 3
    assert worker.stats.retried == 2
    assert worker.stats.succeeded == 1


def test_job_out_of_retries_is_dead_lettered_with_error_and_traceback(
    app: App, tmp_path: Path
) -> None:
    out = tmp_path / "attempts.txt"
    job = app.enqueue("always_fails", str(out))
    run_until(app, lambda: (info := job.info()) is not None and info.state == JobState.DEAD)
    assert lines(out) == ["attempt"] * 3  # retries=2: three attempts in all
    dead = app.store.list_jobs("default", JobState.DEAD)
    assert [d.id for d in dead] == [job.id]
    assert dead[0].error is not None and "this job can never succeed" in dead[0].error
    assert dead[0].traceback is not None and "ValueError" in dead[0].traceback
    # Replay: the job runs again with fresh attempts.
    assert app.store.replay_dead("default", [job.id]) == 1
    run_until(app, lambda: (info := job.info()) is not None and info.state == JobState.DEAD)
    assert len(lines(out)) == 6


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_sys_exit_or_a_base_exception_in_a_job_fails_that_job_and_the_worker_goes_on(
    app: App, tmp_path: Path, pool: str
) -> None:
    """``sys.exit()`` (in an async job with a timeout too) and a ``CancelledError`` the job
    raises itself: not a lost thread with the job never reported (its lease kept alive for
    good), not a stopped event loop. Each job is dead-lettered with its error; the next runs."""
    out = tmp_path / "out.txt"
    failing = ["exits", "exits_async", "raises_cancelled", "raises_cancelled_async"]
    jobs: list[Any] = []

    def enqueue() -> None:
        for name in failing:  # each alone on an idle worker (sync ones run where claimed)
            jobs.append(app.enqueue(name, str(out)))
            deadline = time.monotonic() + 30
            while name not in lines(out) and time.monotonic() < deadline:
                time.sleep(0.01)
        jobs.append(app.enqueue("append", str(out), "after"))

    def states() -> list[JobState | None]:
        return [(info := job.info()) and info.state for job in jobs]

    final = [JobState.DEAD] * len(failing) + [JobState.SUCCEEDED]
    worker = run_until(app, lambda: states() == final, action=enqueue, pool=pool)
    assert sorted(lines(out)) == sorted([*failing, "after"])
    errors = sorted(d.error or "" for d in app.store.list_jobs("default", JobState.DEAD))
    assert errors == ["CancelledError: from the job"] * 2 + ["SystemExit: 3", "SystemExit: 4"]
    assert (worker.stats.succeeded, worker.stats.dead, len(worker.jobs)) == (1, 4, 0)


def test_retry_exception_sets_the_delay(app: App, tmp_path: Path) -> None:
    out = tmp_path / "attempts.txt"
    job = app.enqueue("asks_retry", str(out), 0.4)
    run_until(app, lambda: (info := job.info()) is None or info.state == JobState.SUCCEEDED)
    first, second = (float(line.split()[1]) for line in lines(out))
    assert second - first >= 0.35  # the requested delay, measured loosely


def test_async_job_over_its_timeout_is_cancelled_and_failed(app: App, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    job = app.enqueue("slow_async", str(out))
    worker = run_burst(app)
    info = job.info()
    assert info is not None and info.state == JobState.DEAD
    assert info.error is not None and "timeout" in info.error.lower()
    assert lines(out) == ["started"]
    assert worker.stats.timed_out == 1


def test_sync_job_over_its_timeout_is_failed_and_its_thread_abandoned(
    app: App, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    job = app.enqueue("slow_sync", str(out))
    worker = run_burst(app)
    info = job.info()
    assert info is not None and info.state == JobState.DEAD
    assert info.error is not None and "timeout" in info.error.lower()
    assert worker.executor.abandoned_threads == 1


def test_solo_pool_runs_sync_jobs_on_the_loop_thread_with_timeouts(
    app: App, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    for i in range(10):
        app.enqueue("append", str(out), str(i))
    slow = app.enqueue("slow_sync", str(tmp_path / "slow.txt"))
    worker = run_burst(app, concurrency=4, pool="solo")
    assert sorted(lines(out), key=int) == [str(i) for i in range(10)]
    info = slow.info()
    assert info is not None and info.state == JobState.DEAD
    assert info.error is not None and "timeout" in info.error.lower()
    assert lines(tmp_path / "slow.txt") == ["started"]  # interrupted, never finished
    assert worker.executor.abandoned_threads == 0  # nothing left running


def test_solo_run_time_is_the_job_own_not_its_wait_behind_others(app: App, tmp_path: Path) -> None:
    """The solo pool runs a claimed batch one job after another; each job's run time starts
    when it starts, not when the batch arrived (the last of 12 x 50 ms jobs ran 50 ms, not
    600)."""
    from calmq.events import Event, EventKind

    for i in range(12):
        app.enqueue("sleepy", str(tmp_path / f"out{i}.txt"), 0.05)
    runs: list[float] = []

    def keep(event: Event) -> None:
        if event.kind is EventKind.SUCCEEDED and event.run_ms is not None:
            runs.append(event.run_ms)

    app.on_event(keep)
    run_burst(app, concurrency=12, pool="solo")
    assert len(runs) == 12
    assert all(45 <= run < 300 for run in runs), runs  # 600 ms if queueing counted


def test_unknown_task_is_dead_lettered_and_other_jobs_still_run(app: App, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    app.store.enqueue([NewJob(new_job_id(), "default", "no.such.task", b'{"a":[]}')])
    app.enqueue("append", str(out), "fine")
    worker = run_burst(app)
    assert lines(out) == ["fine"]
    dead = app.store.list_jobs("default", JobState.DEAD)
    assert len(dead) == 1 and dead[0].error is not None and "UnknownTask" in dead[0].error
    assert worker.stats.dead == 1


def test_undecodable_payload_is_dead_lettered_with_a_reason(app: App, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    app.store.enqueue([NewJob(new_job_id(), "default", "append", b"\x80not json")])
    app.enqueue("append", str(out), "fine")
    run_burst(app)
    assert lines(out) == ["fine"]
    dead = app.store.list_jobs("default", JobState.DEAD)
    assert len(dead) == 1 and dead[0].error is not None and "SerializationError" in dead[0].error


def test_priorities_run_higher_first_with_one_slot(app: App, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    task = app.get_task("append")
    task.options(priority=0).enqueue(str(out), "low")
    task.options(priority=9).enqueue(str(out), "high")
    task.options(priority=5).enqueue(str(out), "mid")
    run_burst(app, concurrency=1)
    assert lines(out) == ["high", "mid", "low"]


def test_strict_queue_order_serves_the_first_queue_first(app: App, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    task = app.get_task("append")
    for i in range(3):
        task.options(queue="bulk").enqueue(str(out), f"bulk-{i}")
    task.options(queue="urgent").enqueue(str(out), "urgent")
    run_burst(app, concurrency=1, queues=("urgent", "bulk"))
    assert lines(out)[0] == "urgent"
    assert len(lines(out)) == 4


def _wait_for_line(path: Path, prefix: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while not any(line.startswith(prefix) for line in lines(path)):
        assert time.monotonic() < deadline, f"no {prefix!r} in {path}"
        time.sleep(0.01)


@pytest.mark.parametrize("task", ["cooperative", "long_async"])
def test_cancelling_a_running_job_stops_it_and_ends_cancelled(
    app: App, tmp_path: Path, task: str
) -> None:
    from calmq.events import Event, EventKind

    out = tmp_path / "out.txt"
    seen: list[Event] = []
    app.on_event(seen.append)
    job = app.enqueue(task, str(out))

    def cancel_once_started() -> None:
        _wait_for_line(out, "start")
        job.cancel()

    stopped = "stopped" if task == "cooperative" else "cancelled"
    worker = run_until(app, lambda: stopped in lines(out), action=cancel_once_started, lease=1.5)
    info = job.info()
    assert info is not None and info.state == JobState.CANCELLED
    assert "ran to the end" not in lines(out)
    assert any(e.kind is EventKind.CANCELLED and e.job_id == job.id for e in seen)
    assert worker.stats.succeeded == 0


def test_current_job_tells_the_job_about_itself(app: App, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    job = app.enqueue("cooperative", str(out))

    def cancel_soon() -> None:
        _wait_for_line(out, "start")
        job.cancel()

    run_until(app, lambda: "stopped" in lines(out), action=cancel_soon, lease=1.5)
    assert lines(out)[0] == f"start {job.id} attempt 1"


def test_workers_register_and_leave_the_registry(app: App, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def look() -> None:
        import time

        deadline = time.monotonic() + 30
        while not app.store.workers():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        seen.append([w.id for w in app.store.workers()])

    worker = run_until(app, lambda: bool(seen), action=look, lease=1.5, heartbeat_interval=0.2)
    assert seen == [[worker.id]]
    info_before_stop = seen[0]
    assert info_before_stop
    assert app.store.workers() == []  # a clean stop removes the entry at once
