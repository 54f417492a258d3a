"""The chaos harness: real servers, real worker processes, and a checker that trusts only the
jobs' own completion logs.

Pieces:

* :class:`Target` - a store to attack: a private ``redis-server`` (optionally with AOF, on a
  given directory, bound to extra addresses) or a SQLite file.
* :class:`Fleet` - ``calmq worker`` in a subprocess (optionally under ``--processes N``, a
  command prefix such as ``ip netns exec`` or ``prlimit``, or the test-only hook wrapper).
* :func:`produce` - producer threads that enqueue known job ids and retry a refused enqueue
  with the SAME id (idempotent enqueue), keeping what was acknowledged.
* :class:`ConnSampler` - samples ``INFO clients`` on the server.
* :func:`check` - compares completion logs with what was acknowledged: lost, duplicates,
  stuck.
* :class:`Result` - one row of the table in docs/reliability.md.

Every loop here is bounded in count and time; every process is ended in ``finally`` blocks.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import redis

from calmq import App, QueueUnavailable, Settings
from calmq.errors import CalmqError
from calmq.task import Call
from tests.chaos import jobs
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.chaos.jobs:app"
QUEUE = "default"


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass
class Result:
    """One scenario run: the figures of one row of the reliability table."""

    scenario: str
    store: str
    jobs: int = 0
    lost: int = 0
    duplicates: int = 0
    stuck: int = 0
    peak_connections: int | None = None
    recovery_s: float | None = None
    seconds: float = 0.0
    passed: bool = False
    notes: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def row(self) -> str:
        peak = "-" if self.peak_connections is None else str(self.peak_connections)
        rec = "-" if self.recovery_s is None else f"{self.recovery_s:.2f}"
        return (
            f"| {self.scenario} | {self.store} | {self.jobs} | {self.lost} | {self.duplicates}"
            f" | {self.stuck} | {peak} | {rec} | {self.seconds:.1f} |"
            f" {'pass' if self.passed else 'FAIL'} | {self.notes} |"
        )


TABLE_HEADER = (
    "| scenario | store | jobs | lost | dup | stuck | peak conns | recovery s | run s | result"
    " | notes |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def save_result(result: Result) -> None:
    """Append the result to ``$CHAOS_RESULTS`` (JSON lines) when set; always print it."""
    path = os.environ.get("CHAOS_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dataclasses.asdict(result)) + "\n")
    print("\n" + result.row(), flush=True)


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, step: float = 0.02
) -> float:
    """Poll ``condition`` until true; return the seconds it took. Raises on timeout."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - start


# ----------------------------------------------------------------------------- stores
class Target:
    """A store under attack: its URL, how to reach it, and how to look at it from outside."""

    def __init__(self, kind: str, workdir: Path, *, redis_args: Sequence[str] = (),
                 sqlite_path: Path | None = None, bind: Sequence[str] = ()) -> None:  # fmt: skip
        self.kind = kind
        self.workdir = workdir
        self.prefix = f"chaos{os.getpid()}x{random.randrange(1 << 30):x}"
        self.server: RedisServer | None = None
        self.host = "127.0.0.1"
        if kind == "redis":
            self.server = RedisServer(*redis_args)
            if bind:
                self.server.args += ["--bind", "127.0.0.1", *bind]
            self.server.start()
            self.url = self.server.url
        else:
            path = sqlite_path or workdir / "calmq.sqlite3"
            self.url = f"sqlite:///{path}"
        self.settings = Settings(url=self.url, key_prefix=self.prefix)

    def env(self, url: str | None = None) -> dict[str, str]:
        return dict(os.environ, CALMQ_URL=url or self.url, CALMQ_KEY_PREFIX=self.prefix)

    def app(self, **changes: Any) -> App:
        return jobs.make_app(self.settings.replace(**changes) if changes else self.settings)

    def admin(self) -> redis.Redis:
        assert self.server is not None
        return redis.Redis(port=self.server.port, socket_timeout=5, socket_connect_timeout=1)

    def connected_clients(self) -> int | None:
        if self.server is None:
            return None
        client = self.admin()
        try:
            return int(client.info("clients")["connected_clients"]) - 1  # minus this one
        finally:
            client.close()

    def counts(self) -> dict[str, int]:
        app = self.app()
        try:
            c = app.store.counts([QUEUE])[0]
            return {
                "ready": c.ready,
                "scheduled": c.scheduled,
                "running": c.running,
                "dead": c.dead,
            }
        finally:
            app.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.cleanup()


# ----------------------------------------------------------------------------- workers
class Fleet:
    """``calmq worker`` in a subprocess, output in a log file; stopped for sure in stop()."""

    def __init__(self, target: Target, log: Path, *args: str, prefix: Sequence[str] = (),
                 hooked: bool = False, env: dict[str, str] | None = None,
                 url: str | None = None) -> None:  # fmt: skip
        module = "tests.chaos.hooked_worker" if hooked else "calmq"
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        full_env = target.env(url)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", module, "worker", APP, *args],
            cwd=ROOT, env=full_env, stdout=self._out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._known: set[int] = {self.proc.pid}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> list[psutil.Process]:
        """The processes running ``calmq worker`` (the children under a supervisor, or the
        process itself; under a prefix like ``ip netns exec`` the python descendant)."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        found = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                cmd = p.cmdline()
                if "worker" in cmd and "python" in cmd[0] and not self._is_supervisor(p, cmd):
                    found.append(p)
                self._known.add(p.pid)
        return found

    @staticmethod
    def _is_supervisor(proc: psutil.Process, cmd: list[str]) -> bool:
        """``--processes N`` runs a supervisor whose children are forked from it, so they
        share its command line: the supervisor is the one whose parent is not the same
        command (a child spawned as a fresh interpreter says ``--processes 1``)."""
        if "--processes" not in cmd or cmd[cmd.index("--processes") + 1] == "1":
            return False
        parent = proc.parent()
        return parent is None or parent.cmdline() != cmd

    def signal_all(self, signum: int) -> None:
        for p in self.workers():
            with contextlib.suppress(psutil.Error):
                p.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGCONT everything, SIGTERM the top process, then SIGKILL whatever is left."""
        self.workers()  # remember descendants before the parent goes
        for pid in self._known:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(timeout=10)
        for pid in self._known:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                p.kill()
                p.wait(timeout=5)
        self._out.close()
        return code


