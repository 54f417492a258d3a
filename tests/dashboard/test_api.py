"""Every JSON endpoint of the dashboard, over HTTP, against a SQLite file and redis-server."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import httpx
import msgspec
import pytest

from calmq import App
from calmq.dashboard.sampler import Sampler, build_sample, worker_rates
from calmq.job import JobState, QueueCounts
from tests.dashboard.live import LiveServer, make_dead, wait_until, worker_info

Serve = Callable[..., LiveServer]


@contextlib.contextmanager
def csrf_client(server: LiveServer) -> Iterator[httpx.Client]:
    """A client that holds the CSRF cookie and sends it back as the header."""
    with server.client() as client:
        client.headers["X-CSRF-Token"] = client.get("/api/csrf").json()["token"]
        yield client


def test_overview_counts_and_controls(app: App, serve: Serve) -> None:
    app.enqueue("append", "/dev/null", "a")
    app.enqueue("append", "/dev/null", "b")
    app.tasks["append"].options(queue="sms", delay=60).enqueue("/dev/null", "later")
    make_dead(app.store, "default")
    app.pause("sms")
    with serve(app).client() as client:
        body = client.get("/api/overview").json()
    assert body["store"] == app.store.display_url
    assert body["decodes_arguments"] is True
    queues = {q["queue"]: q for q in body["queues"]}
    assert queues["default"] == {
        "queue": "default", "ready": 1, "scheduled": 0, "running": 0, "dead": 1,
        "paused": False, "max_ready": None, "overflow": "reject",
    }  # fmt: skip
    assert queues["sms"]["scheduled"] == 1 and queues["sms"]["paused"] is True
    assert body["workers_alive"] == 0


def test_jobs_list_filters_pages_and_validates(app: App, serve: Serve) -> None:
    for i in range(5):
        app.enqueue("append", "/dev/null", str(i))
    for _ in range(2):
        app.enqueue("always_fails", "/dev/null")
    with serve(app).client() as client:
        page = client.get("/api/jobs", params={"queue": "default", "state": "ready", "limit": 3})
        assert page.status_code == 200
        first = page.json()
        assert len(first["jobs"]) == 3 and first["next_offset"] == 3
        rest = client.get("/api/jobs", params={"queue": "default", "offset": 3, "limit": 10})
        assert len(rest.json()["jobs"]) == 4 and rest.json()["next_offset"] is None
        ids = [j["id"] for j in first["jobs"] + rest.json()["jobs"]]
        assert len(set(ids)) == 7
        found = client.get("/api/jobs", params={"queue": "default", "task": "FAILS"}).json()
        assert [j["task"] for j in found["jobs"]] == ["always_fails", "always_fails"]
        assert (
            client.get("/api/jobs", params={"queue": "default", "state": "dead"}).json()["jobs"]
            == []
        )
        bad_state = client.get("/api/jobs", params={"queue": "default", "state": "nope"})
        assert bad_state.status_code == 400 and "state must be" in bad_state.json()["error"]
        assert client.get("/api/jobs", params={"queue": "a b"}).status_code == 400
        assert client.get("/api/jobs", params={"queue": "q", "limit": 0}).status_code == 400
        assert client.get("/api/jobs", params={"queue": "q", "limit": "x"}).status_code == 400


def test_job_detail_decodes_arguments_with_the_app(app: App, serve: Serve) -> None:
    job = app.enqueue("append", "/tmp/out.txt", "hello")
    app.enqueue("always_fails", "/tmp/f")
    dead_id = make_dead(app.store, "default")  # the first ready one: ``job``
    assert dead_id == job.id
    with serve(app).client() as client:
        detail = client.get("/api/job", params={"queue": "default", "id": job.id}).json()
        missing = client.get("/api/job", params={"queue": "default", "id": "nope"})
    assert detail["arguments"] == {"args": ["/tmp/out.txt", "hello"], "kwargs": {},
                                   "timeout": None}  # fmt: skip
    assert detail["state"] == "dead" and detail["attempt"] == 1 and detail["max_attempts"] == 4
    assert detail["error"] == "ValueError: boom"
    assert detail["traceback"].startswith("Traceback (most recent call last):")
    assert '"hello"' in detail["raw_payload"] and detail["payload_bytes"] > 0
    assert missing.status_code == 404


def test_job_detail_with_a_bare_store_shows_the_raw_payload(app: App, serve: Serve) -> None:
    job = app.enqueue("append", "/tmp/out.txt", "hello")
    with serve(app.store).client() as client:
        detail = client.get("/api/job", params={"queue": "default", "id": job.id}).json()
        overview = client.get("/api/overview").json()
    assert detail["arguments"] is None and detail["decode_error"] is None
    assert '"/tmp/out.txt"' in detail["raw_payload"] and '"hello"' in detail["raw_payload"]
    assert overview["decodes_arguments"] is False


def test_search_by_id_across_queues(app: App, serve: Serve) -> None:
    app.tasks["append"].options(queue="sms", job_id="shared-id").enqueue("/dev/null", "x")
    app.tasks["append"].options(queue="mail", job_id="shared-id").enqueue("/dev/null", "y")
    with serve(app).client() as client:
        both = client.get("/api/search", params={"id": "shared-id"}).json()
        one = client.get("/api/search", params={"id": "shared-id", "queue": "sms"}).json()
        none = client.get("/api/search", params={"id": "other"}).json()
        empty = client.get("/api/search", params={"id": " "})
    assert sorted(j["queue"] for j in both["jobs"]) == ["mail", "sms"]
    assert [j["queue"] for j in one["jobs"]] == ["sms"]
    assert none["jobs"] == [] and empty.status_code == 400


def test_dead_list_replay_and_purge_single_and_bulk(app: App, serve: Serve) -> None:
    for _ in range(4):
        app.enqueue("always_fails", "/dev/null")
    app.tasks["append"].options(queue="sms").enqueue("/dev/null", "x")
    dead = [make_dead(app.store, "default") for _ in range(4)]
    sms_dead = make_dead(app.store, "sms", error="RuntimeError: " + "long " * 200 + "\nline 2")
    server = serve(app)
    with csrf_client(server) as client:
        listing = client.get("/api/dead").json()
        assert listing["total"] == 5 and {j["id"] for j in listing["jobs"]} == {*dead, sms_dead}
        sms_row = next(j for j in listing["jobs"] if j["id"] == sms_dead)
        assert "\n" not in sms_row["error"] and len(sms_row["error"]) <= 300
        assert client.get("/api/dead", params={"queue": "sms"}).json()["total"] == 1

        one = client.post("/api/dead/replay", json={"queue": "default", "ids": [dead[0]]})
        assert one.json() == {"replayed": 1}
        assert app.store.get_job("default", dead[0]).state is JobState.READY  # type: ignore[union-attr]
        gone = client.post("/api/dead/purge", json={"queue": "default", "ids": [dead[1]]})
        assert gone.json() == {"purged": 1} and app.store.get_job("default", dead[1]) is None
        # ids without a queue: looked for in every queue
        assert client.post("/api/dead/replay", json={"ids": [sms_dead]}).json()["replayed"] == 1
        # neither ids nor all: refused, never "everything"
        refused = client.post("/api/dead/purge", json={"queue": "default"})
        assert refused.status_code == 400
        assert client.post("/api/dead/purge", json={"ids": "x"}).status_code == 400
        assert client.post("/api/dead/purge", json={"all": True, "ids": ["a"]}).status_code == 400
        assert client.post("/api/dead/replay", json={"all": True}).json() == {"replayed": 2}
    assert app.store.counts(["default"])[0].dead == 0
    assert app.store.counts(["default"])[0].ready == 3


def test_bulk_purge_all_of_one_queue(app: App, serve: Serve) -> None:
    app.enqueue("always_fails", "/dev/null")
    app.tasks["append"].options(queue="sms").enqueue("/dev/null", "x")
    make_dead(app.store, "default")
    make_dead(app.store, "sms")
    with csrf_client(serve(app)) as client:
        assert client.post("/api/dead/purge", json={"queue": "sms", "all": True}).json() == {
            "purged": 1
        }
    assert [c.dead for c in app.store.counts(["default", "sms"])] == [1, 0]


def test_pause_resume_and_cancel(app: App, serve: Serve) -> None:
    job = app.enqueue("append", "/dev/null", "x")
    with csrf_client(serve(app)) as client:
        paused = client.post("/api/queues/pause", json={"queue": "default"})
        assert paused.json() == {"queue": "default", "paused": True}
        assert app.store.queue_config("default").paused
        resumed = client.post("/api/queues/resume", json={"queue": "default"})
        assert resumed.json() == {"queue": "default", "paused": False}
        assert client.post("/api/queues/pause", json={"queue": "a{b}"}).status_code == 400
        cancel = client.post("/api/jobs/cancel", json={"queue": "default", "id": job.id})
        assert cancel.json() == {"queue": "default", "id": job.id, "outcome": "cancelled"}
        again = client.post("/api/jobs/cancel", json={"queue": "default", "id": job.id})
        assert again.json()["outcome"] == "not_cancellable"
        assert client.post("/api/jobs/cancel", json={"queue": "default"}).status_code == 400
        form = client.post("/api/queues/pause", data={"queue": "default"})
        assert form.status_code == 415  # an HTML form cannot post JSON
    assert app.store.get_job("default", job.id).state is JobState.CANCELLED  # type: ignore[union-attr]


def test_workers_and_metrics(app: App, serve: Serve) -> None:
    app.enqueue("append", "/dev/null", "x")
    store = app.store
    store.heartbeat(worker_info("w1", ["default"], claimed=10, succeeded=10, retried=0, dead=0,
                                wait_p50_ms=3, wait_p99_ms=40, run_p50_ms=5,
                                run_p99_ms=90))  # fmt: skip
    sampler = Sampler(store, interval=60)
    server = serve(app, sampler=sampler)
    wait_until(sampler.samples, what="the sample taken at startup")
    with server.client() as client:
        workers = client.get("/api/workers").json()
        first_t = sampler.sample().t_ms
        wait_until(lambda: store.now_ms() > first_t + 10, what="the store clock to move")
        store.heartbeat(worker_info("w1", ["default"], claimed=30, succeeded=28, retried=1,
                                    dead=1, wait_p50_ms=4, wait_p99_ms=50, run_p50_ms=6,
                                    run_p99_ms=95))  # fmt: skip
        sampler.sample()
        metrics = client.get("/api/metrics").json()
    sampler.stop()
    [w] = workers["workers"]
    assert w["id"] == "w1" and w["host"] == "web-1" and w["pid"] == 4242
    assert w["queues"] == ["default"] and w["concurrency"] == 16 and w["running"] == []
    assert w["versions"]["calmq"] == "0.1.0" and w["stats"]["succeeded"] == 10
    assert 0 <= workers["now_ms"] - w["seen_at_ms"] < 60_000
    assert metrics["interval_s"] == 60
    first, second = metrics["samples"][-2:]
    assert first["queues"]["default"]["ready"] == 1 and first["workers"] == 1
    assert second["rates"]["succeeded"] > 0 and second["rates"]["dead"] > 0
    assert second["queues"]["default"]["throughput"] > 0
    assert second["latency"] == {"wait_p50_ms": 4, "wait_p99_ms": 50, "run_p50_ms": 6,
                                 "run_p99_ms": 95}  # fmt: skip


def test_sample_throughput_from_heartbeat_deltas() -> None:
    """Rates are counter deltas over the time between two heartbeats; a sample between two
    heartbeats keeps the last rates; a restart counts from zero."""
    a0 = msgspec.structs.replace(worker_info("a", ["q1", "q2"], succeeded=100, claimed=100,
                                             wait_p50_ms=2), seen_at_ms=10_000)  # fmt: skip
    b0 = msgspec.structs.replace(worker_info("b", ["q2"], succeeded=50, claimed=50),
                                 seen_at_ms=10_000)  # fmt: skip
    first = worker_rates({"a": a0, "b": b0}, {})
    assert all(r == 0 for w in first.values() for r in w.rates.values())
    a1 = msgspec.structs.replace(a0, stats={**a0.stats, "succeeded": 120, "dead": 2},
                                 seen_at_ms=12_000)  # fmt: skip
    b1 = msgspec.structs.replace(b0, stats={**b0.stats, "succeeded": 5}, seen_at_ms=11_000)
    second = worker_rates({"a": a1, "b": b1}, first)
    counts = [QueueCounts("q1", ready=3), QueueCounts("q2", running=2)]
    sample = build_sample(12_500, counts, second)
    assert sample.rates == {"succeeded": 10 + 5, "retried": 0, "dead": 1}
    assert sample.queues["q1"]["throughput"] == pytest.approx(11)
    assert sample.queues["q2"]["throughput"] == pytest.approx(16)
    assert sample.queues["q1"]["ready"] == 3 and sample.queues["q2"]["running"] == 2
    assert sample.latency["wait_p50_ms"] == 1 and sample.workers == 2
    # No new heartbeat since: the rates stand (no saw-tooth between heartbeats).
    assert build_sample(13_000, counts, worker_rates({"a": a1, "b": b1}, second)).rates == (
        sample.rates
    )


def test_store_errors_are_503(sqlite_app: App, serve: Serve) -> None:
    server = serve(sqlite_app)
    sqlite_app.store.close()  # every call now fails with a calmq error
    with server.client() as client:
        response = client.get("/api/overview")
    assert response.status_code == 503 and "error" in response.json()
