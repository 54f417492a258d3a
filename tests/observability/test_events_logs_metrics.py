"""Events, structured logs and Prometheus metrics, checked after a known workload."""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from calmq import App, JobState, Settings
from calmq.events import Event, EventKind
from calmq.logs import JsonFormatter
from calmq.metrics import Metrics
from tests.jobs import make_app
from tests.redis_server import RedisServer, free_port, unique_prefix

ROOT = Path(__file__).resolve().parents[2]


def run_until_settled(app: App, job_ids: list[str]) -> None:
    """Run a worker until every job is succeeded or dead (retries are scheduled shortly)."""
    import asyncio

    from calmq.worker.worker import Worker, WorkerConfig

    worker = Worker(app, WorkerConfig(lease=5, max_idle_wait=0.05, concurrency=4))

    def settled() -> bool:
        infos = [app.store.get_job("default", i) for i in job_ids]
        return all(i is not None and i.state in (JobState.SUCCEEDED, JobState.DEAD) for i in infos)

    async def main() -> None:
        runner = asyncio.create_task(worker.run())
        async with asyncio.timeout(60):
            while not settled():
                await asyncio.sleep(0.02)
        worker.request_stop()
        await runner

    asyncio.run(main())


def known_workload(app: App, tmp_path: Path) -> list[str]:
    ids = [app.enqueue("append", str(tmp_path / "ok"), str(i)).id for i in range(5)]
    ids.append(app.enqueue("flaky", str(tmp_path / "flaky"), 2).id)  # 2 failures, then ok
    ids.append(app.enqueue("always_fails", str(tmp_path / "bad")).id)  # 3 attempts, dead
    return ids


def test_events_describe_every_step_of_a_known_workload(app: App, tmp_path: Path) -> None:
    seen: list[Event] = []
    app.on_event(seen.append)
    ids = known_workload(app, tmp_path)
    run_until_settled(app, ids)
    kinds = collections.Counter(e.kind for e in seen)
    assert kinds[EventKind.ENQUEUED] == 7
    assert kinds[EventKind.SUCCEEDED] == 6
    assert kinds[EventKind.RETRIED] == 4  # flaky twice, always_fails twice
    assert kinds[EventKind.DEAD] == 1
    assert kinds[EventKind.FAILED] == 5
    assert kinds[EventKind.CLAIMED] == 11  # 5 + 3 + 3 attempts
    dead = next(e for e in seen if e.kind is EventKind.DEAD)
    assert dead.task == "always_fails" and dead.attempt == 3 and dead.max_attempts == 3
    assert dead.error is not None and "never succeed" in dead.error
    claimed = [e for e in seen if e.kind is EventKind.CLAIMED]
    assert all(e.wait_ms is not None and e.wait_ms >= 0 for e in claimed)
    succeeded = [e for e in seen if e.kind is EventKind.SUCCEEDED]
    assert all(e.run_ms is not None and e.run_ms >= 0 for e in succeeded)


def test_a_failing_hook_never_breaks_enqueue_or_jobs(app: App, tmp_path: Path) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("hook bug")

    app.on_event(broken)
    ids = known_workload(app, tmp_path)
    run_until_settled(app, ids)
    assert app.store.get_job("default", ids[0]).state == JobState.SUCCEEDED  # type: ignore[union-attr]


