"""Tests of the SQLite store on real files: pragmas, migrations, start-up checks, lock
contention (BUSY), disk full, corrupt rows, several real processes, and basic behaviour.

Nothing is mocked. Waits poll with generous deadlines instead of sleeping blindly.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from calmq.errors import ConfigurationError, QueueUnavailable
from calmq.job import EnqueueOutcome, FailOutcome, JobState, Lease, NewJob, WorkerInfo, lane_of
from calmq.settings import Settings
from calmq.stores import open_store
from calmq.stores.base import CAP_MULTI_PROCESS, Store
from calmq.stores.sqlite.migrate import default_directory, discover, migrate
from calmq.stores.sqlite.registry import PRUNE_LIMIT
from calmq.stores.sqlite.store import SqliteStore

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 10.0) -> T:
    """Poll ``check`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, "condition not met before the deadline"
            return value
        time.sleep(0.005)


def job(job_id: str, queue: str = "q", **kw: object) -> NewJob:
    return NewJob(id=job_id, queue=queue, task="t", payload=b"p-" + job_id.encode(), **kw)  # type: ignore[arg-type]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "calmq.sqlite3")


@pytest.fixture
def store(db_path: str) -> Iterator[SqliteStore]:
    s = SqliteStore(db_path, settings=Settings(sqlite_busy_timeout=0.3))
    try:
        yield s
    finally:
        s.close()


# ---------------------------------------------------------------- set-up and pragmas


def test_pragmas_and_identity(store: SqliteStore, db_path: str) -> None:
    conn = store._thread_connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 300
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.isolation_level is None
    assert store.capabilities == frozenset({CAP_MULTI_PROCESS})
    assert store.display_url == f"sqlite:///{db_path}"
    assert isinstance(store, Store)
    with contextlib.closing(sqlite3.connect(db_path)) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_memory_store_and_open_store() -> None:
    s = open_store("sqlite://:memory:")
    try:
        assert isinstance(s, SqliteStore)
        assert s.capabilities == frozenset()
        s.enqueue([job("a")])
        assert [j.id for j in s.claim("q", limit=5, lease_ms=1000).jobs] == ["a"]
    finally:
        s.close()
        s.close()  # idempotent


def test_migrations_recorded_and_reopen_is_noop(store: SqliteStore, db_path: str) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT version, applied_at FROM calmq_migrations").fetchall()
        assert [r[0] for r in rows] == [1, 2, 3, 4]
        assert rows[0][1] > 1_600_000_000_000
        conn.isolation_level = None
        assert migrate(conn) == []
    SqliteStore(db_path).close()
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM calmq_migrations").fetchone()[0] == 4


def test_older_schema_is_upgraded(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    shutil.copy(Path(str(default_directory())) / "0001_initial.sql", migrations)
    with contextlib.closing(sqlite3.connect(tmp_path / "db", isolation_level=None)) as conn:
        assert migrate(conn, migrations) == [1]  # written by the "old" calmq
        (migrations / "0002_add_note.sql").write_text(
            "-- a later version\nALTER TABLE jobs ADD COLUMN note TEXT;\n"
            "CREATE TABLE extra (a INTEGER);\n"
        )
        assert migrate(conn, migrations) == [2]
        assert migrate(conn, migrations) == []
        versions = [r[0] for r in conn.execute("SELECT version FROM calmq_migrations")]
        assert versions == [1, 2]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
        assert "note" in columns


def test_version_1_file_with_jobs_upgrades_to_limits(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    shutil.copy(Path(str(default_directory())) / "0001_initial.sql", migrations)
    db = str(tmp_path / "old.sqlite3")
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert migrate(conn, migrations) == [1]
        conn.execute(
            "INSERT INTO jobs (queue, id, task, payload, state, seq, enqueued_at, run_at)"
            " VALUES ('default', 'old', 't', x'00', 'ready', 1, 0, 0)"
        )
    store = SqliteStore(db)  # applies 0002
    try:
        claimed = store.claim("default", limit=5, lease_ms=1000).jobs
        assert [c.id for c in claimed] == ["old"]
    finally:
        store.close()


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    shutil.copy(Path(str(default_directory())) / "0001_initial.sql", migrations)
    (migrations / "0002_broken.sql").write_text("CREATE TABLE ok (a);\nNOT SQL AT ALL;\n")
    with contextlib.closing(sqlite3.connect(tmp_path / "db", isolation_level=None)) as conn:
        with pytest.raises(sqlite3.Error):
            migrate(conn, migrations)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "ok" not in tables
        assert "jobs" not in tables


def test_migration_numbering_gap_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x);")
    (tmp_path / "0003_c.sql").write_text("CREATE TABLE c (x);")
    with pytest.raises(ConfigurationError, match="without gaps"):
        discover(tmp_path)


def test_newer_schema_is_refused(store: SqliteStore, db_path: str) -> None:
    store.close()
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("INSERT INTO calmq_migrations VALUES (99, 0)")
    with pytest.raises(ConfigurationError, match="newer calmq"):
        SqliteStore(db_path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        SqliteStore(str(tmp_path / "nope" / "db.sqlite3"))


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database file at all " * 200)
    with pytest.raises(ConfigurationError, match="not a calmq SQLite database"):
        SqliteStore(str(path))


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs at ``where`` (needs root); skips the test where mounting is not allowed."""
    where.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)]
    if os.geteuid() != 0 or subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_not_writable_directory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ConfigurationError, match="not writable"):
            SqliteStore(str(ro / "db.sqlite3"))
        return
    # Root ignores mode bits: use a read-only file system instead.
    with (
        mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as ro,
        pytest.raises(ConfigurationError, match="not writable"),
    ):
        SqliteStore(str(ro / "db.sqlite3"))


# ---------------------------------------------------------------- failure modes


def test_busy_is_bounded_and_recovers(store: SqliteStore, db_path: str) -> None:
    store.enqueue([job("before")])
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(QueueUnavailable) as info:
            store.enqueue([job("blocked")])
        elapsed = time.monotonic() - started
        assert info.value.reason == "busy"
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert 0.25 <= elapsed < 0.3 + 1.0
        # Readers are not blocked by the writer (WAL), and the idle-worker probe needs
        # no write lock: an empty claim on another queue answers at once.
        assert store.get_job("q", "before") is not None
        assert store.claim("empty", limit=10, lease_ms=1000).jobs == []
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert store.enqueue([job("blocked")])[0].created
    assert {j.id for j in store.claim("q", limit=10, lease_ms=1000).jobs} == {"before", "blocked"}


def fill_until_full(store: SqliteStore) -> tuple[set[str], QueueUnavailable]:
    stored: set[str] = set()
    for batch in range(10_000):
        ids = [f"b{batch}-{i}" for i in range(20)]
        try:
            store.enqueue(
                [NewJob(id=i, queue="q", task="t", payload=os.urandom(2000)) for i in ids]
            )
        except QueueUnavailable as exc:
            return stored, exc
        stored.update(ids)
    raise AssertionError("the disk never filled up")


def check_consistent_after_full(
    store: SqliteStore, stored: set[str], exc: QueueUnavailable
) -> None:
    assert exc.reason == "disk_full"
    assert "disk full" in str(exc)
    assert isinstance(exc.__cause__, sqlite3.Error)
    assert stored, "some jobs were stored before the disk filled"
    assert store.counts(["q"])[0].ready == len(stored)
    claimed = store.claim("q", limit=5, lease_ms=10_000).jobs
    assert len(claimed) == 5
    assert {j.id for j in claimed} <= stored
    assert store._thread_connection().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_disk_full_on_small_filesystem(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "small", "size=1m") as small:
        s = SqliteStore(str(small / "db.sqlite3"))
        try:
            stored, exc = fill_until_full(s)
            check_consistent_after_full(s, stored, exc)
        finally:
            s.close()


def test_disk_full_via_max_page_count(store: SqliteStore) -> None:
    conn = store._thread_connection()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 100}")
    stored, exc = fill_until_full(store)
    check_consistent_after_full(store, stored, exc)


def test_corrupt_rows_are_dead_lettered_by_claim(store: SqliteStore, db_path: str) -> None:
    store.enqueue([job("good1"), job("good2")])
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        insert = (
            "INSERT INTO jobs (queue, id, task, payload, state, priority, seq, enqueued_at,"
            " run_at, v) VALUES ('q', ?, ?, ?, 'ready', ?, 0, 0, 0, ?)"
        )
        conn.execute(insert, ("nullpayload", "t", None, 5, 1))
        conn.execute(insert, ("textpayload", "t", "oops", 5, 1))
        conn.execute(insert, ("notask", None, b"x", 5, 1))
        conn.execute(insert, ("future", "t", b"x", 5, 99))
        conn.execute(insert, ("badprio", "t", b"x", "high", 1))
    result = store.claim("q", limit=10, lease_ms=1000)
    assert [j.id for j in result.jobs] == ["good1", "good2"]
    dead = {j.id: j.error or "" for j in store.list_jobs("q", JobState.DEAD)}
    assert set(dead) == {"nullpayload", "textpayload", "notask", "future", "badprio"}
    assert "payload" in dead["nullpayload"]
    assert "schema version" in dead["future"]
    assert all("dead-lettered by claim" in e for e in dead.values())


# ---------------------------------------------------------------- several processes


def _claim_all(path: str, start: Any, out: Any) -> None:
    """Claim and complete until the queue is empty; send the ids claimed to ``out``."""
    store = SqliteStore(path, settings=Settings(sqlite_busy_timeout=5.0))
    got: list[str] = []
    try:
        start.wait(timeout=60)  # all processes start claiming together
        while True:
            jobs = store.claim("q", limit=7, lease_ms=60_000).jobs
            if not jobs:
                if store.counts(["q"])[0].ready == 0:
                    break
                continue
            got.extend(j.id for j in jobs)
            assert all(store.complete("q", [j.lease for j in jobs]))
    finally:
        store.close()
        out.put(got)


def _produce(path: str, worker: int, count: int) -> int:
    store = SqliteStore(path, settings=Settings(sqlite_busy_timeout=2.0))
    unavailable = 0
    try:
        for start in range(0, count, 10):
            batch = [job(f"w{worker}-{i}") for i in range(start, start + 10)]
            while True:
                try:
                    store.enqueue(batch)
                    break
                except QueueUnavailable:
                    unavailable += 1  # allowed; retrying the same ids is idempotent
    finally:
        store.close()
    return unavailable


@pytest.mark.slow
def test_concurrent_claim_from_processes(store: SqliteStore, db_path: str) -> None:
    ids = [f"j{i:04d}" for i in range(1000)]
    for first in range(0, 1000, 100):
        store.enqueue([job(i) for i in ids[first : first + 100]])
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(db_path, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    claimed = [i for r in results for i in r]
    assert len(claimed) == len(set(claimed)) == 1000
    assert set(claimed) == set(ids)
    # How the work splits between processes depends on scheduling on a busy machine, so it
    # is not asserted: exactly-once is the property.


@pytest.mark.slow
def test_concurrent_producers_from_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "fresh.sqlite3")  # processes race to create and migrate it
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(8, mp_context=ctx) as pool:
        futures = [pool.submit(_produce, path, w, 200) for w in range(8)]
        [f.result() for f in futures]
    s = SqliteStore(path)
    try:
        assert s.counts(["q"])[0].ready == 1600
    finally:
        s.close()


def _open_and_close(path: str) -> None:
    SqliteStore(path, settings=Settings(sqlite_busy_timeout=2.0)).close()


@pytest.mark.slow
def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL can meet SQLITE_BUSY without SQLite's busy handler
    waiting; it is tried again up to the busy timeout (before: about 1 open in 100 of 8
    processes racing failed, 'stayed locked while opening it')."""
    with ProcessPoolExecutor(8, mp_context=multiprocessing.get_context("spawn")) as pool:
        for round_ in range(30):
            path = str(tmp_path / f"new-{round_}.sqlite3")
            for opened in [pool.submit(_open_and_close, path) for _ in range(8)]:
                opened.result()  # raises QueueUnavailable if an open failed


# ---------------------------------------------------------------- behaviour


def test_priority_then_fifo(store: SqliteStore) -> None:
    store.enqueue([job("a"), job("b", priority=5), job("c"), job("d", priority=5)])
    store.enqueue([job("e", priority=-1), job("f")])
    assert [j.id for j in store.list_jobs("q", JobState.READY)] == ["b", "d", "a", "c", "f", "e"]
    first = store.claim("q", limit=3, lease_ms=1000)
    assert [j.id for j in first.jobs] == ["b", "d", "a"]
    assert all(j.attempt == 1 and j.lease_deadline_ms == first.now_ms + 1000 for j in first.jobs)
    assert [j.id for j in store.claim("q", limit=10, lease_ms=1000).jobs] == ["c", "f", "e"]


def test_idempotent_enqueue(store: SqliteStore) -> None:
    assert store.enqueue([]) == []
    first = store.enqueue([job("a"), job("a")])
    assert [(r.created, r.state) for r in first] == [
        (True, JobState.READY),
        (False, JobState.READY),
    ]
    store.claim("q", limit=1, lease_ms=1000)
    again = store.enqueue([NewJob(id="a", queue="q", task="other", payload=b"new")])
    assert again[0].created is False
    assert again[0].state == JobState.RUNNING
    info = store.get_job("q", "a")
    assert info is not None
    assert info.task == "t"
    # The same id in another queue is another job.
    assert store.enqueue([job("a", queue="other")])[0].created


def test_delayed_and_run_at(store: SqliteStore) -> None:
    now = store.now_ms()
    results = store.enqueue(
        [job("later", delay_ms=150), job("past", run_at_ms=now - 1000), job("far", delay_ms=10**7)]
    )
    assert [r.state for r in results] == [JobState.SCHEDULED, JobState.READY, JobState.SCHEDULED]
    first = store.claim("q", limit=10, lease_ms=1000)
    assert [j.id for j in first.jobs] == ["past"]
    assert first.next_due_ms is not None
    assert first.next_due_ms >= now + 150
    assert [j.id for j in store.list_jobs("q", JobState.SCHEDULED)] == ["later", "far"]
    claimed = eventually(lambda: store.claim("q", limit=10, lease_ms=1000).jobs)
    assert [j.id for j in claimed] == ["later"]
    assert claimed[0].ready_at_ms >= now + 150


def test_promoted_jobs_queue_behind_ready_ones(store: SqliteStore) -> None:
    store.enqueue([job("delayed", delay_ms=50)])
    eventually(lambda: store.now_ms() >= store.list_jobs("q", JobState.SCHEDULED)[0].run_at_ms)  # type: ignore[operator]
    store.enqueue([job("fresh")])
    assert store.promote_due("q") == 1
    assert store.promote_due("q") == 0
    assert [j.id for j in store.list_jobs("q", JobState.READY)] == ["fresh", "delayed"]


def test_retry_then_dead_replay_purge(store: SqliteStore) -> None:
    store.enqueue([job("a", max_attempts=2), job("b")])
    a, b = store.claim("q", limit=2, lease_ms=1000).jobs
    assert store.fail("q", a.lease, error="x" * 5000, traceback="t" * 30000, retry_in_ms=30) == (
        FailOutcome.RETRY_SCHEDULED
    )
    info = store.get_job("q", "a")
    assert info is not None
    assert info.state == JobState.SCHEDULED
    assert len(info.error or "") == 2000
    assert len(info.traceback or "") == 20000
    retried = eventually(lambda: store.claim("q", limit=1, lease_ms=1000).jobs)
    assert retried[0].id == "a"
    assert retried[0].attempt == 2
    assert store.fail("q", retried[0].lease, error="final") == FailOutcome.DEAD
    assert store.fail("q", b.lease, error="bad") == FailOutcome.DEAD
    dead = store.list_jobs("q", JobState.DEAD)
    assert [d.id for d in dead] == ["b", "a"] or dead[0].finished_at_ms == dead[1].finished_at_ms
    assert store.get_job("q", "a").error == "final"  # type: ignore[union-attr]
    store.enqueue([job("c")])
    assert store.replay_dead("q", ["a", "a", "missing"]) == 1
    assert [j.id for j in store.list_jobs("q", JobState.READY)] == ["c", "a"]
    assert store.get_job("q", "a").attempt == 0  # type: ignore[union-attr]
    assert store.purge_dead("q") == 1
    assert store.get_job("q", "b") is None
    assert store.purge_dead("q", ["a"]) == 0  # not dead any more


def test_fencing(store: SqliteStore) -> None:
    store.enqueue([job("a"), job("b")])
    a, b = store.claim("q", limit=2, lease_ms=1000).jobs
    stale = Lease("a", "not-the-token")
    assert store.complete("q", [stale, b.lease]) == [False, True]
    assert store.fail("q", stale, error="x") == FailOutcome.STALE
    assert store.release("q", [stale]) == 0
    assert store.extend_leases("q", [stale, a.lease, b.lease], lease_ms=5000) == ["a", "b"]
    assert store.get_job("q", "a").state == JobState.RUNNING  # type: ignore[union-attr]
    assert store.complete("q", [b.lease]) == [False]  # already done


def test_complete_keeps_row_then_sweeps(db_path: str) -> None:
    s = SqliteStore(db_path, settings=Settings(completed_ttl=0.05))
    try:
        s.enqueue([job("a")])
        (a,) = s.claim("q", limit=1, lease_ms=1000).jobs
        assert s.complete("q", [a.lease]) == [True]
        info = s.get_job("q", "a")
        assert info is not None
        assert info.state == JobState.SUCCEEDED
        assert info.payload == b""
        assert s.enqueue([job("a")])[0].created is False
        eventually(lambda: (s.rescue_expired("q"), s.get_job("q", "a") is None)[1])
    finally:
        s.close()


def test_complete_with_zero_ttl_deletes(db_path: str) -> None:
    s = SqliteStore(db_path, settings=Settings(completed_ttl=0))
    try:
        s.enqueue([job("a")])
        (a,) = s.claim("q", limit=1, lease_ms=1000).jobs
        assert s.complete("q", [a.lease]) == [True]
        assert s.get_job("q", "a") is None
    finally:
        s.close()


def test_release_keeps_place_and_refunds_attempt(store: SqliteStore) -> None:
    store.enqueue([job("a"), job("b"), job("c")])
    (a,) = store.claim("q", limit=1, lease_ms=1000).jobs
    assert store.release("q", [a.lease]) == 1
    assert store.get_job("q", "a").attempt == 0  # type: ignore[union-attr]
    assert [j.id for j in store.claim("q", limit=3, lease_ms=1000).jobs] == ["a", "b", "c"]


def test_rescue_expired(store: SqliteStore) -> None:
    store.enqueue([job("once"), job("twice", max_attempts=2)])
    claimed = store.claim("q", limit=2, lease_ms=1).jobs
    found: dict[str, list[str]] = {"requeued": [], "dead": []}

    def rescued() -> bool:
        result = store.rescue_expired("q")
        found["requeued"] += result.requeued
        found["dead"] += result.dead
        return len(found["requeued"]) + len(found["dead"]) == 2

    eventually(rescued)
    assert found == {"requeued": ["twice"], "dead": ["once"]}
    once = store.get_job("q", "once")
    assert once is not None
    assert once.error == (
        "lease expired on attempt 1 of 1: the worker was lost (crashed, killed or partitioned)"
    )
    assert store.complete("q", [c.lease for c in claimed]) == [False, False]
    again = store.claim("q", limit=1, lease_ms=1000).jobs
    assert again[0].id == "twice"
    assert again[0].attempt == 2


def test_counts_and_queues(store: SqliteStore) -> None:
    store.enqueue([job("a"), job("b"), job("c", delay_ms=10**6), job("x", queue="other")])
    (a,) = store.claim("q", limit=1, lease_ms=1000).jobs
    store.fail("q", a.lease, error="boom")
    store.claim("q", limit=1, lease_ms=1000)
    assert store.queues() == ["other", "q"]
    by_queue = {c.queue: c for c in store.counts()}
    assert (by_queue["q"].ready, by_queue["q"].scheduled, by_queue["q"].running) == (0, 1, 1)
    assert by_queue["q"].dead == 1
    assert by_queue["other"].ready == 1
    assert store.counts(["nope"])[0].total == 0


def test_paused_queue_yields_nothing(store: SqliteStore, db_path: str) -> None:
    store.enqueue([job("a")])
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("INSERT INTO paused (queue, paused_at) VALUES ('q', 0)")
    assert store.claim("q", limit=1, lease_ms=1000).jobs == []
    assert store.wait_for_work(["q"], 0.05) is False


def test_wait_for_work(store: SqliteStore, db_path: str) -> None:
    started = time.monotonic()
    assert store.wait_for_work(["q"], 0.1) is False
    assert time.monotonic() - started >= 0.09
    # Woken by an enqueue in this process (another thread)...
    timer = threading.Timer(0.1, lambda: store.enqueue([job("a")]))
    timer.start()
    assert store.wait_for_work(["q"], 10) is True
    timer.join()
    store.claim("q", limit=1, lease_ms=1000)
    # ...and by one from another connection, as another process would.
    other = SqliteStore(db_path)
    try:
        timer = threading.Timer(0.1, lambda: other.enqueue([job("b")]))
        timer.start()
        started = time.monotonic()
        assert store.wait_for_work(["q"], 10) is True
        assert time.monotonic() - started < 5
        timer.join()
    finally:
        other.close()
    # A delayed job wakes the waiter when it falls due.
    store.claim("q", limit=1, lease_ms=1000)
    store.enqueue([job("later", delay_ms=100)])
    assert store.wait_for_work(["q"], 10) is True


def test_threads_share_one_store(store: SqliteStore) -> None:
    errors: list[BaseException] = []

    def produce(n: int) -> None:
        try:
            store.enqueue([job(f"t{n}-{i}") for i in range(50)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.counts(["q"])[0].ready == 400


# ---------------------------------------------------------------- worker registry


def worker(worker_id: str, **kw: Any) -> WorkerInfo:
    return WorkerInfo(id=worker_id, host="h", pid=1, queues=["q"], concurrency=1, **kw)


def test_version_2_file_upgrades_to_the_worker_registry(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for name in ("0001_initial.sql", "0002_limits.sql"):
        shutil.copy(Path(str(default_directory())) / name, migrations)
    db = str(tmp_path / "v2.sqlite3")
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert migrate(conn, migrations) == [1, 2]
    store = SqliteStore(db)  # applies 0003
    try:
        store.heartbeat(worker("w1"))
        assert [w.id for w in store.workers()] == ["w1"]
    finally:
        store.close()


def test_heartbeat_row_uses_the_store_clock(store: SqliteStore, db_path: str) -> None:
    before = store.now_ms()
    store.heartbeat(worker("w1", ttl_ms=30_000, seen_at_ms=5))
    after = store.now_ms()
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        seen_at, expires_at = conn.execute("SELECT seen_at, expires_at FROM workers").fetchone()
    assert before <= seen_at <= after
    assert expires_at == seen_at + 30_000
    assert store.workers()[0].seen_at_ms == seen_at


def test_expired_worker_rows_are_dropped_a_batch_per_call(store: SqliteStore, db_path: str) -> None:
    def rows() -> int:
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            return int(conn.execute("SELECT count(*) FROM workers").fetchone()[0])

    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.executemany(
            "INSERT INTO workers VALUES (?, x'7b7d', 0, 1)",  # expired in 1970
            [(f"gone-{i}",) for i in range(2 * PRUNE_LIMIT + 50)],
        )
    assert store.workers() == []
    assert rows() == PRUNE_LIMIT + 50
    store.heartbeat(worker("w1"))  # heartbeats prune too
    assert rows() == 50 + 1
    assert [w.id for w in store.workers()] == ["w1"]
    assert rows() == 1


def test_listing_workers_needs_no_write_lock_when_nothing_expired(
    store: SqliteStore, db_path: str
) -> None:
    store.heartbeat(worker("w1"))
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        assert [w.id for w in store.workers()] == ["w1"]
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def test_undecodable_worker_rows_are_left_out(store: SqliteStore, db_path: str) -> None:
    store.heartbeat(worker("w1"))
    far = store.now_ms() + 60_000
    renamed = msgspec.json.encode(worker("x"))
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        insert = "INSERT INTO workers VALUES (?, ?, 0, ?)"
        conn.execute(insert, ("junk", b"not json", far))
        conn.execute(insert, ("renamed", renamed, far))
        conn.execute(insert, ("text", 42, far))
    assert [w.id for w in store.workers()] == ["w1"]


# ---------------------------------------------------------------- controls (issue 5)


def test_version_3_file_with_lanes_upgrades_to_partial_lane_indexes(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for name in ("0001_initial.sql", "0002_limits.sql", "0003_workers.sql"):
        shutil.copy(Path(str(default_directory())) / name, migrations)
    db = str(tmp_path / "v3.sqlite3")
    lane = lane_of(None, "c", None)
    far = int(time.time() * 1000) + 600_000
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert migrate(conn, migrations) == [1, 2, 3]
        insert = (
            "INSERT INTO jobs (queue, id, task, payload, state, seq, enqueued_at, run_at,"
            " token, lease_deadline, attempt, lane, conc_key, conc_limit)"
            " VALUES ('q', ?, 't', x'00', ?, ?, 0, 0, ?, ?, ?, ?, ?, ?)"
        )
        conn.execute(insert, ("held", "running", 1, "tok", far, 1, lane, "c", 2))
        for i, job_id in enumerate(["w1", "w2", "w3"]):
            conn.execute(insert, (job_id, "waiting", 2 + i, None, None, 0, lane, "c", 2))
        conn.execute(insert, ("f1", "waiting", 9, None, None, 0, "fair-a", None, None))
        conn.execute(
            "INSERT INTO lanes (queue, lane, turn, conc_key)"
            " VALUES ('q', ?, 2, 'c'), ('q', 'fair-a', 9, NULL)",
            (lane,),
        )
    store = SqliteStore(db)  # applies 0004
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM calmq_migrations")]
            indexes = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index'"))
        assert versions == [1, 2, 3, 4]
        assert "WHERE state = 'waiting'" in indexes["jobs_lane"]
        assert "WHERE state = 'running'" in indexes["jobs_conc"]
        # One slot of two is held by the old running job: one more start, plus the fair job.
        claimed = store.claim("q", limit=10, lease_ms=60_000).jobs
        assert sorted(c.id for c in claimed) == ["f1", "w1"]
        assert store.claim("q", limit=10, lease_ms=60_000).jobs == []
        w1 = next(c for c in claimed if c.id == "w1")
        assert store.complete("q", [w1.lease]) == [True]
        assert [c.id for c in store.claim("q", limit=10, lease_ms=60_000).jobs] == ["w2"]
    finally:
        store.close()


def test_claim_fetches_more_lane_heads_when_its_share_runs_out(
    store: SqliteStore, db_path: str
) -> None:
    # limit 10 over two lanes and plain jobs: each is first read a share of ceil(10/3) = 4;
    # lane A must then read more to fill the claim, in FIFO order.
    a = [job(f"a{i}", fairness_key="A") for i in range(8)]
    store.enqueue([*a, job("b0", fairness_key="B"), job("p0")])
    ids = [c.id for c in store.claim("q", limit=10, lease_ms=60_000).jobs]
    assert sorted(ids) == sorted([*(j.id for j in a), "b0", "p0"])
    assert [i for i in ids if i.startswith("a")] == [j.id for j in a]
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        lanes = [r[0] for r in conn.execute("SELECT lane FROM lanes")]
    assert lanes == [lane_of(None, None, "A")]  # B was found empty and dropped; A not yet
    assert store.claim("q", limit=10, lease_ms=60_000).jobs == []


def test_unique_key_on_an_existing_id_reports_the_id_and_leaves_the_key(
    store: SqliteStore,
) -> None:
    first = store.enqueue([job("x", unique_key="k1")])[0]
    assert first.created
    again = store.enqueue([job("x", unique_key="k2")])[0]
    assert (again.created, again.outcome) == (False, EnqueueOutcome.EXISTS)
    other = store.enqueue([job("y", unique_key="k2")])[0]
    assert other.created  # k2 was not taken by the refused enqueue
    dup = store.enqueue([job("z", unique_key="k1")])[0]
    assert (dup.outcome, dup.duplicate_of) == (EnqueueOutcome.DUPLICATE, "x")


def test_unique_sweep_visits_a_bounded_span_and_keeps_held_keys(
    store: SqliteStore, db_path: str
) -> None:
    def keys() -> set[str]:
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            return {row[0] for row in conn.execute("SELECT key FROM unique_keys")}

    jobs = [job(f"j{i:02d}", unique_key=f"k{i:02d}") for i in range(30)]
    assert all(r.created for r in store.enqueue(jobs))
    leases = [j.lease for j in store.claim("q", limit=30, lease_ms=60_000).jobs]
    assert store.complete("q", leases[::3]) == [True] * 10  # these keys no longer hold
    done = {f"k{i:02d}" for i in range(0, 30, 3)}
    store.release("q", [lease for i, lease in enumerate(leases) if i % 3])  # pending again
    store.rescue_expired("q", limit=8)  # visits the first 8 keys only
    assert len(keys()) >= 30 - 8
    for _ in range(4):
        store.rescue_expired("q", limit=8)
    assert keys() == {f"k{i:02d}" for i in range(30)} - done
    duplicate = store.enqueue([job("again", unique_key="k01")])[0]
    assert duplicate.outcome == EnqueueOutcome.DUPLICATE
    assert store.enqueue([job("fresh", unique_key="k00")])[0].created


def test_close_leaves_a_call_in_flight_on_another_thread_its_connection(
    store: SqliteStore,
) -> None:
    # Closing a connection while another thread runs a statement on it can crash the
    # process (a worker stopping while its I/O thread claims did, once). The call keeps its
    # connection until it ends; then that connection is closed and new calls are refused.
    inside, closed, done = threading.Event(), threading.Event(), threading.Event()
    seen: list[object] = []

    def call_in_flight() -> None:
        with store._use("a long call") as conn:
            inside.set()
            assert closed.wait(20)
            seen.append(conn.execute("SELECT 1").fetchone()[0])  # still open
        seen.append(conn)
        done.set()

    worker = threading.Thread(target=call_in_flight)
    worker.start()
    assert inside.wait(20)
    store.close()  # from this thread, during the other thread's call
    closed.set()
    assert done.wait(20)
    worker.join(20)
    assert seen[0] == 1
    with pytest.raises(sqlite3.ProgrammingError):  # closed by its thread when the call ended
        seen[1].execute("SELECT 1")  # type: ignore[attr-defined]
    with pytest.raises(QueueUnavailable):
        store.enqueue([NewJob(id="late", queue="q", task="t", payload=b"{}")])
