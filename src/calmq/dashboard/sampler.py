"""An in-process ring buffer of samples for the dashboard's sparklines and charts.

Every ``interval`` seconds a daemon thread reads the queue counts and the worker registry
and keeps one :class:`Sample`: depths per queue, and throughput from the deltas of the
workers' cumulative counters (``stats["succeeded"]``, ``retried``, ``dead``) between two
heartbeats. Nothing is stored anywhere: a restarted dashboard starts with an empty history.

Throughput per queue is that of the workers serving the queue: a worker that serves several
queues counts towards each of them (its heartbeat does not say which queue a job came from).
Wait and run times per sample are the mean of the workers' recent p50s and the largest of
their p99s.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Any

from calmq.errors import CalmqError
from calmq.job import QueueCounts, WorkerInfo
from calmq.stores.base import Store

log = logging.getLogger("calmq.dashboard")

#: The counters whose per-second deltas are plotted.
RATES = ("succeeded", "retried", "dead")
LATENCIES = ("wait_p50_ms", "wait_p99_ms", "run_p50_ms", "run_p99_ms")


@dataclasses.dataclass(frozen=True)
class Sample:
    """The state at ``t_ms`` (store clock): depths, jobs/s and latencies."""

    t_ms: int
    #: queue -> {"ready": n, "scheduled": n, "running": n, "dead": n, "throughput": jobs/s}
    queues: dict[str, dict[str, float]]
    #: "succeeded" / "retried" / "dead" -> jobs per second over all workers
    rates: dict[str, float]
    #: "wait_p50_ms" ... "run_p99_ms" over all workers (absent without busy workers)
    latency: dict[str, float]
    #: queue -> latencies of the workers serving it
    queue_latency: dict[str, dict[str, float]]
    workers: int

    def to_json(self) -> dict[str, Any]:
        """The sample as plain JSON-able data."""
        return dataclasses.asdict(self)


class Sampler:
    """Keeps the last ``size`` samples of ``store``, one per ``interval`` seconds."""

    def __init__(self, store: Store, *, interval: float = 5.0, size: int = 180) -> None:
        self.store = store
        self.interval = interval
        self._samples: collections.deque[Sample] = collections.deque(maxlen=size)
        self._workers: dict[str, WorkerRate] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start sampling on a daemon thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="calmq-dashboard-sampler", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (idempotent)."""
        with self._lock:
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except CalmqError as exc:  # the store is down: a gap in the charts, not a crash
                log.warning("dashboard sample skipped: %s", exc)
            self._stop.wait(self.interval)

    # --- sampling ---------------------------------------------------------------------
    def sample(self) -> Sample:
        """Read the store once and append a sample (also callable without the thread)."""
        t_ms = self.store.now_ms()
        counts = self.store.counts()
        current = {w.id: w for w in self.store.workers()}
        with self._lock:
            self._workers = worker_rates(current, self._workers)
            sample = build_sample(t_ms, counts, self._workers)
            self._samples.append(sample)
        return sample

    def samples(self) -> list[Sample]:
        """The kept samples, oldest first."""
        with self._lock:
            return list(self._samples)

    def to_json(self) -> dict[str, Any]:
        """The history as plain data for the ``/api/metrics`` view."""
        return {"interval_s": self.interval, "samples": [s.to_json() for s in self.samples()]}


@dataclasses.dataclass(frozen=True)
class WorkerRate:
    """A worker's latest heartbeat, and its jobs per second since the heartbeat before."""

    info: WorkerInfo
    rates: dict[str, float]


def worker_rates(
    current: dict[str, WorkerInfo], previous: dict[str, WorkerRate]
) -> dict[str, WorkerRate]:
    """Rates from counter deltas between two *heartbeats* (their ``seen_at_ms``), not two
    samples: heartbeats and samples tick at different periods, and dividing by the sample
    interval would plot a saw-tooth. A worker's first heartbeat has no rate yet; without a
    new heartbeat the last rates stand; a counter that went down (a restart under the same
    id) counts from zero."""
    out = {}
    for wid, info in current.items():
        before = previous.get(wid)
        if before is None:
            out[wid] = WorkerRate(info, dict.fromkeys(RATES, 0.0))
            continue
        seconds = (info.seen_at_ms - before.info.seen_at_ms) / 1000
        if seconds <= 0:
            out[wid] = WorkerRate(info, before.rates)
            continue
        rates = {}
        for name in RATES:
            value, old = float(info.stats.get(name, 0.0)), float(before.info.stats.get(name, 0.0))
            rates[name] = (value - old if value >= old else value) / seconds
        out[wid] = WorkerRate(info, rates)
    return out


def build_sample(t_ms: int, counts: list[QueueCounts], workers: dict[str, WorkerRate]) -> Sample:
    """One sample from the queue counts and the live workers' rates."""
    rates = dict.fromkeys(RATES, 0.0)
    queues: dict[str, dict[str, float]] = {}
    for c in counts:
        queues[c.queue] = {"ready": c.ready, "scheduled": c.scheduled, "running": c.running,
                           "dead": c.dead, "throughput": 0.0}  # fmt: skip
    for worker in workers.values():
        for name in RATES:
            rates[name] += worker.rates[name]
        done = sum(worker.rates.values())
        for queue in worker.info.queues:
            if queue in queues:
                queues[queue]["throughput"] += done
    infos = [w.info for w in workers.values()]
    queue_latency = {q: _latency([w for w in infos if q in w.queues]) for q in queues}
    return Sample(t_ms, queues, rates, _latency(infos),
                  {q: v for q, v in queue_latency.items() if v}, len(infos))  # fmt: skip


def _latency(workers: list[WorkerInfo]) -> dict[str, float]:
    busy = [w for w in workers if w.stats.get("claimed", 0) > 0]
    if not busy:
        return {}
    out = {}
    for name in LATENCIES:
        values = [float(w.stats.get(name, 0.0)) for w in busy]
        out[name] = max(values) if name.endswith("p99_ms") else sum(values) / len(values)
    return out
