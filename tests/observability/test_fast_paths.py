"""The cheap per-job paths of logs and metrics give the same results as the plain ones."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram

from calmq import App
from calmq.events import Event, EventKind, Hooks, listens_to
from calmq.logs import BufferedStreamHandler, JobLog, JsonFormatter, job_log, log_event
from calmq.metrics import HANDLED, RUN_BUCKETS, WAIT_BUCKETS, Metrics

SUCCEEDED = Event(EventKind.SUCCEEDED, "default", "send_sms", "06h1abc", 1, 6, 12.0, 4.25)
RETRIED = Event(EventKind.RETRIED, "sms", "send_sms", "06h1abd", 2, 6, 3.0, 0.5,
                error="ValueError('boom')", detail="retry in 1.00s")  # fmt: skip


class Collect(logging.Handler):
    """Keeps the records it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def private_logger() -> Iterator[logging.Logger]:
    """A logger of its own, not propagating to the root, whose handlers are only those a test
    gives it (pytest attaches its capture handler to non-propagating loggers too)."""
    logger = logging.getLogger(f"calmq-test-{uuid.uuid4().hex}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.handlers.clear()
    try:
        yield logger
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers.clear()


def json_handler(stream: io.StringIO) -> BufferedStreamHandler:
    handler = BufferedStreamHandler(stream, interval=3600)  # flushed by the test only
    handler.setFormatter(JsonFormatter())
    return handler


def test_the_shortcut_line_equals_the_line_of_the_record(private_logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = json_handler(stream)
    private_logger.handlers[:] = [handler]
    job_lines = JobLog(private_logger)
    assert job_lines._sole_handler(logging.INFO) is handler
    for event in (SUCCEEDED, RETRIED):
        job_lines(event)  # the only handler is calmq's JSON one: no record
    handler.flush()
    shortcut = stream.getvalue().splitlines()

    collect = Collect()
    private_logger.addHandler(collect)  # now someone sees records: every line is one again
    assert job_lines._sole_handler(logging.INFO) is None
    stream.seek(0)
    stream.truncate()
    for event in (SUCCEEDED, RETRIED):
        job_lines(event)
    handler.flush()
    assert stream.getvalue().splitlines() == shortcut
    assert len(collect.records) == 2
    record = collect.records[0]
    assert isinstance(record, logging.LogRecord)
    expected = {"job_id": "06h1abc", "task": "send_sms", "queue": "default", "attempt": 1,
                "max_attempts": 6, "wait_ms": 12.0, "run_ms": 4.25,
                "event": "succeeded"}  # fmt: skip
    assert {key: vars(record)[key] for key in expected} == expected
    assert record.levelno == logging.INFO and record.name == private_logger.name
    assert (
        record.getMessage()
        == "succeeded send_sms 06h1abc queue=default attempt=1/6 wait=12ms run=4.2ms"
    )
    assert collect.records[1].levelno == logging.WARNING
    line = json.loads(shortcut[1])
    assert line["event"] == "retried" and line["error"] == "ValueError('boom')"
    assert line["detail"] == "retry in 1.00s" and line["wait_ms"] == 3.0
    assert {"time", "level", "logger", "message", "pid"} <= set(line)


def test_a_filter_or_record_factory_sees_every_record(private_logger: logging.Logger) -> None:
    stream = io.StringIO()
    private_logger.handlers[:] = [json_handler(stream)]
    seen: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return True

    private_logger.addFilter(keep)
    JobLog(private_logger)(SUCCEEDED)
    assert len(seen) == 1
    private_logger.removeFilter(keep)

    made: list[logging.LogRecord] = []
    default = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = default(*args, **kwargs)  # type: ignore[arg-type]
        made.append(record)
        return record

    logging.setLogRecordFactory(factory)
    try:
        JobLog(private_logger)(SUCCEEDED)
    finally:
        logging.setLogRecordFactory(default)
    assert len(made) == 1 and made[0].job_id == "06h1abc"  # type: ignore[attr-defined]


def test_job_log_and_log_event_write_the_same_fields() -> None:
    collect = Collect()
    job_log.addHandler(collect)
    old = job_log.level
    job_log.setLevel(logging.INFO)
    try:
        JobLog()(SUCCEEDED)
        log_event(SUCCEEDED)
    finally:
        job_log.removeHandler(collect)
        job_log.setLevel(old)
    fast, plain = collect.records
    formatter = JsonFormatter()
    fast_line, plain_line = json.loads(formatter.format(fast)), json.loads(formatter.format(plain))
    fast_line.pop("time"), plain_line.pop("time")
    assert fast_line == plain_line
    assert fast.getMessage() == plain.getMessage()


def test_buffered_handler_writes_warnings_at_once_and_the_rest_on_flush() -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, interval=3600, max_lines=1000)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"calmq-test-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers[:] = [handler]
    try:
        logger.info("one")
        logger.info("two")
        assert stream.getvalue() == ""
        logger.warning("three")  # flushes what came before too, in order
        assert stream.getvalue() == "INFO one\nINFO two\nWARNING three\n"
        logger.info("four")
        handler.close()
        assert stream.getvalue().endswith("WARNING three\nINFO four\n")
    finally:
        logger.removeHandler(handler)


def test_buffered_handler_writes_when_max_lines_wait() -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, interval=3600, max_lines=3)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for i in range(3):
            handler.handle(logging.makeLogRecord({"msg": str(i), "levelno": logging.INFO}))
        assert stream.getvalue() == "0\n1\n2\n"
    finally:
        handler.close()


