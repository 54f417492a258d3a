"""The phases of ``calmq bench``: enqueue one by one, enqueue in bulk, drain, latency.

Workers run as real ``calmq worker`` subprocesses, so CPU and memory are measured the way an
operator would see them (the whole process tree). Every phase is bounded in time.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calmq.app import App
from calmq.quantile import percentile
from calmq.settings import Settings

QUEUE = "default"
JOBS_APP = "calmq.benchmark.jobs:app"


@dataclasses.dataclass
class BenchConfig:
    url: str
    jobs: int = 20_000
    concurrency: int = 64
    processes: int = 1
    pool: str = "solo"
    latency_rate: float = 500.0
    latency_seconds: float = 5.0
    timeout: float = 300.0


@dataclasses.dataclass
class BenchResult:
    store: str
    jobs: int
    concurrency: int
    processes: int
    pool: str
    enqueue_per_s: float = 0.0
    bulk_enqueue_per_s: float = 0.0
    drain_per_s: float = 0.0
    cpu_us_per_job: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    worker_rss_mb: float = 0.0
    #: Store round trips (script calls and blocking waits) per job during the drain.
    redis_ops_per_job: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Progress = Callable[[str, int, int], None]


class Bench:
    """Runs the phases against one store with a fresh key prefix."""

    def __init__(self, config: BenchConfig, progress: Progress) -> None:
        self.config = config
        self.progress = progress
        self.prefix = f"calmq-bench-{os.getpid()}-{int(time.time())}"
        self.settings = Settings(url=config.url, key_prefix=self.prefix, pool_size=4,
                                 command_timeout=5.0, pool_timeout=5.0)  # fmt: skip
        self.app = App(settings=self.settings)
        from calmq.benchmark import jobs

        # The same task names on this app (the workers load ``jobs.app`` with this URL and
        # key prefix from the environment), so enqueue goes to the store under test.
        self.noop = self.app.task(name=jobs.noop.name, retries=0)(jobs.noop.fn)
        self.latency_task = self.app.task(name=jobs.latency.name, retries=0)(jobs.latency.fn)
        self.workdir = Path(tempfile.mkdtemp(prefix="calmq-bench-"))

    def run(self) -> BenchResult:
        c = self.config
        result = BenchResult(self.app.store.display_url, c.jobs, c.concurrency, c.processes,
                             c.pool)  # fmt: skip
        try:
            result.enqueue_per_s = self.enqueue_one_by_one()
            result.bulk_enqueue_per_s = self.enqueue_bulk()
            self.drain(result, 2 * c.jobs)
            self.latency(result)
        finally:
            self.app.close()
        return result

    # --- phases ----------------------------------------------------------------------
    def enqueue_one_by_one(self) -> float:
        n = self.config.jobs
        started = time.perf_counter()
        for i in range(n):
            self.noop.enqueue(i)
            if i % 1000 == 0:
                self.progress("enqueue one by one", i, n)
        self.progress("enqueue one by one", n, n)
        return n / (time.perf_counter() - started)

    def enqueue_bulk(self) -> float:
        n = self.config.jobs
        started = time.perf_counter()
        for first in range(0, n, 1000):
            self.noop.enqueue_many([(i,) for i in range(first, min(n, first + 1000))])
            self.progress("enqueue in bulk", min(n, first + 1000), n)
        return n / (time.perf_counter() - started)

    def drain(self, result: BenchResult, total: int) -> None:
        ops_before = self._redis_calls()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        worker = self._start_worker(burst=True)
        started: float | None = None
        peak_rss = 0.0
        deadline = time.monotonic() + self.config.timeout
        while True:
            left = self._waiting()
            if started is None and left < total:
                started = time.perf_counter()
            self.progress("drain", total - left, total)
            peak_rss = max(peak_rss, _tree_rss_mb(worker.pid))
            if left == 0 or worker.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        finished = time.perf_counter()
        _stop(worker)
        if self._waiting():
            raise RuntimeError(
                f"the drain did not finish (worker exit code {worker.returncode}); see"
                f" {self.workdir / 'worker.log'}"
            )
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
        result.drain_per_s = total / max(finished - (started or finished), 1e-9)
        result.cpu_us_per_job = cpu / total * 1e6
        result.worker_rss_mb = peak_rss
        ops_after = self._redis_calls()
        if ops_before is not None and ops_after is not None:
            result.redis_ops_per_job = (ops_after - ops_before) / total

    def latency(self, result: BenchResult) -> None:
        rate, seconds = self.config.latency_rate, self.config.latency_seconds
        worker = self._start_worker(burst=False)
        try:
            self._wait_for_worker_ready()
            n = int(rate * seconds)
            start = time.time() + 0.05
            for i in range(n):
                pause = start + i / rate - time.time()
                if pause > 0:
                    time.sleep(pause)
                self.latency_task.enqueue(time.time())
                if i % 100 == 0:
                    self.progress("latency", i, n)
            self.progress("latency", n, n)
            if worker.poll() is not None:
                raise RuntimeError(f"the worker died; see {self.workdir / 'worker.log'}")
            deadline = time.monotonic() + 30
            while len(samples := self._latency_samples()) < n and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            _stop(worker)
        ms = [s * 1000 for s in samples]
        result.latency_p50_ms = percentile(ms, 50)
        result.latency_p99_ms = percentile(ms, 99)
        result.latency_max_ms = max(ms, default=0.0)

    # --- helpers ---------------------------------------------------------------------
    def _start_worker(self, *, burst: bool) -> subprocess.Popen[bytes]:
        c = self.config
        env = dict(os.environ, CALMQ_URL=c.url, CALMQ_KEY_PREFIX=self.prefix,
                   CALMQBENCH_DIR=str(self.workdir))  # fmt: skip
        args = [sys.executable, "-m", "calmq", "worker", JOBS_APP, "--queues", QUEUE,
                "--concurrency", str(c.concurrency), "--processes", str(c.processes),
                "--pool", c.pool, "--log-level", "warning"]  # fmt: skip
        if burst:
            args.append("--burst")
        log = open(self.workdir / "worker.log", "ab")  # noqa: SIM115 - owned by the child
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603

    def _waiting(self) -> int:
        counts = self.app.store.counts([QUEUE])[0]
        return counts.ready + counts.running + counts.scheduled

    def _wait_for_worker_ready(self) -> None:
        """Warm up: one job through the worker before the timed run starts."""
        self.latency_task.enqueue(time.time())
        deadline = time.monotonic() + 30
        while not self._latency_samples() and time.monotonic() < deadline:
            time.sleep(0.02)
        for path in self.workdir.glob("latency-*.txt"):
            path.write_text("")

    def _latency_samples(self) -> list[float]:
        samples: list[float] = []
        for path in self.workdir.glob("latency-*.txt"):
            samples.extend(float(line) for line in path.read_text().split())
        return samples

    def _redis_calls(self) -> int | None:
        if not self.config.url.startswith(("redis://", "rediss://", "unix://")):
            return None
        import redis

        client = redis.Redis.from_url(self.config.url, socket_timeout=5)
        try:
            stats: dict[str, Any] = client.info("commandstats")
        finally:
            client.close()
        # Round trips made by clients: scripts and blocking waits. Commands a script runs
        # inside Redis are counted in commandstats too, but cost no round trip.
        calls = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_evalsha_ro", "cmdstat_blpop")
        return sum(int(stats[name]["calls"]) for name in calls if name in stats)


def _tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children in MB, from /proc (no extra dependency)."""
    total = 0
    for child in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{child}/statm", encoding="ascii") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
    return total / 2**20


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
