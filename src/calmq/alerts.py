"""Alerts: thresholds on the signals that would have named the incident's cause at once.

* the oldest ready job of a queue is older than ``alert_oldest_ready`` (jobs are waiting);
* more than ``alert_dead_growth`` jobs died in a queue within one window;
* this process's enqueue p99 over a window is above ``alert_enqueue_p99_ms`` (enqueue is
  getting slow while the queue may well be empty: the incident's first symptom).

Crossing a threshold emits an ALERT event (``detail`` = ``"<alert>:<queue>: <text>"``), which
the log hook prints and the metrics hook counts; every check also emits a QUEUE_SAMPLE event
whose ``values`` feed the depth and age gauges. Evaluation is cheap and runs in the worker's
maintenance (queue alerts) or inline after enqueue (the producer alert).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence

from calmq.events import Event, EventKind, Hooks
from calmq.job import JobState
from calmq.quantile import percentile
from calmq.settings import Settings
from calmq.stores.base import Store


class QueueWatch:
    """Samples queue depths and ages; raises queue alerts. Used by workers."""

    def __init__(self, settings: Settings, events: Hooks) -> None:
        self.settings = settings
        self.events = events
        self._dead_seen: dict[str, tuple[float, int]] = {}

    def check(self, store: Store, queues: Sequence[str]) -> None:
        now_ms = store.now_ms()
        for counts in store.counts(queues):
            oldest = store.list_jobs(counts.queue, JobState.READY, limit=1)
            age = 0.0
            if oldest:
                since = oldest[0].run_at_ms or oldest[0].enqueued_at_ms
                age = max(0.0, (now_ms - since) / 1000)
            values = {"ready": counts.ready, "scheduled": counts.scheduled,
                      "running": counts.running, "dead": counts.dead,
                      "oldest_ready_seconds": age}  # fmt: skip
            self.events.emit(Event(EventKind.QUEUE_SAMPLE, counts.queue, values=values))
            self._check_age(counts.queue, age)
            self._check_dead(counts.queue, counts.dead)
        pool: dict[str, float] = {"workers_alive": len(store.workers()),
                                  "connections_in_use": store.connections_in_use()}  # fmt: skip
        self.events.emit(Event(EventKind.QUEUE_SAMPLE, "", values=pool))

    def _check_age(self, queue: str, age: float) -> None:
        limit = self.settings.alert_oldest_ready
        if limit is not None and age > limit:
            self._alert("oldest_ready", queue, f"the oldest ready job has waited {age:.0f}s"
                        f" (threshold {limit:.0f}s): workers are not keeping up")  # fmt: skip

    def _check_dead(self, queue: str, dead: int) -> None:
        limit = self.settings.alert_dead_growth
        now = time.monotonic()
        started, base = self._dead_seen.setdefault(queue, (now, dead))
        if limit is not None and dead - base > limit:
            self._alert("dead_growth", queue, f"{dead - base} jobs died within"
                        f" {now - started:.0f}s (threshold {limit})")  # fmt: skip
            self._dead_seen[queue] = (now, dead)
        elif now - started >= self.settings.alert_window:
            self._dead_seen[queue] = (now, dead)

    def _alert(self, name: str, queue: str, text: str) -> None:
        self.events.emit(Event(EventKind.ALERT, queue, detail=f"{name}:{queue}: {text}"))


class EnqueueWatch:
    """Tracks this process's enqueue latency; raises the enqueue-p99 alert. Used by App."""

    def __init__(self, settings: Settings, events: Hooks) -> None:
        self.limit = settings.alert_enqueue_p99_ms
        self.window = settings.alert_window
        self.events = events
        self._samples: collections.deque[float] = collections.deque(maxlen=10_000)
        self._window_start = time.monotonic()
        self._lock = threading.Lock()

    def record(self, queue: str, milliseconds: float) -> None:
        if self.limit is None:
            return
        with self._lock:
            self._samples.append(milliseconds)
            now = time.monotonic()
            if now - self._window_start < self.window:
                return
            p99 = percentile(list(self._samples), 99)
            self._samples.clear()
            self._window_start = now
        if p99 > self.limit:
            self.events.emit(Event(
                EventKind.ALERT, queue, detail=f"enqueue_p99:{queue}: enqueue p99 was"
                f" {p99:.1f} ms over the last {self.window:.0f}s (threshold {self.limit} ms)",
            ))  # fmt: skip