@contextlib.contextmanager
def fleet(target: Target, log: Path, *args: str, **kw: Any) -> Iterator[Fleet]:
    f = Fleet(target, log, *args, **kw)
    try:
        yield f
    finally:
        f.stop()


# ----------------------------------------------------------------------------- producers
@dataclasses.dataclass
class Produced:
    """What producers got: acknowledged ids, refusals by reason, and call latencies."""

    acked: set[str] = dataclasses.field(default_factory=set)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    latencies: list[tuple[float, float, bool]] = dataclasses.field(default_factory=list)
    first_error_at: float | None = None
    last_error_at: float | None = None
    gave_up: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def refused(self, exc: CalmqError) -> None:
        now = time.monotonic()
        with self.lock:
            reason = getattr(exc, "reason", type(exc).__name__)
            self.errors[reason] += 1
            self.first_error_at = self.first_error_at or now
            self.last_error_at = now


def produce(
    app: App, ids: Sequence[str], log_dir: Path, *, threads: int = 4, batch: int = 1,
    deadline: float = 60.0, pad: int = 0, sleep: float = 0.0, out: Produced | None = None,
    stop: threading.Event | None = None,
) -> Produced:  # fmt: skip
    """Enqueue ``chaos.record(log_dir, id)`` for every id from ``threads`` threads, ``batch``
    per call; a refused call (QueueUnavailable) is retried with the same ids until
    ``deadline`` seconds have passed. Only ids of calls that returned count as acknowledged."""
    out = out or Produced()
    task = app.tasks["chaos.record"]
    chunks = [list(ids[i : i + batch]) for i in range(0, len(ids), batch)]
    cursor = iter(chunks)
    cursor_lock = threading.Lock()
    end = time.monotonic() + deadline
    padding = "x" * pad

    def run() -> None:
        while True:
            with cursor_lock:
                chunk = next(cursor, None)
            if chunk is None or (stop is not None and stop.is_set()):
                return
            calls = [Call((str(log_dir), jid, padding, sleep), job_id=jid) for jid in chunk]
            while True:
                started = time.monotonic()
                try:
                    task.enqueue_many(calls)
                except QueueUnavailable as exc:
                    out.refused(exc)
                    with out.lock:
                        out.latencies.append((started, time.monotonic() - started, False))
                    if time.monotonic() > end or (stop is not None and stop.is_set()):
                        with out.lock:
                            out.gave_up += len(chunk)
                        break
                    time.sleep(0.02)
                    continue
                with out.lock:
                    out.acked.update(chunk)
                    out.latencies.append((started, time.monotonic() - started, True))
                break

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=deadline + 30)
    return out


def job_ids(tag: str, n: int) -> list[str]:
    return [f"{tag}-{i:07d}" for i in range(n)]


# ----------------------------------------------------------------------------- observers
class ConnSampler(threading.Thread):
    """Samples the server's ``connected_clients`` every ``interval`` seconds."""

    def __init__(self, target: Target, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="conn-sampler")
        self.target = target
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        client: redis.Redis | None = None
        while not self._stop_event.wait(self.interval):
            try:
                if client is None:
                    client = self.target.admin()
                n = int(client.info("clients")["connected_clients"]) - 1
                self.samples.append((time.monotonic(), n))
            except redis.RedisError:
                client = None  # server down (a scenario killed it): try again next tick
        if client is not None:
            client.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    @property
    def peak(self) -> int | None:
        return max((n for _, n in self.samples), default=None)


@contextlib.contextmanager
def sampling(target: Target) -> Iterator[ConnSampler | None]:
    if target.kind != "redis":
        yield None
        return
    sampler = ConnSampler(target)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()


def wait_done(log_dir: Path, expected: Iterable[str], timeout: float) -> float:
    """Wait until every expected id appears in the completion logs; return the seconds."""
    want = set(expected)
    return wait_until(lambda: want <= set(jobs.read_ids(log_dir)), timeout,
                      f"{len(want)} jobs to complete", step=0.1)  # fmt: skip


@dataclasses.dataclass
class Check:
    lost: set[str]
    duplicates: int
    stuck: int
    counts: dict[str, int]
    completed: int


def check(target: Target, log_dir: Path, acked: Iterable[str], expected_dead: int = 0,
          settle: float = 15.0) -> Check:  # fmt: skip
    """Compare the completion logs with what producers had acknowledged."""
    acked = set(acked)

    def stuck_now() -> tuple[int, dict[str, int]]:
        counts = target.counts()
        n = counts["ready"] + counts["scheduled"] + counts["running"]
        return n + max(0, counts["dead"] - expected_dead), counts

    # Acknowledgements trail the completion logs a little (batched acks): let them land.
    end = time.monotonic() + settle
    stuck, counts = stuck_now()
    while stuck and time.monotonic() < end:
        time.sleep(0.2)
        stuck, counts = stuck_now()
    done = collections.Counter(jobs.read_ids(log_dir))
    lost = acked - set(done)
    duplicates = sum(n - 1 for n in done.values() if n > 1)
    return Check(lost, duplicates, stuck, counts, len(done))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
