"""Workers in real subprocesses: signals, SIGKILL, SIGSTOP fencing, poison pills, supervisor.

Every wait polls a condition with a generous deadline; nothing relies on a bare sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from calmq import App, JobState, Settings
from tests.freezing import freeze_between_writes
from tests.jobs import lines
from tests.store_fixtures import settings_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(params=["redis", "sqlite-file"])  # stores other processes can share
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """conftest's ``app`` then runs on these stores only."""
    return settings_for(request, tmp_path)


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    return store_settings


class WorkerProcess:
    """``calmq worker tests.jobs:app`` in a subprocess, its output in a log file."""

    def __init__(self, settings: Settings, log: Path, *args: str) -> None:
        env = dict(
            os.environ, CALMQ_URL=settings.resolved_url(), CALMQ_KEY_PREFIX=settings.key_prefix
        )
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "calmq", "worker", "tests.jobs:app", *args],
            cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._out.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(settings: Settings, *args: str) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log", *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def state_of(app: App, job_id: str) -> JobState | None:
    info = app.store.get_job("default", job_id)
    return info.state if info else None


def test_graceful_shutdown_releases_leases_of_jobs_past_the_grace(
    app: App, settings: Settings, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    out, gate = tmp_path / "out.txt", tmp_path / "gate"
    job = app.enqueue("wait_for_file", str(out), str(gate), 60)
    worker = workers(settings, "--grace", "0.2", "--lease", "60")
    wait_until(lambda: len(lines(out)) == 1, what="job start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    # Released at once (not after the 60 s lease), without spending an attempt.
    counts = app.store.counts(["default"])[0]
    assert (counts.ready, counts.running) == (1, 0)
    info = app.store.get_job("default", job.id)
    assert info is not None and info.state == JobState.READY and info.attempt == 0
    assert "stop requested" in worker.output()


def test_graceful_shutdown_lets_a_running_job_finish_within_the_grace(
    app: App, settings: Settings, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    out = tmp_path / "out.txt"
    job = app.enqueue("sleepy", str(out), 0.5)
    worker = workers(settings, "--grace", "30")
    wait_until(lambda: len(lines(out)) == 1, what="job start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert len(lines(out)) == 2
    assert state_of(app, job.id) == JobState.SUCCEEDED


def test_sigkill_mid_job_loses_nothing(
    app: App, settings: Settings, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    out, gate = tmp_path / "out.txt", tmp_path / "gate"
    job = app.enqueue("wait_for_file", str(out), str(gate), 60)
    first = workers(settings, "--lease", "1")
    wait_until(lambda: len(lines(out)) == 1, what="job start")
    first.signal(signal.SIGKILL)
    first.wait()
    gate.touch()
    second = workers(settings, "--lease", "5")
    wait_until(lambda: state_of(app, job.id) == JobState.SUCCEEDED, what="rerun after rescue")
    assert [line.split()[0] for line in lines(out)] == ["start", "start", "end"]
    assert lines(out)[-1] == f"end {second.pid}"


def test_stale_worker_cannot_ack_after_its_lease_was_rescued(
    app: App, settings: Settings, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    out = tmp_path / "out.txt"
    job = app.enqueue("sleepy", str(out), 1.5)
    stale = workers(settings, "--lease", "1")
    wait_until(lambda: len(lines(out)) == 1, what="job start")
    # Frozen past its lease: no extension, no ack.
    freeze_between_writes(stale.proc, settings.resolved_url())
    fresh = workers(settings, "--lease", "10")
    wait_until(lambda: f"end {fresh.pid}" in lines(out), what="rerun by the new owner")
    wait_until(lambda: state_of(app, job.id) == JobState.SUCCEEDED, what="new owner's ack")
    stale.signal(signal.SIGCONT)
    wait_until(
        lambda: "no longer ours" in stale.output() or "was lost" in stale.output(),
        what="the stale worker noticing its lease is gone",
    )
    assert state_of(app, job.id) == JobState.SUCCEEDED
    assert lines(out).count(f"start {stale.pid}") == 1
    assert lines(out).count(f"start {fresh.pid}") == 1


def test_poison_pill_is_dead_lettered_after_its_deliveries(
    app: App, settings: Settings, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    out = tmp_path / "out.txt"
    job = app.enqueue("crash", str(out))  # retries=1: two deliveries at most
    supervisor = workers(settings, "--processes", "2", "--lease", "0.5")
    wait_until(lambda: state_of(app, job.id) == JobState.DEAD, timeout=60, what="dead letter")
    info = app.store.get_job("default", job.id)
    assert info is not None and info.error is not None and "lease expired" in info.error
    assert len(lines(out)) == 2  # crashed twice, then never again
    assert supervisor.proc.poll() is None  # the fleet is still up
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_concurrency_limit_holds_across_four_worker_processes(
    app: App, settings: Settings, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    """Issue 5's proof: 4 worker processes drain 2,000 jobs of a task limited to 3 at once;
    the job bodies' own start/end times never show more than 3 overlapping."""
    out = tmp_path / "capped.txt"
    total = 2000
    for start in range(0, total, 500):
        app.tasks["capped"].enqueue_many([(str(out),) for _ in range(start, start + 500)])
    fleet = [workers(settings, "--concurrency", "4") for _ in range(4)]
    wait_until(lambda: len(lines(out)) == total, timeout=240, what="2,000 capped jobs")
    for worker in fleet:
        worker.signal(signal.SIGTERM)
    for worker in fleet:
        assert worker.wait() == 0
    edges = []
    pids = set()
    for line in lines(out):
        begin, end, pid = line.split()
        edges += [(float(begin), 1), (float(end), -1)]
        pids.add(pid)
    running = highest = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant
        running += step
        highest = max(highest, running)
    print(f"\nconcurrency limit 3, 4 worker processes, {total} jobs: max running {highest}")
    assert 1 <= highest <= 3
    assert len(pids) >= 2  # the work was really shared between processes
    counts = app.store.counts(["default"])[0]
    assert (counts.ready, counts.running, counts.dead) == (0, 0, 0)


def test_stop_signals_during_start_up_reach_every_child(
    settings: Settings, workers: Callable[..., WorkerProcess]
) -> None:
    """A SIGTERM that lands while the supervisor is forking its children must still stop
    each of them (the handler only forwards to children already on its list)."""
    import psutil

    for _ in range(3):
        supervisor = workers(settings, "--processes", "4")
        parent = psutil.Process(supervisor.pid)
        wait_until(lambda: len(parent.children()) >= 1, what="the first child")  # noqa: B023
        children = parent.children()
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait() == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"children left running: {alive}"


def test_supervisor_restarts_a_killed_worker_process(
    app: App, settings: Settings, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    import psutil

    supervisor = workers(settings, "--processes", "2")
    parent = psutil.Process(supervisor.pid)
    wait_until(lambda: len(parent.children()) == 2, what="two children")
    victim = parent.children()[0].pid
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(kids := parent.children()) == 2 and victim not in [k.pid for k in kids],
        what="a replacement child",
    )
    out = tmp_path / "out.txt"
    job = app.enqueue("append", str(out), "after restart")
    wait_until(lambda: state_of(app, job.id) == JobState.SUCCEEDED, what="job on restarted fleet")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def test_burst_worker_exits_when_the_queue_is_empty(
    app: App, settings: Settings, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    out = tmp_path / "out.txt"
    for i in range(30):
        app.enqueue("append", str(out), str(i))
    worker = workers(settings, "--burst", "--concurrency", "4")
    assert worker.wait(timeout=60) == 0
    assert sorted(lines(out), key=int) == [str(i) for i in range(30)]
