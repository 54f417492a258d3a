"""The calmq command line, run as a real subprocess against real stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calmq import JobState, Settings
from tests.jobs import lines, make_app
from tests.redis_server import RedisServer, unique_prefix

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite-file", "redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return Settings(url=server.url, key_prefix=unique_prefix(request.node.name))
    return Settings(url=f"sqlite:///{tmp_path}/calmq.sqlite3")


def calmq(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CALMQ_URL=settings.resolved_url(), CALMQ_KEY_PREFIX=settings.key_prefix)
    result = subprocess.run(
        [sys.executable, "-m", "calmq", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"calmq {args} exited {result.returncode}: {result.stderr}")
    return result


def test_enqueue_info_worker_dead_replay_purge(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    result = calmq(settings, "enqueue", "tests.jobs:app", "append", json.dumps(str(out)), '"hi"')
    assert result.stdout.startswith("enqueued: ")
    calmq(settings, "enqueue", "tests.jobs:app", "always_fails", json.dumps(str(tmp_path / "f")))
    info = json.loads(calmq(settings, "info", "--json").stdout)
    assert info["queues"] == [
        {"queue": "default", "ready": 2, "scheduled": 0, "running": 0, "dead": 0,
         "paused": False, "max_ready": None, "overflow": "reject"}
    ]  # fmt: skip
    table = calmq(settings, "info").stdout
    assert "default" in table and "ready" in table

    # always_fails has retries=2 with a short backoff: run bursts until it is dead.
    app = make_app(settings)
    try:
        for _ in range(20):
            calmq(settings, "worker", "tests.jobs:app", "--burst")
            if app.store.counts(["default"])[0].dead == 1:
                break
        assert lines(out) == ["hi"]
        dead = json.loads(calmq(settings, "dead", "list", "--json").stdout)
        assert len(dead) == 1 and "never succeed" in dead[0]["error"]
        job_id = dead[0]["id"]
        assert "replayed 1 job(s)" in calmq(settings, "dead", "replay", job_id).stdout
        info_after = app.store.get_job("default", job_id)
        assert info_after is not None and info_after.state == JobState.READY
        missing = calmq(settings, "dead", "replay", "no-such-id", check=False)
        assert missing.returncode == 1 and "not dead jobs" in missing.stderr
    finally:
        app.close()


def test_dead_purge_all(settings: Settings, tmp_path: Path) -> None:
    app = make_app(settings)
    try:
        job = app.enqueue("append", "x", "y")
        claimed = app.store.claim("default", limit=1, lease_ms=5000).jobs[0]
        app.store.fail("default", claimed.lease, error="boom", retry_in_ms=None)
        assert "purged 1 job(s)" in calmq(settings, "dead", "purge", "--yes").stdout
        assert app.store.get_job("default", job.id) is None
    finally:
        app.close()


def test_clear_errors_for_bad_input(settings: Settings) -> None:
    bad_json = calmq(settings, "enqueue", "tests.jobs:app", "append", "not-json", check=False)
    assert bad_json.returncode == 2 and "is not JSON" in bad_json.stderr
    bad_app = calmq(settings, "worker", "no_such_module:app", check=False)
    assert bad_app.returncode == 2 and "cannot import" in bad_app.stderr
    bad_task = calmq(settings, "enqueue", "tests.jobs:app", "nope", check=False)
    assert bad_task.returncode == 2 and "no single task named" in bad_task.stderr
    bad_url = calmq(settings, "info", "--url", "mysql://x", check=False)
    assert bad_url.returncode == 1 and "unsupported store URL" in bad_url.stderr


def test_demo_runs_on_the_embedded_store(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALMQ_")}
    result = subprocess.run(
        [sys.executable, "-m", "calmq", "demo", "--requests", "150", "--rate", "500"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "calmq demo summary" in result.stdout
    assert "sqlite" in result.stdout
    assert "wait time p50 / p99" in result.stdout


def test_doctor_fails_on_an_evicting_redis_and_passes_sqlite(tmp_path: Path) -> None:
    server = RedisServer("--maxmemory-policy", "allkeys-lru").start()
    try:
        settings = Settings(url=server.url)
        result = calmq(settings, "doctor", check=False)
        assert result.returncode == 1
        assert "[FAIL] maxmemory-policy: allkeys-lru" in result.stdout
        assert "fix: CONFIG SET maxmemory-policy noeviction" in result.stdout
        checks = json.loads(calmq(settings, "doctor", "--json", check=False).stdout)
        assert {c["name"] for c in checks} >= {"redis version", "persistence", "clock skew"}
    finally:
        server.cleanup()
    sqlite = Settings(url=f"sqlite:///{tmp_path}/doc.sqlite3")
    result = calmq(sqlite, "doctor")
    assert "[ok  ] journal mode: wal" in result.stdout
    assert "move to Redis" in result.stdout


def test_pause_resume_cancel_limit_and_unique(settings: Settings, tmp_path: Path) -> None:
    path = json.dumps(str(tmp_path / "out.txt"))
    first = calmq(settings, "enqueue", "tests.jobs:app", "append", path, '"a"', "--unique-key",
                  "crm:42")  # fmt: skip
    assert first.stdout.startswith("enqueued: ")
    job_id = first.stdout.split()[1]
    dup = calmq(settings, "enqueue", "tests.jobs:app", "append", path, '"b"', "--unique-key",
                "crm:42")  # fmt: skip
    assert dup.stdout.startswith(f"duplicate of: {job_id} ")
    assert calmq(settings, "pause", "default").stdout.strip() == "paused: default"
    assert calmq(settings, "limit", "default", "--max-ready", "5").returncode == 0
    info = json.loads(calmq(settings, "info", "--json").stdout)["queues"][0]
    assert (info["paused"], info["max_ready"], info["ready"]) == (True, 5, 1)
    assert "yes" in calmq(settings, "info").stdout
    calmq(settings, "resume", "default")
    calmq(settings, "limit", "default")
    assert calmq(settings, "cancel", job_id).stdout.strip() == f"cancelled: {job_id}"
    again = calmq(settings, "cancel", job_id, check=False)
    assert again.returncode == 1 and "not_cancellable" in again.stdout
    info = json.loads(calmq(settings, "info", "--json").stdout)["queues"][0]
    assert (info["paused"], info["max_ready"], info["ready"]) == (False, None, 0)


def test_commands_load_their_modules_only_when_used() -> None:
    """`calmq worker` imports none of the other commands' modules (the benchmark runner,
    SQLite checks and the rest would cost every worker memory and start-up time); each of
    them is still listed, and loads when run."""
    from calmq.cli.main import LAZY_COMMANDS

    probe = (  # the console script's own entry point, as `calmq worker --help` runs it
        "import sys\n"
        "from calmq.cli.main import LAZY_COMMANDS, main\n"
        "sys.argv = ['calmq', 'worker', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print(sorted(m for m in [*LAZY_COMMANDS.values(), 'sqlite3'] if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=True)  # fmt: skip
    assert loaded.stdout.splitlines()[-1] == "[]", loaded.stdout + loaded.stderr
    listed = calmq(Settings(), "--help").stdout
    for name in LAZY_COMMANDS:
        assert f"  {name} " in listed, listed
        assert calmq(Settings(), name, "--help").stdout.startswith(f"Usage: calmq {name}")
