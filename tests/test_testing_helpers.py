"""calmq.testing: what users get to test their own code without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from calmq import App, Settings
from calmq.testing import eager, enqueued, run_until_idle
from tests.jobs import lines, make_app


@pytest.fixture
def app() -> App:
    application = make_app(Settings(url="sqlite://:memory:"))
    yield application  # type: ignore[misc]
    application.close()


def test_enqueued_lists_waiting_jobs_decoded(app: App, tmp_path: Path) -> None:
    app.enqueue("append", "a.txt", "one")
    app.get_task("append").options(queue="other", delay=60).enqueue("b.txt", "two")
    jobs = enqueued(app)
    assert {(j.queue, tuple(j.args)) for j in jobs} == {
        ("default", ("a.txt", "one")),
        ("other", ("b.txt", "two")),
    }
    assert [j.args for j in enqueued(app, "default", task="append")] == [["a.txt", "one"]]
    assert enqueued(app, "default", task="flaky") == []


def test_run_until_idle_runs_everything_ready(app: App, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    for i in range(5):
        app.enqueue("append", str(out), str(i))
    stats = run_until_idle(app)
    assert stats.succeeded == 5
    assert sorted(lines(out)) == [str(i) for i in range(5)]
    assert enqueued(app) == []


def test_eager_runs_jobs_at_enqueue_time_and_propagates_errors(app: App, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with eager(app):
        app.enqueue("append", str(out), "now")
        app.enqueue("append_async", str(out), "async now")
        with pytest.raises(ValueError, match="never succeed"):
            app.enqueue("always_fails", str(tmp_path / "x"))
    assert lines(out) == ["now", "async now"]
    assert enqueued(app) == []