def reference(buckets: tuple[float, ...], values_ms: list[float]) -> CollectorRegistry:
    """A registry with one histogram fed the plain way, by observe()."""
    registry = CollectorRegistry()
    histogram = Histogram("ref", "reference", buckets=buckets, registry=registry)
    for value in values_ms:
        histogram.observe(value / 1000)
    return registry


def histogram_samples(registry: CollectorRegistry, name: str,
                      labels: dict[str, str]) -> dict[str, float]:  # fmt: skip
    """Bucket (by ``le``), count and sum samples of one histogram child."""
    out = {}
    for metric in registry.collect():
        for sample in metric.samples:
            rest = {k: v for k, v in sample.labels.items() if k != "le"}
            if sample.name.startswith(name + "_") and rest == labels:
                if sample.name.endswith("_created"):
                    continue
                out[sample.name.removeprefix(name) + sample.labels.get("le", "")] = sample.value
    return out


def test_metrics_tallies_match_observe_exactly() -> None:
    metrics = Metrics()
    # Values on, below and above bucket bounds, in milliseconds (as events carry them).
    waits = [0.0, 1.0, 1.0000001, 5.0, 49.9, 50.0, 3_600_000.0, 7_200_000.0]
    runs = [0.2, 1.0, 10.0, 10.5, 300_000.0, 400_000.0, 0.0, 99.0]
    for wait, run in zip(waits, runs, strict=True):
        metrics.on_event(Event(EventKind.SUCCEEDED, "q", "t", "id", 1, 1, wait, run))
    metrics.on_event(Event(EventKind.FAILED, "q", "t", "id", 1, 2, 2.0, 3.0, error="x"))
    metrics.on_event(Event(EventKind.RETRIED, "q", "t", "id", 1, 2, 2.0, 3.0, error="x"))
    metrics.on_event(Event(EventKind.ENQUEUED, "q", "t", "id", run_ms=0.3))
    metrics.on_event(Event(EventKind.RESCUED, "q", count=3))
    labels = {"queue": "q", "task": "t"}
    for name, buckets, values in (
        ("calmq_job_wait_seconds", WAIT_BUCKETS, [*waits, 2.0]),
        ("calmq_job_run_seconds", RUN_BUCKETS, [*runs, 3.0]),
    ):
        ours = histogram_samples(metrics.registry, name, labels)
        theirs = histogram_samples(reference(buckets, values), "ref", {})
        assert ours.keys() == theirs.keys() and len(ours) == len(buckets) + 3  # +Inf, count, sum
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value), (name, key)
    jobs = "calmq_jobs_total"
    assert metrics.registry.get_sample_value(jobs, {**labels, "outcome": "succeeded"}) == 8
    assert metrics.registry.get_sample_value(jobs, {**labels, "outcome": "retried"}) == 1
    assert metrics.registry.get_sample_value(jobs, {**labels, "outcome": "enqueued"}) == 1
    assert metrics.registry.get_sample_value("calmq_enqueue_seconds_count", {"queue": "q"}) == 1
    assert metrics.registry.get_sample_value("calmq_lease_rescues_total", {"queue": "q"}) == 3
    # A second scrape adds nothing: each tally is moved once.
    assert metrics.registry.get_sample_value(jobs, {**labels, "outcome": "succeeded"}) == 8
    metrics.close()


