"""Alert thresholds raise ALERT events and reach the metrics."""

from __future__ import annotations

import time

from calmq import App, Settings
from calmq.alerts import EnqueueWatch, QueueWatch
from calmq.events import Event, EventKind, Hooks
from calmq.metrics import Metrics


def test_queue_watch_samples_depths_and_alerts_on_age_and_dead_growth(
    store_settings: Settings,
) -> None:
    settings = store_settings.replace(alert_oldest_ready=0.05, alert_dead_growth=0)
    app = App(settings=settings)

    @app.task(name="job")
    def job() -> None: ...

    events, seen = Hooks(), []
    events.subscribe(seen.append)
    metrics = Metrics()
    events.subscribe(metrics.on_event)
    watch = QueueWatch(settings, events)
    try:
        job.enqueue()
        watch.check(app.store, ["default"])  # baseline for dead growth
        deadline = time.monotonic() + 10
        while not any(e.kind is EventKind.ALERT and "oldest_ready" in e.detail for e in seen):
            assert time.monotonic() < deadline, "no oldest_ready alert"
            time.sleep(0.05)
            watch.check(app.store, ["default"])
        claimed = app.store.claim("default", limit=1, lease_ms=5000).jobs[0]
        app.store.fail("default", claimed.lease, error="boom", retry_in_ms=None)
        watch.check(app.store, ["default"])
    finally:
        app.close()
    alerts = [e.detail for e in seen if e.kind is EventKind.ALERT]
    assert any(a.startswith("dead_growth:default: 1 jobs died") for a in alerts), alerts
    samples = [e for e in seen if e.kind is EventKind.QUEUE_SAMPLE and e.queue]
    assert samples[-1].values is not None and samples[-1].values["dead"] == 1
    registry = metrics.registry
    assert registry.get_sample_value("calmq_queue_jobs", {"queue": "default", "state": "dead"}) == 1
    assert (
        registry.get_sample_value(
            "calmq_alerts_total", {"alert": "dead_growth", "queue": "default"}
        )
        == 1
    )


def test_enqueue_p99_alert_fires_when_enqueue_gets_slow() -> None:
    settings = Settings(alert_enqueue_p99_ms=1.0, alert_window=0.01)
    events, seen = Hooks(), []
    events.subscribe(seen.append)
    watch = EnqueueWatch(settings, events)
    for _ in range(5):
        watch.record("sms", 0.2)
    time.sleep(0.02)  # let the (tiny) window end; the next record evaluates it
    watch.record("sms", 50.0)
    fast = [e for e in seen if e.kind is EventKind.ALERT]
    assert len(fast) == 1 and fast[0].detail.startswith("enqueue_p99:sms: enqueue p99 was 50.0 ms")


def test_no_thresholds_no_alerts(store_settings: Settings) -> None:
    app = App(settings=store_settings)
    seen: list[Event] = []
    events = Hooks()
    events.subscribe(seen.append)
    try:
        QueueWatch(store_settings, events).check(app.store, ["default"])
    finally:
        app.close()
    assert all(e.kind is not EventKind.ALERT for e in seen)