def test_json_logs_one_line_per_outcome_without_arguments(app: App, tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    job_log = logging.getLogger("calmq.jobs")
    job_log.addHandler(handler)
    old_level = job_log.level
    job_log.setLevel(logging.INFO)
    try:
        secret = "sk_live_do_not_log_me"
        ids = [app.enqueue("append", str(tmp_path / "ok"), secret).id]
        ids += known_workload(app, tmp_path)
        run_until_settled(app, ids)
    finally:
        job_log.removeHandler(handler)
        job_log.setLevel(old_level)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_event = collections.Counter(r["event"] for r in records)
    assert by_event["succeeded"] == 7 and by_event["retried"] == 4 and by_event["dead"] == 1
    first = next(r for r in records if r["job_id"] == ids[0])
    assert {"time", "level", "logger", "job_id", "task", "queue", "attempt", "wait_ms",
            "run_ms"} <= set(first)  # fmt: skip
    assert first["task"] == "append" and first["queue"] == "default" and first["attempt"] == 1
    assert secret not in stream.getvalue()


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_metrics_count_outcomes_and_observe_times(app: App, tmp_path: Path) -> None:
    metrics = Metrics()
    app.on_event(metrics.on_event)
    ids = known_workload(app, tmp_path)
    run_until_settled(app, ids)
    jobs = "calmq_jobs_total"
    assert (
        sample(metrics, jobs, {"queue": "default", "task": "append", "outcome": "succeeded"}) == 5
    )
    assert sample(metrics, jobs, {"queue": "default", "task": "flaky", "outcome": "retried"}) == 2
    assert sample(metrics, jobs, {"queue": "default", "task": "always_fails",
                                  "outcome": "dead"}) == 1  # fmt: skip
    assert sample(metrics, jobs, {"queue": "default", "task": "append", "outcome": "enqueued"}) == 5
    waits = sample(metrics, "calmq_job_wait_seconds_count", {"queue": "default", "task": "append"})
    assert waits == 5
    runs = sample(metrics, "calmq_job_run_seconds_count", {"queue": "default", "task": "flaky"})
    assert runs == 3  # two failed attempts and the success
    assert sample(metrics, "calmq_enqueue_seconds_count", {"queue": "default"}) == 7
    text = metrics.exposition().decode()
    assert 'calmq_jobs_total{outcome="dead",queue="default",task="always_fails"} 1.0' in text


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def wait_for_metric(port: int, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = scrape(port)
        except OSError:
            text = ""
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared; last scrape:\n{text[-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_worker_serves_metrics_summed_over_processes(
    processes: int, redis_server: RedisServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = Settings(url=redis_server.url, key_prefix=unique_prefix(request.node.name))
    app = make_app(settings)
    port = free_port()
    env = dict(os.environ, CALMQ_URL=settings.resolved_url(), CALMQ_KEY_PREFIX=settings.key_prefix)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "calmq", "worker", "tests.jobs:app", "--processes",
         str(processes), "--metrics-port", str(port), "--log-json"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for i in range(20):
            app.enqueue("append", str(tmp_path / "out"), str(i))
        wait_for_metric(
            port, 'calmq_jobs_total{outcome="succeeded",queue="default",task="append"} 20.0'
        )
        children = psutil.Process(proc.pid).children()
        assert len(children) == (processes if processes > 1 else 0)
        for child in children:  # forked from the server's process: the port is not theirs
            assert not [c for c in child.net_connections("tcp") if c.laddr.port == port]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        app.close()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert sum(1 for r in lines if r.get("event") == "succeeded") == 20


def test_hooks_for_some_kinds_only_skip_building_the_rest() -> None:
    from calmq.events import Hooks

    hooks, got = Hooks(), []
    assert not hooks.wants(EventKind.SUCCEEDED)
    hooks.subscribe(got.append, {EventKind.DEAD})
    assert hooks.wants(EventKind.DEAD) and not hooks.wants(EventKind.SUCCEEDED)
    hooks.emit(Event(EventKind.SUCCEEDED, "q"))
    hooks.emit(Event(EventKind.DEAD, "q"))
    assert [e.kind for e in got] == [EventKind.DEAD]
    hooks.subscribe(got.append)
    assert hooks.wants(EventKind.SUCCEEDED)
    hooks.unsubscribe(got.append)
    assert not hooks.wants(EventKind.DEAD)


def test_a_worker_logging_at_warning_builds_no_success_events(app: App, tmp_path: Path) -> None:
    from calmq.worker.worker import Worker, WorkerConfig

    job_log = logging.getLogger("calmq.jobs")
    old = job_log.level
    job_log.setLevel(logging.WARNING)
    try:
        worker = Worker(app, WorkerConfig(burst=True, max_idle_wait=0.05))
        import asyncio

        async def main() -> None:
            task = asyncio.create_task(worker.run())
            await asyncio.sleep(0)
            while not hasattr(worker, "_subscribed"):
                await asyncio.sleep(0.001)
            assert not app.events.wants(EventKind.SUCCEEDED)
            assert app.events.wants(EventKind.DEAD)  # trouble is still logged
            await task

        app.enqueue("append", str(tmp_path / "out"), "x")
        asyncio.run(main())
    finally:
        job_log.setLevel(old)
