"""Bad input: unserialisable and oversized arguments, unknown tasks, malformed and foreign
data written straight into calmq's keys and rows, wrong Redis key types, invalid URLs and
options. Each must give a clear error or a dead-letter record with a reason, and no other job
may be harmed. The worker runs in a real subprocess; the checker reads completion logs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calmq import App, JobState, Settings
from calmq.errors import ConfigurationError, PayloadTooLarge, SerializationError, StoreError
from calmq.job import NewJob
from tests.chaos import jobs
from tests.chaos.harness import (
    QUEUE,
    ROOT,
    Result,
    Target,
    check,
    fleet,
    job_ids,
    produce,
    save_result,
    wait_done,
    wait_until,
)

pytestmark = pytest.mark.slow


def _raw_job(jid: str, task: str, payload: bytes) -> NewJob:
    return NewJob(id=jid, queue=QUEUE, task=task, payload=payload, max_attempts=3)


def test_unserialisable_and_oversized_arguments_are_refused_before_the_store(
    target: Target, tmp_path: Path
) -> None:
    app = target.app()
    try:
        record = app.tasks["chaos.record"]
        with pytest.raises(SerializationError, match="not JSON-serialisable"):
            record.enqueue(str(tmp_path), object())  # type: ignore[arg-type]
        with pytest.raises(SerializationError):
            record.enqueue_many([(str(tmp_path), "fine"), (str(tmp_path), object())])
        with pytest.raises(PayloadTooLarge, match="max_payload_bytes"):
            record.enqueue(str(tmp_path), "x" * (600 * 1024))
        with pytest.raises(ConfigurationError, match="bad job id"):
            record.options(job_id="has{brace}").enqueue(str(tmp_path), "x")
        assert app.store.counts([QUEUE])[0].total == 0  # nothing half-stored
    finally:
        app.close()


def _write_foreign_data(target: Target) -> dict[str, str]:
    """Malformed records written behind calmq's back; returns id -> expected reason word."""
    if target.kind == "redis":
        r = target.admin()
        tag = f"{{{target.prefix}:{QUEUE}}}"
        r.hset(f"{tag}:job:partial", mapping={"state": "ready"})  # no payload, no task
        r.zadd(f"{tag}:ready", {"partial": 0, "ghost": 1})  # ghost: no hash at all
        r.close()
        return {"partial": "corrupt", "ghost": "corrupt"}
    path = target.url.split("///", 1)[1]
    conn = sqlite3.connect(path, isolation_level=None)
    now = int(time.time() * 1000)
    rows = [
        ("textpayload", "chaos.record", "a text payload", 3, 1),
        ("notask", None, b"{}", 3, 1),
        ("badnumbers", "chaos.record", b"{}", "three", 1),
        ("futureschema", "chaos.record", b"{}", 3, 99),
    ]
    for jid, task, payload, max_attempts, v in rows:
        conn.execute(
            "INSERT INTO jobs (queue, id, task, payload, state, attempt, max_attempts, seq,"
            " enqueued_at, run_at, v) VALUES (?, ?, ?, ?, 'ready', 0, ?, 0, ?, ?, ?)",
            (QUEUE, jid, task, payload, max_attempts, now, now, v),
        )
    conn.close()
    return {r[0]: "undeliverable" for r in rows}


def test_undeliverable_jobs_are_dead_lettered_with_a_reason(target: Target, tmp_path: Path) -> None:
    started = time.monotonic()
    logs = tmp_path / "logs"
    logs.mkdir()
    app = target.app()
    try:
        app.store.enqueue([_raw_job("unknown", "no.such.task", b'{"a":[]}')])
        app.store.enqueue([_raw_job("garbage", "chaos.record", b"\xff\xfe not json")])
        app.store.enqueue([_raw_job("wrongshape", "chaos.record", b'{"a": 5}')])
        expected = {"unknown": "UnknownTask", "garbage": "SerializationError",
                    "wrongshape": "SerializationError", **_write_foreign_data(target)}  # fmt: skip
        good = produce(app, job_ids("good", 300), logs, threads=2, batch=20).acked
        with fleet(target, tmp_path / "worker.log", "--burst", "--concurrency", "8") as f:
            assert f.proc.wait(timeout=60) == 0
        wait_done(logs, good, 10)
        reasons = {}
        for jid, word in expected.items():
            info = app.store.get_job(QUEUE, jid)
            assert info is not None and info.state == JobState.DEAD, (jid, info)
            assert info.error and word in info.error, (jid, info.error)
            reasons[jid] = info.error[:50]
        c = check(target, logs, good, expected_dead=len(expected))
    finally:
        app.close()
    result = Result("9 bad input: undeliverable jobs", target.kind, len(good) + len(expected),
                    len(c.lost), c.duplicates, c.stuck, None,
                    seconds=time.monotonic() - started, passed=not c.lost and c.stuck == 0,
                    notes=f"{len(expected)} bad records all dead with a reason; 300 good jobs"
                    " unharmed")  # fmt: skip
    result.extra = {"reasons": reasons}
    save_result(result)
    assert not c.lost and c.stuck == 0


