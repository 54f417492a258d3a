"""The producer API: enqueue variants, validation before any store call, the failure bound."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import gc
import operator
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from calmq import (
    App,
    Call,
    CalmqError,
    ConfigurationError,
    JobState,
    PayloadTooLarge,
    QueueUnavailable,
    SerializationError,
    Settings,
    UnknownTask,
)
from calmq.job import new_job_id, new_job_ids
from tests.redis_server import RedisServer, free_port


@pytest.fixture
def app(store_settings: Settings) -> App:
    application = App(settings=store_settings)
    yield application  # type: ignore[misc]
    application.close()


def test_enqueue_variants(app: App) -> None:
    @app.task(queue="sms", retries=5, priority=5)
    def send_sms(to: str, body: str) -> None: ...

    now = send_sms.enqueue("+31600000000", "hello")
    later = send_sms.enqueue_in(60, "+31600000000", "later")
    later_td = send_sms.enqueue_in(dt.timedelta(minutes=1), "+31600000000", "later")
    at = send_sms.enqueue_at(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), "+316", "at")
    many = send_sms.enqueue_many([("+31a", "a"), ("+31b", "b"), Call(("+31c", "c"), priority=9)])
    assert now.created and now.state == JobState.READY and now.queue == "sms"
    assert {later.state, later_td.state, at.state} == {JobState.SCHEDULED}
    assert [j.state for j in many] == [JobState.READY] * 3
    counts = app.store.counts(["sms"])[0]
    assert (counts.ready, counts.scheduled) == (4, 3)
    info = now.info()
    assert info is not None and info.max_attempts == 6 and info.priority == 5


def test_enqueue_async(app: App) -> None:
    @app.task
    async def sync_crm(account_id: int) -> dict[str, int]:
        return {"id": account_id}

    job = asyncio.run(sync_crm.enqueue_async(42))
    assert job.created and job.task.endswith("sync_crm")


def test_enqueue_with_an_existing_id_returns_the_existing_job(app: App) -> None:
    @app.task
    def noop(x: int) -> None: ...

    first = noop.options(job_id="order-7").enqueue(1)
    again = noop.options(job_id="order-7").enqueue(2)
    assert first.created and not again.created and again.id == "order-7"
    assert app.store.counts(["default"])[0].ready == 1


DEAD_URL = f"redis://127.0.0.1:{free_port()}/0"


def test_bad_input_is_rejected_before_any_store_call() -> None:
    # The store URL points at nothing: reaching the store would raise QueueUnavailable.
    app = App(settings=Settings(url=DEAD_URL, max_payload_bytes=1024))

    @app.task
    def job(x: object) -> None: ...

    with pytest.raises(SerializationError, match="not JSON-serialisable"):
        job.enqueue(object())
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        job.enqueue("x" * 5000)
    with pytest.raises(UnknownTask):
        app.enqueue("no.such.task")
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        job.enqueue_at(dt.datetime(2030, 1, 1), 1)
    with pytest.raises(ConfigurationError, match="priority"):
        job.options(priority=10**6).enqueue(1)
    with pytest.raises(ConfigurationError, match="queue name"):
        job.options(queue="bad {queue}").enqueue(1)
    with pytest.raises(ConfigurationError, match="delay"):
        job.enqueue_in(-5, 1)
    with pytest.raises(ConfigurationError, match="already registered"):
        app.task(name=job.name)(lambda: None)
    app.close()


def test_enqueue_raises_queue_unavailable_within_the_bound_when_redis_is_gone() -> None:
    server = RedisServer().start()
    app = App(settings=Settings(url=server.url, key_prefix="bound"))

    @app.task
    def job(x: int) -> None: ...

    job.enqueue(1)  # connected and working
    server.kill()
    try:
        for _ in range(3):  # every call fails fast: no pile-up, no hang
            started = time.monotonic()
            with pytest.raises(QueueUnavailable) as caught:
                job.enqueue(2)
            assert time.monotonic() - started < 1.0
            assert caught.value.__cause__ is not None
    finally:
        app.close()
        server.cleanup()


def test_settings_from_env_rejects_unknown_names() -> None:
    with pytest.raises(ConfigurationError, match="CALMQ_POOL_SIZ"):
        Settings.from_env({"CALMQ_POOL_SIZ": "3"})
    assert Settings.from_env({"CALMQ_POOL_SIZE": "3"}).pool_size == 3


def test_default_store_is_sqlite_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALMQ_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    app = App()
    assert app.url == "sqlite:///calmq.sqlite3"
    assert app.store.display_url.endswith("calmq.sqlite3")
    app.close()
    assert (tmp_path / "calmq.sqlite3").exists()


def test_task_signatures_are_checked_by_mypy(tmp_path: Path) -> None:
    source = tmp_path / "typed_usage.py"
    source.write_text(
        textwrap.dedent("""
        from calmq import App
        app = App()

        @app.task(queue="sms")
        def send_sms(to: str, body: str) -> None: ...

        send_sms.enqueue("+31", "ok")
        send_sms.enqueue(1, 2)
    """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert 'Argument 1 to "enqueue" of "Task" has incompatible type "int"' in result.stdout
    assert result.stdout.count("error:") == 2  # both arguments, nothing else


def test_job_ids_keep_their_format_and_sort_by_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_job_id() for _ in range(1000)] + new_job_ids(1000) + new_job_ids(1)
    after = time.time_ns() // 1_000_000
    assert all(len(i) == 26 and i == i.lower() and i.isalnum() for i in ids)
    assert len(set(ids)) == len(ids)
    # The first 9 characters encode the creation millisecond: ids sort by it.
    assert [i[:9] for i in ids] == sorted(i[:9] for i in ids)
    for text in ids:
        # Exactly base32hex of 16 bytes: the 6-byte ms time, then 10 random bytes.
        raw = base64.b32hexdecode(text.upper() + "======")
        assert base64.b32hexencode(raw).decode()[:26].lower() == text
        assert before <= int.from_bytes(raw[:6]) <= after
    # All 80 random bits vary: no bit position is stuck across 2000 ids.
    randoms = [int.from_bytes(base64.b32hexdecode(i.upper() + "======")[6:]) for i in ids]
    varying = functools.reduce(operator.or_, (r ^ randoms[0] for r in randoms))
    assert varying == 2**80 - 1


def test_per_call_options_are_validated_on_every_call_and_reused_plans_stay_right() -> None:
    app = App(settings=Settings(url=DEAD_URL))  # never reached: every call fails validation

    @app.task(queue="q1", priority=3)
    def job(x: int) -> None: ...

    bound = job.options(queue="q2", priority=7)
    assert job.plan(bound.call_options) is job.plan(bound.call_options)  # cached by identity
    plan = job.plan(bound.call_options)
    assert (plan.queue, plan.priority, plan.max_attempts, plan.controls) == ("q2", 7, 4, None)
    for _ in range(2):  # a cached plan never skips the per-call checks
        with pytest.raises(ConfigurationError, match="priority"):
            job.enqueue_many([Call((1,), priority=5000)])
        with pytest.raises(ConfigurationError, match="bad job id"):
            job.enqueue_many([Call((1,), job_id="a{b}")])
        with pytest.raises(ConfigurationError, match="queue name"):
            job.options(queue="a b").enqueue(1)
    app.close()


def test_job_handles_refer_to_their_app_weakly(tmp_path: Path) -> None:
    app = App(settings=Settings(url=f"sqlite:///{tmp_path}/weak.sqlite3"))

    @app.task
    def work(x: int) -> None: ...

    job = work.enqueue(1)
    assert job.app is app and job.info() is not None
    assert not gc.is_tracked(job)  # no strong reference: never part of a cycle
    app.close()
    del app, work
    gc.collect()
    with pytest.raises(CalmqError, match="the App that enqueued it is gone"):
        job.info()
