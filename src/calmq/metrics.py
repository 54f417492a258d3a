"""Prometheus metrics (the optional ``calmq[prometheus]`` extra), fed by lifecycle events.

``Metrics`` owns its registry (no process-wide default). Serve it with
``calmq worker --metrics-port 9100`` or mount :func:`asgi_app` in an existing ASGI app.
Multi-process workers (``--processes N``) write to ``PROMETHEUS_MULTIPROC_DIR`` and the
supervisor serves the sum (prometheus-client's multiprocess mode).

Per job, the hot path touches no prometheus-client object (each one takes a lock, and in
multiprocess mode writes an mmap): it adds to plain per-(queue, task) tallies, which
:meth:`Metrics.flush` moves into the prometheus children at every scrape, every
``flush_interval`` seconds while events flow (and, in multiprocess mode, from a flusher thread
when they stop) and at :meth:`Metrics.close`.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from calmq.errors import ConfigurationError
from calmq.events import Event, EventKind, listens_to
from calmq.stores.base import Store

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
except ImportError:  # pragma: no cover - exercised by users without the extra
    prometheus_client = None  # type: ignore[assignment]

#: Seconds; from sub-millisecond waits on an idle queue to a backlog of minutes.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)
ENQUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1)

COUNTED = {
    EventKind.ENQUEUED, EventKind.DUPLICATE, EventKind.THROTTLED, EventKind.SUCCEEDED,
    EventKind.RETRIED, EventKind.DEAD, EventKind.CANCELLED, EventKind.LEASE_LOST,
    EventKind.STALE, EventKind.RELEASED,
}  # fmt: skip
#: Kinds tallied per (queue, task) in the hot path; the rest are rare and go straight through.
TALLIED = frozenset(COUNTED | {EventKind.FAILED})
#: What :meth:`Metrics.on_event` listens to. Not CLAIMED: an attempt's wait time is observed
#: from the SUCCEEDED or FAILED event that ends it, so a worker builds one event per job.
HANDLED = frozenset(TALLIED | {EventKind.RESCUED, EventKind.ALERT, EventKind.QUEUE_SAMPLE})
# Enum members as plain names: ``EventKind.X`` costs a metaclass lookup, per job.
_SUCCEEDED, _FAILED, _ENQUEUED = EventKind.SUCCEEDED, EventKind.FAILED, EventKind.ENQUEUED
#: Longest a tally waits in the hot path before reaching the prometheus children (seconds).
FLUSH_INTERVAL = 0.5


def _require() -> None:
    if prometheus_client is None:
        raise ConfigurationError(
            "metrics need the prometheus extra: pip install 'calmq[prometheus]'"
        )


def multiprocess() -> bool:
    """Whether prometheus-client runs in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _bounds_ms(buckets: Sequence[float]) -> tuple[float, ...]:
    """Upper bounds in milliseconds, as events carry times (no division per job)."""
    return (*(bound * 1000 for bound in buckets), math.inf)


WAIT_BOUNDS_MS, RUN_BOUNDS_MS, ENQUEUE_BOUNDS_MS = map(
    _bounds_ms, (WAIT_BUCKETS, RUN_BUCKETS, ENQUEUE_BUCKETS)
)


class _Tally:
    """What one (queue, task) did since the last flush: outcome counts, and per histogram
    the count per bucket (not cumulative, as prometheus-client keeps them) and the sum (ms)."""

    __slots__ = ("enqueue", "enqueue_sum", "outcomes", "run", "run_sum", "wait", "wait_sum")

    def __init__(self) -> None:
        self.outcomes: dict[EventKind, int] = {}
        self.wait = [0] * len(WAIT_BOUNDS_MS)
        self.run = [0] * len(RUN_BOUNDS_MS)
        self.enqueue = [0] * len(ENQUEUE_BOUNDS_MS)
        self.wait_sum = self.run_sum = self.enqueue_sum = 0.0

    def add(self, kind: EventKind, event: Event) -> None:
        """Count ``event`` (of a TALLIED ``kind``) and observe its times."""
        if kind is _SUCCEEDED or kind is _FAILED:
            wait, run = event.wait_ms, event.run_ms
            if wait is not None:
                self.wait[bisect_left(WAIT_BOUNDS_MS, wait)] += 1
                self.wait_sum += wait
            if run is not None:
                self.run[bisect_left(RUN_BOUNDS_MS, run)] += 1
                self.run_sum += run
            if kind is _FAILED:  # counted by the RETRIED, DEAD or STALE that follows
                return
        elif kind is _ENQUEUED and event.run_ms is not None:
            self.enqueue[bisect_left(ENQUEUE_BOUNDS_MS, event.run_ms)] += 1
            self.enqueue_sum += event.run_ms
        self.outcomes[kind] = self.outcomes.get(kind, 0) + event.count