def test_wrong_redis_key_types_give_a_clear_error_and_spare_other_queues(tmp_path: Path) -> None:
    target = Target("redis", tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    app = target.app()
    try:
        r = target.admin()
        r.set(f"{{{target.prefix}:bad}}:ready", "I am a string")
        r.close()
        record = app.tasks["chaos.record"]
        with pytest.raises(StoreError, match=r"foreign data in .*ready"):
            record.options(queue="bad").enqueue(str(logs), "x")
        good = produce(app, job_ids("good", 100), logs, threads=1, batch=20).acked
        with fleet(target, tmp_path / "worker.log", "--queues", "default", "--burst") as f:
            assert f.proc.wait(timeout=60) == 0
        wait_done(logs, good, 10)
        # A worker serving only the broken queue reports it and keeps running.
        with fleet(target, tmp_path / "bad.log", "--queues", "bad") as f:
            wait_until(lambda: "foreign data" in f.output(), 20, "the worker to report it")
            assert f.proc.poll() is None
    finally:
        app.close()
        target.close()


# Regression: Fetcher.claim used to drop jobs already claimed from an earlier queue when a
# later queue's claim raised; they sat leased to nobody until the lease expired.
def test_a_broken_queue_does_not_orphan_jobs_claimed_from_a_healthy_one(tmp_path: Path) -> None:
    target = Target("redis", tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    app = target.app()
    try:
        r = target.admin()
        r.set(f"{{{target.prefix}:bad}}:ready", "I am a string")
        r.close()
        app.tasks["chaos.record"].options(job_id="innocent", retries=0).enqueue(
            str(logs), "innocent"
        )
        with fleet(target, tmp_path / "worker.log", "--queues", "default,bad", "--lease", "1"):
            wait_until(
                lambda: "innocent" in jobs.read_ids(logs)
                or (app.store.get_job(QUEUE, "innocent") or _NoJob).state == JobState.DEAD,
                20, "the innocent job to run or die",
            )  # fmt: skip
        info = app.store.get_job(QUEUE, "innocent")
        assert "innocent" in jobs.read_ids(logs), f"never ran; stored as {info}"
    finally:
        app.close()
        target.close()


class _NoJob:
    state = None


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "calmq", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=30, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://localhost/db", "unsupported store URL"),
        ("sqlite://relative.db", "bad SQLite URL"),
        ("redis://localhost:notaport/0", "bad Redis URL"),
        ("sqlite:////nonexistent-dir/x/calmq.sqlite3", "does not exist"),
    ],
)
def test_invalid_urls_are_clear_errors(url: str, match: str) -> None:
    app = App(url)
    try:
        with pytest.raises(ConfigurationError, match=match):
            _ = app.store
    finally:
        app.close()


def test_invalid_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="pool_size"):
        Settings(pool_size=0)
    with pytest.raises(ConfigurationError, match="command_timeout"):
        Settings(command_timeout=0)
    with pytest.raises(ConfigurationError, match="unknown setting CALMQ_POOLSIZE"):
        Settings.from_env({"CALMQ_POOLSIZE": "4"})
    with pytest.raises(ConfigurationError, match="must be a number"):
        Settings.from_env({"CALMQ_POOL_SIZE": "many"})
    url = f"sqlite:///{tmp_path}/cli.sqlite3"
    env = {"CALMQ_URL": url}
    for args, words in [
        (("--concurrency", "0"), "concurrency must be"),
        (("--queues", "a{b"), "bad queue name"),
        (("--lease", "0"), "lease must be"),
        (("--processes", "0"), "must be >= 1"),
    ]:
        done = _cli("worker", "tests.chaos.jobs:app", *args, env=env)
        assert done.returncode != 0, args
        assert words in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
    done = _cli("worker", "tests.chaos.jobs:app", env={"CALMQ_URL": url, "CALMQ_TYPO": "1"})
    assert done.returncode != 0 and "unknown setting CALMQ_TYPO" in done.stderr