def test_metrics_listen_to_outcomes_not_claims(app_for_events: App) -> None:
    metrics = Metrics()
    app_for_events.on_event(metrics.on_event)
    assert not app_for_events.events.wants(EventKind.CLAIMED)
    assert all(app_for_events.events.wants(kind) for kind in HANDLED)
    app_for_events.events.unsubscribe(metrics.on_event)
    assert not app_for_events.events.wants(EventKind.SUCCEEDED)


@pytest.fixture
def app_for_events() -> Iterator[App]:
    app = App(url="sqlite://:memory:")
    try:
        yield app
    finally:
        app.close()


def test_listens_to_marks_functions_for_subscribe() -> None:
    hooks, got = Hooks(), []

    @listens_to(EventKind.DEAD)
    def on_dead(event: Event) -> None:
        got.append(event)

    hooks.subscribe(on_dead)
    hooks.emit(SUCCEEDED)
    hooks.emit(dataclasses.replace(SUCCEEDED, kind=EventKind.DEAD))
    assert [e.kind for e in got] == [EventKind.DEAD]
    hooks.subscribe(got.append, [EventKind.SUCCEEDED])  # explicit kinds still win
    assert hooks.wants(EventKind.SUCCEEDED) and not hooks.wants(EventKind.CLAIMED)