class _FlushOnCollect:
    """Registered ahead of calmq's metrics: every collection (scrape, ``get_sample_value``)
    first moves the pending tallies into them."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        self.metrics.flush()
        return []


class Metrics:
    """calmq's metrics in one registry; subscribe :meth:`on_event` to an app's events."""

    def __init__(self, registry: Any = None, *, flush_interval: float = FLUSH_INTERVAL) -> None:
        _require()
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.flush_interval = flush_interval
        self._children: dict[tuple[object, ...], Any] = {}
        self._pending: dict[tuple[str, str], _Tally] = {}
        self._lock = threading.Lock()  # guards _pending (hooks run on any thread)
        self._flush_lock = threading.Lock()  # one flush at a time: children are cached
        self._next_flush = 0.0
        self._multiprocess = multiprocess()
        self._flusher: threading.Thread | None = None
        self._flusher_pid = 0
        self._closed = threading.Event()
        # A forked child (gunicorn --preload, a pre-forking supervisor) must not report the
        # tallies its parent gathered before the fork, nor inherit a lock held at that moment.
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_after_fork(me))
        r.register(_FlushOnCollect(self))
        self.jobs = Counter("calmq_jobs", "Job lifecycle outcomes.",
                            ["queue", "task", "outcome"], registry=r)  # fmt: skip
        self.wait = Histogram("calmq_job_wait_seconds", "From ready to claimed (store clock).",
                              ["queue", "task"], buckets=WAIT_BUCKETS, registry=r)  # fmt: skip
        self.run = Histogram("calmq_job_run_seconds", "Run time of an attempt.",
                             ["queue", "task"], buckets=RUN_BUCKETS, registry=r)  # fmt: skip
        self.enqueue = Histogram("calmq_enqueue_seconds", "Duration of an enqueue call.",
                                 ["queue"], buckets=ENQUEUE_BUCKETS, registry=r)  # fmt: skip
        self.rescues = Counter("calmq_lease_rescues", "Expired leases taken back.",
                               ["queue"], registry=r)  # fmt: skip
        self.alerts = Counter("calmq_alerts", "Alert thresholds crossed.",
                              ["alert", "queue"], registry=r)  # fmt: skip
        self.depth = Gauge("calmq_queue_jobs", "Jobs per queue and state (sampled).",
                           ["queue", "state"], registry=r,
                           multiprocess_mode="mostrecent")  # fmt: skip
        self.oldest = Gauge("calmq_oldest_ready_seconds", "Age of the oldest ready job.",
                            ["queue"], registry=r, multiprocess_mode="mostrecent")  # fmt: skip
        self.workers = Gauge("calmq_workers_alive", "Worker processes with a live heartbeat.",
                             registry=r, multiprocess_mode="mostrecent")  # fmt: skip
        self.connections = Gauge("calmq_pool_connections_in_use", "Connections checked out.",
                                 ["pool"], registry=r, multiprocess_mode="livesum")  # fmt: skip

    @listens_to(*HANDLED)
    def on_event(self, event: Event) -> None:
        """Event hook: count outcomes, observe wait/run/enqueue times."""
        self.on_events(event.kind, (event,))

    def on_events(self, kind: EventKind, events: Sequence[Event]) -> None:
        """The hook's form for many events of one kind (``Hooks.emit_many``: a worker's
        batch of acknowledged jobs): one lock and one flush check per batch."""
        if kind not in TALLIED:
            for event in events:
                self._rare(event)
            return
        if not events:
            return
        with self._lock:
            pending = self._pending
            key: tuple[str, str] | None = None  # no event's key: the first one looks it up
            tally: _Tally
            for event in events:
                if (event.queue, event.task) != key:
                    key = (event.queue, event.task)
                    found = pending.get(key)
                    if found is None:
                        found = pending[key] = _Tally()
                    tally = found
                tally.add(kind, event)
        if events[-1].at >= self._next_flush:
            self._flush_now(events[-1].at)

    def _flush_now(self, at: float) -> None:
        """The hot path's flush, at most every ``flush_interval`` seconds of event time."""
        self._next_flush = at + self.flush_interval
        self.flush()
        self._ensure_flusher()

    def _rare(self, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.RESCUED:
            self.rescues.labels(event.queue).inc(event.count)
        elif kind is EventKind.ALERT:
            self.alerts.labels(event.detail.split(":", 1)[0], event.queue).inc()
        elif kind is EventKind.QUEUE_SAMPLE and event.values:
            self._sampled(event.queue, event.values)

    def flush(self) -> None:
        """Move the tallies gathered since the last flush into the prometheus children."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        with self._flush_lock:
            for (queue, task), tally in pending.items():
                for kind, count in tally.outcomes.items():
                    self._child(self.jobs, queue, task, kind.value).inc(count)
                if any(tally.wait):
                    _add(self._child(self.wait, queue, task), tally.wait, tally.wait_sum)
                if any(tally.run):
                    _add(self._child(self.run, queue, task), tally.run, tally.run_sum)
                if any(tally.enqueue):
                    _add(self._child(self.enqueue, queue), tally.enqueue, tally.enqueue_sum)

    def _ensure_flusher(self) -> None:
        """In multiprocess mode nobody scrapes this process: flush from a thread too, so the
        last jobs before a quiet spell reach the files (started in each process that tallies,
        as a fork does not copy threads)."""
        if not self._multiprocess or self._flusher_pid == os.getpid() or self._closed.is_set():
            return
        self._flusher_pid = os.getpid()
        self._flusher = threading.Thread(target=self._flush_periodically,
                                         name="calmq-metrics-flush", daemon=True)  # fmt: skip
        self._flusher.start()

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self.flush_interval):
            self.flush()

    def close(self) -> None:
        """Flush what is pending and stop the flusher thread (at the end of a worker)."""
        self._closed.set()
        if self._flusher is not None and self._flusher_pid == os.getpid():
            self._flusher.join(timeout=5)
        self.flush()

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the lookup costs more than the increment and
        runs for every job."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _sampled(self, queue: str, values: dict[str, float]) -> None:
        if not queue:  # a store-wide sample from a worker
            self.workers.set(values.get("workers_alive", 0))
            self.connections.labels("worker").set(values.get("connections_in_use", 0))
            return
        for state in ("ready", "scheduled", "running", "dead"):
            self.depth.labels(queue, state).set(values.get(state, 0))
        self.oldest.labels(queue).set(values.get("oldest_ready_seconds", 0))

    def track_store(self, pool: str, store: Store) -> None:
        """Show ``store.connections_in_use()`` as ``calmq_pool_connections_in_use{pool}``,
        read at scrape time (in a producer process: ``metrics.track_store("web", app.store)``).
        Not available in multiprocess mode, where workers report it every few seconds."""
        if not multiprocess():
            self.connections.labels(pool).set_function(store.connections_in_use)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes (summed over processes in multiprocess mode)."""
        self.flush()
        return prometheus_client.generate_latest(exposition_registry(self.registry))


def _forget_after_fork(ref: weakref.ref[Metrics]) -> None:
    metrics = ref()
    if metrics is not None:
        metrics._pending = {}
        metrics._lock = threading.Lock()
        metrics._flush_lock = threading.Lock()


def _add(histogram_child: Any, counts: list[int], total_ms: float) -> None:
    """Add per-bucket counts and their sum (``total_ms``, in milliseconds) to a histogram
    child, as that many ``observe()`` calls would. prometheus-client keeps a child's buckets in
    ``_buckets`` (one value per upper bound, not cumulative) and the sum in ``_sum``, in both
    its modes; tests/observability pins this against the installed version."""
    buckets = histogram_child._buckets
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)
    histogram_child._sum.inc(total_ms / 1000)


def exposition_registry(own: Any) -> Any:
    """The registry to expose: the process's own, or the multiprocess sum."""
    if not multiprocess():
        return own
    from prometheus_client import multiprocess as mp

    registry = CollectorRegistry()
    mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def serve(port: int, registry: Any, addr: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``/metrics`` on a thread; returns a function that stops the server."""
    _require()
    server, thread = prometheus_client.start_http_server(
        port, addr=addr, registry=exposition_registry(registry)
    )
    # A pre-forking supervisor serves the port; its children must not hold it open (orphans
    # of a killed supervisor would keep it bound). Closing an already closed socket is a no-op.
    os.register_at_fork(after_in_child=server.socket.close)

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)

    return stop


def asgi_app(metrics: Metrics) -> Any:
    """An ASGI app serving the exposition, to mount in Starlette/FastAPI (``/metrics``)."""
    _require()
    return prometheus_client.make_asgi_app(registry=exposition_registry(metrics.registry))
