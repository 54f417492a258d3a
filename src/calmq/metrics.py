"""Prometheus metrics (the optional ``calmq[prometheus]`` extra), fed by lifecycle events.

``Metrics`` owns its registry (no process-wide default). Serve it with
``calmq worker --metrics-port 9100`` or mount :func:`asgi_app` in an existing ASGI app.
Multi-process workers (``--processes N``) write to ``PROMETHEUS_MULTIPROC_DIR`` and the
supervisor serves the sum (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from calmq.errors import ConfigurationError
from calmq.events import Event, EventKind
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


def _require() -> None:
    if prometheus_client is None:
        raise ConfigurationError(
            "metrics need the prometheus extra: pip install 'calmq[prometheus]'"
        )


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """calmq's metrics in one registry; subscribe :meth:`on_event` to an app's events."""

    def __init__(self, registry: Any = None) -> None:
        _require()
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._children: dict[tuple[object, ...], Any] = {}
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

    def on_event(self, event: Event) -> None:
        """Event hook: count outcomes, observe wait/run/enqueue times."""
        kind = event.kind
        if kind in COUNTED:
            self._child(self.jobs, event.queue, event.task, kind.value).inc(event.count)
        if kind is EventKind.CLAIMED and event.wait_ms is not None:
            self._child(self.wait, event.queue, event.task).observe(event.wait_ms / 1000)
        elif kind in (EventKind.SUCCEEDED, EventKind.FAILED) and event.run_ms is not None:
            self._child(self.run, event.queue, event.task).observe(event.run_ms / 1000)
        elif kind is EventKind.ENQUEUED and event.run_ms is not None:
            self.enqueue.labels(event.queue).observe(event.run_ms / 1000)
        elif kind is EventKind.RESCUED:
            self.rescues.labels(event.queue).inc(event.count)
        elif kind is EventKind.ALERT:
            self.alerts.labels(event.detail.split(":", 1)[0], event.queue).inc()
        elif kind is EventKind.QUEUE_SAMPLE and event.values:
            self._sampled(event.queue, event.values)

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
        return prometheus_client.generate_latest(exposition_registry(self.registry))


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

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)

    return stop


def asgi_app(metrics: Metrics) -> Any:
    """An ASGI app serving the exposition, to mount in Starlette/FastAPI (``/metrics``)."""
    _require()
    return prometheus_client.make_asgi_app(registry=exposition_registry(metrics.registry))
