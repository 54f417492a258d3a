"""App-level controls: task defaults, per-call options, keys from arguments, and the errors
raised above the store seam (DuplicateJob, QueueFull, ConfigurationError)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from calmq import App, JobState, Settings
from calmq.errors import ConfigurationError, DuplicateJob, QueueFull
from calmq.job import CancelOutcome, EnqueueOutcome
from calmq.limits import ConcurrencyLimit, QueueLimit, RateLimit, Throttle, Unique


@pytest.fixture
def app(store_settings: Settings) -> Iterator[App]:
    application = App(settings=store_settings)
    try:
        yield application
    finally:
        application.close()


def test_unique_from_arguments_and_debounce(app: App) -> None:
    @app.task(unique=Unique(key="crm:{account}", policy="replace"))
    def sync_crm(account: int, fields: dict[str, str]) -> None: ...

    first = sync_crm.enqueue(42, {"a": "1"})
    second = sync_crm.options(delay=30).enqueue(account=42, fields={"a": "2"})
    assert (second.id, second.outcome, second.duplicate_of) == (
        first.id, EnqueueOutcome.REPLACED, first.id,
    )  # fmt: skip
    assert second.state == JobState.SCHEDULED
    assert sync_crm.enqueue(7, {}).created
    info = first.info()
    assert info is not None
    assert b'"2"' in info.payload


def test_default_unique_key_hashes_the_arguments(app: App) -> None:
    @app.task(unique=Unique())
    def refresh(x: int) -> None: ...

    assert refresh.enqueue(1).created
    assert refresh.enqueue(1).outcome is EnqueueOutcome.DUPLICATE
    assert refresh.enqueue(2).created


def test_raise_policy_raises_duplicate_job(app: App) -> None:
    @app.task(unique=Unique(key=lambda order: f"order:{order}", policy="raise"))
    def ship(order: str) -> None: ...

    first = ship.enqueue("o1")
    with pytest.raises(DuplicateJob) as caught:
        ship.enqueue("o1")
    assert caught.value.existing_id == first.id


def test_throttle_handle_says_throttled(app: App) -> None:
    @app.task(throttle=Throttle(2, 60, key="{user}"))
    def notify(user: str) -> None: ...

    jobs = [notify.enqueue("u1") for _ in range(3)]
    assert [j.throttled for j in jobs] == [False, False, True]
    assert jobs[2].state == JobState.DROPPED
    assert notify.enqueue("u2").created


def test_bounded_queue_raises_queue_full(app: App) -> None:
    @app.task(queue="bounded")
    def work() -> None: ...

    app.set_queue_limit("bounded", QueueLimit(1))
    work.enqueue()
    with pytest.raises(QueueFull):
        work.enqueue()
    assert app.queue_config("bounded").max_ready == 1
    app.set_queue_limit("bounded", None)
    assert work.enqueue().created


def test_rate_and_concurrency_limits_travel_to_the_store(app: App) -> None:
    @app.task(rate_limit=RateLimit(1, 60, key="{tenant}"), concurrency_limit=ConcurrencyLimit(5))
    def send(tenant: str) -> None: ...

    send.enqueue("a")
    send.enqueue("a")
    send.options(rate_limit=RateLimit(1, 60, key="other")).enqueue("a")
    claimed = app.store.claim("default", limit=10, lease_ms=60_000).jobs
    assert len(claimed) == 2  # one per rate key


def test_pause_resume_and_cancel(app: App) -> None:
    @app.task
    def job() -> None: ...

    handle = job.enqueue()
    app.pause("default")
    assert app.queue_config("default").paused
    app.resume("default")
    assert handle.cancel() is CancelOutcome.CANCELLED
    assert app.cancel(handle.id) is CancelOutcome.NOT_CANCELLABLE


def test_configuration_errors(app: App) -> None:
    @app.task(fairness_key="{tenant}")
    def fair(tenant: str) -> None: ...

    with pytest.raises(ConfigurationError):
        fair.enqueue()  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError):
        fair.options(bogus=1)
    with pytest.raises(ConfigurationError):
        app.set_queue_limit("default", 5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        app.pause("bad queue")

    @app.task(unique=Unique(key="{missing}"))
    def broken(x: int) -> None: ...

    with pytest.raises(ConfigurationError):
        broken.enqueue(1)