def test_events_stay_frozen_hashable_dataclasses() -> None:
    event = Event(EventKind.SUCCEEDED, "q", "t", "id", run_ms=1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.queue = "other"  # type: ignore[misc]
    assert event == dataclasses.replace(event) and hash(event) == hash(dataclasses.replace(event))
    assert dataclasses.asdict(event)["run_ms"] == 1.5 and event.at > 0
    assert Event(EventKind.ALERT, "q", at=5.0).at == 5.0
    assert [f.name for f in dataclasses.fields(Event)][-1] == "at"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_flushes_its_own_lines_once(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    stream = path.open("w", encoding="utf-8")
    handler = BufferedStreamHandler(stream, interval=0.05)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.acquire()  # the parent writes nothing until its child is done
    try:
        handler._lines.append("parent")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child (logging gave it fresh handler locks)
            code = 1
            try:
                handler.handle(logging.makeLogRecord({"msg": "child", "levelno": logging.INFO}))
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # written by the child's own flusher
                    if path.read_text(encoding="utf-8") == "child\n":  # and not "parent"
                        code = 0
                        break
                    handler._stop_flushing.wait(0.01)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        handler.release()
    handler.close()
    stream.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert path.read_text(encoding="utf-8") == "child\nparent\n"


def test_text_formatter_prints_what_logging_formatter_prints() -> None:
    import logging

    from calmq.logs import TextFormatter

    fmt = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
    ours, theirs = TextFormatter(fmt), logging.Formatter(fmt)
    for created in (1_700_000_000.0005, 1_700_000_000.9995, 1_700_000_001.25):
        record = logging.LogRecord("calmq.jobs", logging.INFO, __file__, 1, "x %s", ("y",), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        assert ours.format(record) == theirs.format(record)


def some_successes(count: int) -> list[Event]:
    """Succeeded events of two tasks, waits and runs spread over many buckets."""
    tasks = ("sync_crm", "send_sms", "send_sms")
    return [
        Event(EventKind.SUCCEEDED, "default", tasks[i % 3], f"06h{i:04d}", 1, 6,
              float(i * 37 % 5000), i * 1.7 % 900)
        for i in range(count)
    ]  # fmt: skip


def test_emit_many_gives_every_hook_the_events_of_one_by_one() -> None:
    hooks = Hooks()
    one_by_one: list[Event] = []
    batches: list[tuple[EventKind, list[Event]]] = []
    dead_only: list[Event] = []
    failures = {"count": 0}

    def flaky(event: Event) -> None:  # raises on every other event: the others still come
        failures["count"] += 1
        if failures["count"] % 2:
            raise RuntimeError("hook trouble")
        one_by_one.append(event)

    hooks.subscribe(flaky)
    hooks.subscribe(one_by_one.append, many=lambda kind, events: batches.append((kind, [*events])))
    hooks.subscribe(dead_only.append, [EventKind.DEAD])
    events = some_successes(10)
    hooks.emit_many(EventKind.SUCCEEDED, events)
    assert failures["count"] == 10 and one_by_one == events[1::2]  # the per-event hook
    assert batches == [(EventKind.SUCCEEDED, events)]  # the batch form, once, not per event
    assert dead_only == []


def test_job_log_many_writes_the_lines_one_by_one_writes(private_logger: logging.Logger) -> None:
    events = [*some_successes(5), RETRIED]
    outputs = []
    for deliver in ("one", "many"):
        stream = io.StringIO()
        handler = json_handler(stream)
        private_logger.handlers[:] = [handler]
        job_lines = JobLog(private_logger)
        if deliver == "one":
            for event in events:
                job_lines(event)
        else:
            job_lines.many(EventKind.SUCCEEDED, events[:-1])
            job_lines.many(EventKind.RETRIED, events[-1:])
        handler.flush()
        outputs.append(stream.getvalue().splitlines())
        handler.close()
    assert outputs[0] == outputs[1] and len(outputs[0]) == 6
    assert json.loads(outputs[1][0])["job_id"] == "06h0000"

    collect = Collect()  # someone sees records: the batch goes through one record per event
    private_logger.handlers[:] = [collect]
    JobLog(private_logger).many(EventKind.SUCCEEDED, events[:3])
    assert [r.job_id for r in collect.records] == ["06h0000", "06h0001", "06h0002"]  # type: ignore[attr-defined]


def test_metrics_from_batches_equal_metrics_from_single_events() -> None:
    events = some_successes(50)
    single, batched = Metrics(), Metrics()
    for event in events:
        single.on_event(event)
    batched.on_events(EventKind.SUCCEEDED, events[:17])
    batched.on_events(EventKind.SUCCEEDED, events[17:])
    batched.on_events(EventKind.RESCUED, [Event(EventKind.RESCUED, "default", count=2)])
    for task in ("send_sms", "sync_crm"):
        labels = {"queue": "default", "task": task}
        for name in ("calmq_job_wait_seconds", "calmq_job_run_seconds"):
            ours = histogram_samples(batched.registry, name, labels)
            assert ours == histogram_samples(single.registry, name, labels) and ours
        count = batched.registry.get_sample_value(
            "calmq_jobs_total", {**labels, "outcome": "succeeded"}
        )
        assert count == sum(1 for e in events if e.task == task)
    rescues = batched.registry.get_sample_value("calmq_lease_rescues_total", {"queue": "default"})
    assert rescues == 2
    single.close()
    batched.close()


def text_handler(stream: io.StringIO, fmt: str) -> BufferedStreamHandler:
    from calmq.logs import TextFormatter

    handler = BufferedStreamHandler(stream, interval=3600)  # flushed by the test only
    handler.setFormatter(TextFormatter(fmt))
    return handler


@pytest.mark.parametrize(
    "fmt",
    [
        "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",  # calmq worker's
        "%(levelname)-8s %(asctime)s %(processName)s %(levelno)d %(name)s: %(message)s",
        "%(asctime)s %(threadName)s %(message)s",  # per-thread: always through a record
    ],
)
def test_the_text_shortcut_prints_what_the_record_prints(
    private_logger: logging.Logger, fmt: str
) -> None:
    events = [*some_successes(3), RETRIED, SUCCEEDED]
    stream = io.StringIO()
    handler = text_handler(stream, fmt)
    private_logger.handlers[:] = [handler]
    job_lines = JobLog(private_logger)
    shortcut = job_lines._sole_handler(logging.INFO) is handler
    assert shortcut == ("threadName" not in fmt)
    job_lines.many(EventKind.SUCCEEDED, events[:3])
    job_lines(events[3])
    job_lines(events[4])
    handler.flush()
    fast = stream.getvalue().splitlines()

    collect = Collect()  # a second handler: every line goes through a record now
    private_logger.addHandler(collect)
    assert job_lines._sole_handler(logging.INFO) is None
    stream.seek(0)
    stream.truncate()
    job_lines.many(EventKind.SUCCEEDED, events[:3])
    job_lines(events[3])
    job_lines(events[4])
    handler.flush()
    assert fast == stream.getvalue().splitlines() and len(fast) == 5
    assert f"[{os.getpid()}]" in fast[0] or "[" not in fmt
    assert "retried send_sms 06h1abd" in fast[3]
    assert "WARNING" in fast[3] or "levelname" not in fmt
