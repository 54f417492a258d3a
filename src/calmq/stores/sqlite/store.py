"""The embedded SQLite store: calmq's zero-setup default, safe for several processes.

Every write is one short ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction in autocommit mode,
so the write lock is taken up front (no deadlock-prone lock upgrade) and held for
microseconds, never across user code. The file is in WAL mode, so readers (admin tools,
the idle-worker probe) never block writers. Waiting for the lock is bounded by
``settings.sqlite_busy_timeout``; past it the caller gets ``QueueUnavailable`` instead of
a pile-up of blocked threads (the incident calmq exists for).

Times come from this host's clock, read inside the store. Every SQL statement lives in
``queries.sql``; the schema is created and upgraded by ``migrate.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from calmq.errors import CalmqError, ConfigurationError, QueueUnavailable, StoreError
from calmq.job import (
    SCHEMA_VERSION,
    CancelOutcome,
    ClaimedJob,
    ClaimResult,
    EnqueueOutcome,
    EnqueueResult,
    FailOutcome,
    JobInfo,
    JobState,
    Lease,
    NewJob,
    QueueConfig,
    QueueCounts,
    QueueOverflow,
    RescueResult,
    WorkerInfo,
)
from calmq.settings import Settings
from calmq.stores.base import CAP_MULTI_PROCESS
from calmq.stores.sqlite import controls, registry
from calmq.stores.sqlite.migrate import migrate
from calmq.stores.sqlite.queries import load_queries

MEMORY = ":memory:"
#: RETURNING (used by claim and rescue) arrived in SQLite 3.35.0.
MIN_SQLITE_VERSION = (3, 35, 0)
MAX_ERROR_CHARS = 2_000
MAX_TRACEBACK_CHARS = 20_000
#: Rows touched per transaction by bulk admin operations (replay/purge all), so that
#: a huge dead-letter store never holds the write lock for long.
BATCH = 1_000
#: Cross-process poll interval of wait_for_work: PRAGMA data_version is one page read.
POLL_INTERVAL = 0.02

# SQLite primary result codes (the low byte of an extended code).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26

_LIST_QUERY = {
    JobState.READY: "list_ready",
    JobState.SCHEDULED: "list_scheduled",
    JobState.RUNNING: "list_running",
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqliteStore:
    """A :class:`~calmq.stores.base.Store` in one SQLite file (or ``":memory:"``)."""

    capabilities: frozenset[str]
    display_url: str

    def __init__(self, path: str, settings: Settings | None = None) -> None:
        self._settings = settings or Settings()
        self._path = path
        self._busy_timeout = self._settings.sqlite_busy_timeout
        self._q = load_queries()
        self.display_url = f"sqlite:///{path}"
        self.capabilities = frozenset() if path == MEMORY else frozenset({CAP_MULTI_PROCESS})
        self._closed = False
        self._in_use = 0  # store calls in flight (a gauge for metrics)
        self._local = threading.local()
        self._registry_lock = threading.Lock()
        self._registry: list[tuple[threading.Thread, sqlite3.Connection]] = []
        # Wakes wait_for_work in this process; one counter per queue limits spurious wakes.
        self._cond = threading.Condition()
        self._signals: dict[str, int] = {}
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.Lock()
        _check_environment(path)
        self._open_first_connection()

    def __repr__(self) -> str:
        return f"SqliteStore({self._path!r})"

    # ------------------------------------------------------------------ connections

    def _open_first_connection(self) -> None:
        try:
            conn = self._open_connection()
            migrate(conn)
        except sqlite3.Error as exc:
            self.close()
            raise _startup_error(self._path, exc) from exc
        except BaseException:
            self.close()
            raise
        if self._path == MEMORY:
            self._shared = conn
        else:
            self._register(conn)

    def _open_connection(self) -> sqlite3.Connection:
        # isolation_level=None: autocommit, so the only transactions are our explicit
        # BEGIN IMMEDIATE ones (the sqlite3 module's implicit BEGIN DEFERRED would upgrade
        # read locks to write locks mid-transaction and fail with SQLITE_BUSY at once).
        # check_same_thread=False: a connection is used by its own thread only (or under
        # the lock for :memory:), but close() must be able to close it from any thread.
        # timeout=: SQLite's busy_timeout, the bound on waiting for another writer.
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(self._q["schema_probe"]).fetchall()  # "not a database" surfaces here
        if self._path != MEMORY:
            # WAL is persistent in the file: set it once, read it back on later opens.
            mode = conn.execute(self._q["get_journal_mode"]).fetchone()[0]
            if str(mode).lower() != "wal":
                mode = conn.execute(self._q["set_journal_mode_wal"]).fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigurationError(
                    f"could not put {self._path} in WAL mode (got {mode!r}); SQLite WAL"
                    " needs a local file system that supports shared memory"
                )
        conn.execute(self._q["set_synchronous_normal"])

    def _register(self, conn: sqlite3.Connection) -> None:
        with self._registry_lock:
            if self._closed:
                conn.close()
                raise QueueUnavailable("the SQLite store is closed", reason="closed")
            # Threads come and go (web servers); close connections of finished threads.
            alive = [(t, c) for t, c in self._registry if t.is_alive()]
            for thread, old in self._registry:
                if not thread.is_alive():
                    old.close()
            self._registry = [*alive, (threading.current_thread(), conn)]
        self._local.conn = conn

    def _thread_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open_connection()
            self._register(conn)
        return conn

    @contextlib.contextmanager
    def _use(self, action: str) -> Iterator[sqlite3.Connection]:
        """A connection for this thread, with SQLite errors mapped to calmq errors."""
        if self._closed:
            raise QueueUnavailable("the SQLite store is closed", reason="closed")
        self._in_use += 1
        try:
            if self._shared is None:
                with self._map_errors(action):
                    yield self._thread_connection()
                return
            yield from self._use_shared(action)
        finally:
            self._in_use -= 1

    def connections_in_use(self) -> int:
        """Store calls in flight right now (each on its thread's connection)."""
        return max(0, self._in_use)

    def _use_shared(self, action: str) -> Iterator[sqlite3.Connection]:
        # :memory: has one connection; bound the wait for it like a file's busy_timeout.
        if not self._shared_lock.acquire(timeout=self._busy_timeout):
            raise QueueUnavailable(
                f"in-memory SQLite store busy for more than {self._busy_timeout}s"
                f" while trying to {action}",
                reason="busy",
            )
        try:
            assert self._shared is not None
            with self._map_errors(action):
                yield self._shared
        finally:
            self._shared_lock.release()

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One short write transaction: BEGIN IMMEDIATE, the body, COMMIT (or ROLLBACK)."""
        with self._use(action) as conn:
            # IMMEDIATE takes the write lock now (waiting at most busy_timeout), so the
            # transaction never fails half-way on a read-to-write lock upgrade.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    @contextlib.contextmanager
    def _map_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _runtime_error(self._path, self._busy_timeout, action, exc) from exc

    def close(self) -> None:
        """Close every connection this store opened. Idempotent."""
        with self._registry_lock:
            self._closed = True
            registry, self._registry = self._registry, []
        for _thread, conn in registry:
            conn.close()
        if self._shared is not None and self._shared_lock.acquire(timeout=5):
            try:
                self._shared.close()
            finally:
                self._shared_lock.release()
        with self._cond:
            self._cond.notify_all()

    def now_ms(self) -> int:
        """The store's clock: this host's wall clock, in ms."""
        return _now_ms()

    # ------------------------------------------------------------------ worker registry

    def heartbeat(self, worker: WorkerInfo) -> None:
        """Replace ``worker``'s row, alive until ``worker.ttl_ms`` from now."""
        with self._write("record a worker heartbeat") as conn:
            registry.record(conn, self._q, worker, _now_ms())

    def workers(self) -> list[WorkerInfo]:
        """Live workers sorted by id; takes the write lock only when expired rows exist."""
        with self._use("list workers") as conn:
            found, stale = registry.live(conn, self._q, _now_ms())
        if stale:
            with self._write("drop expired workers") as conn:
                registry.drop_expired(conn, self._q, _now_ms())
        return found

    def forget_worker(self, worker_id: str) -> None:
        """Delete a worker's row at once. Idempotent."""
        with self._write("forget a worker") as conn:
            registry.forget(conn, self._q, worker_id)

    # ------------------------------------------------------------------ producers

    def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """Store a batch of jobs in one transaction; existing ids are reported, not changed."""
        if not jobs:
            return []
        with self._write("enqueue") as conn:
            now = _now_ms()
            top = conn.execute(self._q["reserve_seq"], {"n": len(jobs)}).fetchone()[0]
            first = int(top) - len(jobs) + 1
            bounds = {}
            for name in dict.fromkeys(job.queue for job in jobs):
                conn.execute(self._q["register_queue"], {"queue": name})
                bounds[name] = controls.queue_bound(conn, self._q, name)
            results = [
                self._insert(conn, job, first + i, now, bounds[job.queue])
                for i, job in enumerate(jobs)
            ]
        self._notify(job.queue for job, r in zip(jobs, results, strict=True) if r.created)
        return results

    def _insert(
        self,
        conn: sqlite3.Connection,
        job: NewJob,
        seq: int,
        now: int,
        bound: tuple[int, str] | None,
    ) -> EnqueueResult:
        # Plain jobs into an unbounded queue take the one-statement path below.
        limited = controls.has_controls(job) or bound is not None
        if limited:
            refused = controls.admit(conn, self._q, job, now)
            if refused is not None:
                return refused
        if bound is not None:
            refused = controls.make_room(conn, self._q, job, now, bound)
            if refused is not None:
                return refused
        due = job.run_at_ms if job.run_at_ms is not None else now + max(job.delay_ms, 0)
        state = JobState.SCHEDULED if due > now else JobState.READY
        stored = "waiting" if state is JobState.READY and job.lane is not None else state.value
        params = {
            "queue": job.queue,
            "id": job.id,
            "task": job.task,
            "payload": job.payload,
            "state": stored,
            "priority": job.priority,
            "max_attempts": job.max_attempts,
            "seq": seq,
            "now": now,
            "run_at": max(due, now),
            "v": SCHEMA_VERSION,
        }
        if limited:
            params |= controls.insert_params(job)
            conn.execute(self._q["insert_limited_job"], params)  # admit() saw no such id
            controls.after_insert(conn, self._q, job, stored, seq, now)
            return EnqueueResult(job.id, True, state)
        if conn.execute(self._q["insert_job"], params).rowcount == 1:
            return EnqueueResult(job.id, True, state)
        row = conn.execute(self._q["job_state"], {"queue": job.queue, "id": job.id}).fetchone()
        return EnqueueResult(job.id, False, _known_state(row[0]), EnqueueOutcome.EXISTS)

    # ------------------------------------------------------------------ workers

    def claim(self, queue: str, *, limit: int, lease_ms: int) -> ClaimResult:
        """Promote due jobs, then lease up to ``limit`` ready ones in one transaction."""
        if limit <= 0 or not self._claimable([queue]):
            # The idle-worker fast path: a WAL read, no write lock taken at all.
            return ClaimResult([], self._next_due([queue]), _now_ms())
        with self._write("claim jobs") as conn:
            now = _now_ms()
            paused, has_lanes = conn.execute(self._q["claim_flags"], {"queue": queue}).fetchone()
            if paused:
                return ClaimResult([], None, now)
            self._promote(conn, queue, now, BATCH)
            token = secrets.token_hex(8)
            lease = (token, now, now + lease_ms)
            if has_lanes:
                rows = controls.LaneClaim(conn, self._q, queue, lease).run(limit)
            else:
                params = {"queue": queue, "token": token, "deadline": now + lease_ms,
                          "limit": limit}  # fmt: skip
                rows = conn.execute(self._q["claim_ready"], params).fetchall()
            jobs = [self._claimed(conn, queue, row, lease) for row in rows]
            due_query = self._q["next_due_with_lanes" if has_lanes else "next_due"]
            next_due = conn.execute(due_query, {"queue": queue, "now": now}).fetchone()[0]
        good = sorted((job for job in jobs if job is not None), key=_claim_order)
        return ClaimResult([job for job, _seq in good], next_due, now)

    def _claimed(
        self, conn: sqlite3.Connection, queue: str, row: Any, lease: tuple[str, int, int]
    ) -> tuple[ClaimedJob, int] | None:
        """The claimed job and its seq, or None after dead-lettering a corrupt row."""
        token, now, deadline = lease
        rowid, job_id, task, payload, attempt, max_attempts, priority, enq, run_at, seq, v = row
        problem = _row_problem(task, payload, (attempt, max_attempts, priority, enq, run_at), v)
        if problem is not None:
            error = f"undeliverable job dead-lettered by claim: {problem}"
            conn.execute(self._q["dead_letter_row"], {"rowid": rowid, "now": now, "error": error})
            return None
        job = ClaimedJob(
            id=str(job_id),
            queue=queue,
            task=task,
            payload=payload,
            token=token,
            attempt=attempt,
            max_attempts=max_attempts,
            priority=priority,
            enqueued_at_ms=enq,
            lease_deadline_ms=deadline,
            claimed_at_ms=now,
            ready_at_ms=run_at,
            schema_version=v,
        )
        return job, int(seq)

    def _promote(self, conn: sqlite3.Connection, queue: str, now: int, limit: int) -> int:
        params = {"queue": queue, "now": now, "limit": limit}
        rows = conn.execute(self._q["promote_due"], params).fetchall()
        if rows:
            conn.execute(self._q["bump_seq"], {"n": len(rows)})
            controls.add_lanes(conn, self._q, queue, rows)
        return len(rows)

    def _claimable(self, queues: Sequence[str]) -> bool:
        with self._use("look for work") as conn:
            params = {"queues": json.dumps(list(queues)), "now": _now_ms()}
            return bool(conn.execute(self._q["claimable"], params).fetchone()[0])

    def _next_due(self, queues: Sequence[str]) -> int | None:
        with self._use("read the next due time") as conn:
            params = {"queues": json.dumps(list(queues)), "now": _now_ms()}
            value = conn.execute(self._q["next_due_any"], params).fetchone()[0]
        return None if value is None else int(value)

    def extend_leases(self, queue: str, leases: Sequence[Lease], *, lease_ms: int) -> list[str]:
        """Push deadlines to now + ``lease_ms``; return ids whose lease is not ours any more."""
        if not leases:
            return []
        lost: list[str] = []
        with self._write("extend leases") as conn:
            deadline = _now_ms() + lease_ms
            for lease in leases:
                params = {"queue": queue, "id": lease.id, "token": lease.token}
                if conn.execute(self._q["extend_lease"], {**params, "deadline": deadline}).rowcount:
                    continue
                lost.append(lease.id)
        return lost

    def complete(self, queue: str, leases: Sequence[Lease]) -> list[bool]:
        """Mark jobs succeeded (kept ``completed_ttl`` for idempotency, or deleted at once)."""
        if not leases:
            return []
        # With no TTL there is nothing to remember: delete the row in the same statement.
        query = self._q["complete_job" if self._settings.completed_ttl > 0 else "delete_running"]
        done: list[bool] = []
        with self._write("complete jobs") as conn:
            now = _now_ms()
            for lease in leases:
                params = {"queue": queue, "id": lease.id, "token": lease.token, "now": now}
                row = conn.execute(query, params).fetchone()
                done.append(row is not None)
                self._after_finish(conn, queue, row, params)
        return done

    def _after_finish(
        self, conn: sqlite3.Connection, queue: str, row: Any, params: dict[str, Any]
    ) -> None:
        """After complete/fail/release of one lease: free its concurrency slot, or (when the
        lease was not ours) finish the job if it was cancelled while running."""
        if row is None:
            row = conn.execute(self._q["finish_cancelled"], params).fetchone()
        if row is not None and row[0] is not None:
            controls.slots_freed(conn, self._q, queue, [row[0]])

    def fail(
        self,
        queue: str,
        lease: Lease,
        *,
        error: str,
        traceback: str | None = None,
        retry_in_ms: int | None = None,
    ) -> FailOutcome:
        """Schedule a retry ``retry_in_ms`` from now, or dead-letter the job (None)."""
        with self._write("record a failure") as conn:
            now = _now_ms()
            params = {
                "queue": queue,
                "id": lease.id,
                "token": lease.token,
                "now": now,
                "run_at": now + max(retry_in_ms or 0, 0),
                "error": error[:MAX_ERROR_CHARS],
                "traceback": None if traceback is None else traceback[:MAX_TRACEBACK_CHARS],
            }
            query = self._q["fail_dead" if retry_in_ms is None else "fail_retry"]
            row = conn.execute(query, params).fetchone()
            self._after_finish(conn, queue, row, params)
            if row is None:
                return FailOutcome.STALE
        return FailOutcome.DEAD if retry_in_ms is None else FailOutcome.RETRY_SCHEDULED

    def release(self, queue: str, leases: Sequence[Lease]) -> int:
        """Give leased jobs back to ready, first in line, without spending an attempt."""
        if not leases:
            return 0
        released = 0
        with self._write("release jobs") as conn:
            now = _now_ms()
            for lease in leases:
                params = {"queue": queue, "id": lease.id, "token": lease.token, "now": now}
                row = conn.execute(self._q["release_job"], params).fetchone()
                if row is not None:
                    released += 1
                    controls.add_lanes(conn, self._q, queue, [row])
                    controls.slots_freed(conn, self._q, queue, [row[1]])
                else:
                    self._after_finish(conn, queue, None, params)
        if released:
            self._notify([queue])
        return released

    def promote_due(self, queue: str, *, limit: int = 1000) -> int:
        """Move up to ``limit`` due scheduled jobs to ready, behind the ready ones."""
        with self._write("promote due jobs") as conn:
            moved = self._promote(conn, queue, _now_ms(), limit)
        if moved:
            self._notify([queue])
        return moved

    def rescue_expired(self, queue: str, *, limit: int = 1000) -> RescueResult:
        """Take back expired leases, then sweep old succeeded and dead rows (bounded)."""
        with self._write("rescue expired leases") as conn:
            now = _now_ms()
            params = {"queue": queue, "now": now, "limit": limit}
            cancelled = conn.execute(self._q["rescue_cancelled"], params).fetchall()
            dead_rows = conn.execute(self._q["rescue_to_dead"], params).fetchall()
            dead = [row[0] for row in dead_rows]
            params["limit"] = max(limit - len(dead), 0)
            back = conn.execute(self._q["rescue_to_ready"], params).fetchall()
            requeued = [row[0] for row in back]
            controls.add_lanes(conn, self._q, queue, [row[1:] for row in back])
            freed = [row[-1] for row in (*cancelled, *dead_rows)] + [row[2] for row in back]
            controls.slots_freed(conn, self._q, queue, freed)
            self._sweep(conn, queue, now, limit)
            controls.sweep(conn, self._q, queue, now, limit)
        if requeued:
            self._notify([queue])
        return RescueResult(requeued=requeued, dead=dead)

    def _sweep(self, conn: sqlite3.Connection, queue: str, now: int, limit: int) -> None:
        ttls = {
            JobState.SUCCEEDED: self._settings.completed_ttl,
            JobState.CANCELLED: self._settings.completed_ttl,
            JobState.DEAD: self._settings.dead_ttl,
        }
        for state, ttl in ttls.items():
            cutoff = now - int(ttl * 1000)
            params = {"queue": queue, "state": state.value, "cutoff": cutoff, "limit": limit}
            conn.execute(self._q["sweep_finished"], params)

    # ------------------------------------------------------------------ waiting

    def _notify(self, queues: Any) -> None:
        names = set(queues)
        if not names:
            return
        with self._cond:
            for name in names:
                self._signals[name] = self._signals.get(name, 0) + 1
            self._cond.notify_all()

    def _signal_state(self, queues: Sequence[str]) -> tuple[int, ...]:
        return tuple(self._signals.get(name, 0) for name in queues)

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Wait for a local notification, or for another process's commit that makes work
        claimable (``PRAGMA data_version``, polled), or for a scheduled job to fall due."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            seen = self._signal_state(queues)
        version = self._data_version()
        if self._claimable(queues):
            return True
        next_due = self._next_due(queues)
        while not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                if self._cond.wait_for(
                    lambda: self._closed or self._signal_state(queues) != seen,
                    timeout=min(POLL_INTERVAL, remaining),
                ):
                    return not self._closed
            if next_due is not None and _now_ms() >= next_due:
                return True
            current = self._data_version()
            if current != version:
                version = current
                if self._claimable(queues):
                    return True
                next_due = self._next_due(queues)
        return False

    def _data_version(self) -> int:
        with self._use("poll for changes") as conn:
            return int(conn.execute(self._q["data_version"]).fetchone()[0])

    # ------------------------------------------------------------------ admin

    def get_job(self, queue: str, job_id: str) -> JobInfo | None:
        """The job with that id in that queue, or None."""
        with self._use("read a job") as conn:
            row = conn.execute(self._q["get_job"], {"queue": queue, "id": job_id}).fetchone()
        return None if row is None else _job_info(row)

    def list_jobs(
        self, queue: str, state: JobState, *, offset: int = 0, limit: int = 100
    ) -> list[JobInfo]:
        """Jobs of one queue in one state, in that state's natural order."""
        query = self._q[_LIST_QUERY.get(state, "list_finished")]
        params = {"queue": queue, "state": state.value, "offset": offset, "limit": limit}
        with self._use("list jobs") as conn:
            rows = conn.execute(query, params).fetchall()
        return [_job_info(row) for row in rows]

    def counts(self, queues: Sequence[str] | None = None) -> list[QueueCounts]:
        """Jobs per state for the given queues, or for every known queue."""
        names = self.queues() if queues is None else list(queues)
        with self._use("count jobs") as conn:
            return [self._count(conn, name) for name in names]

    def _count(self, conn: sqlite3.Connection, queue: str) -> QueueCounts:
        rows = conn.execute(self._q["count_states"], {"queue": queue}).fetchall()
        by_state = {str(state): int(n) for state, n in rows}
        return QueueCounts(
            queue=queue,
            ready=by_state.get("ready", 0) + by_state.get("waiting", 0),
            scheduled=by_state.get("scheduled", 0),
            running=by_state.get("running", 0),
            dead=by_state.get("dead", 0),
        )

    def queues(self) -> list[str]:
        """Names of every queue that ever received a job, sorted."""
        with self._use("list queues") as conn:
            return [str(row[0]) for row in conn.execute(self._q["list_queues"])]

    def pause(self, queue: str) -> None:
        """Stop claims from ``queue``; enqueue keeps working."""
        with self._write("pause a queue") as conn:
            conn.execute(self._q["pause_queue"], {"queue": queue, "now": _now_ms()})

    def resume(self, queue: str) -> None:
        """Let claims from ``queue`` start again and wake this process's idle workers."""
        with self._write("resume a queue") as conn:
            conn.execute(self._q["resume_queue"], {"queue": queue})
        self._notify([queue])

    def cancel(self, queue: str, job_id: str) -> CancelOutcome:
        """Remove a queued job, or revoke the lease of a running one."""
        with self._write("cancel a job") as conn:
            params = {"queue": queue, "id": job_id, "now": _now_ms()}
            if conn.execute(self._q["cancel_queued"], params).rowcount:
                return CancelOutcome.CANCELLED
            if conn.execute(self._q["cancel_running"], params).rowcount:
                return CancelOutcome.CANCELLING
        return CancelOutcome.NOT_CANCELLABLE

    def set_queue_limit(
        self, queue: str, max_ready: int | None, overflow: QueueOverflow = QueueOverflow.REJECT
    ) -> None:
        """Bound the ready jobs of ``queue`` (``None`` removes the bound)."""
        with self._write("set a queue limit") as conn:
            if max_ready is None:
                conn.execute(self._q["clear_queue_limit"], {"queue": queue})
                return
            params = {"queue": queue, "max_ready": max_ready, "overflow": overflow.value}
            conn.execute(self._q["set_queue_limit"], params)
            conn.execute(self._q["register_queue"], {"queue": queue})

    def queue_config(self, queue: str) -> QueueConfig:
        """The queue's paused state and bound."""
        with self._use("read a queue's settings") as conn:
            paused = bool(conn.execute(self._q["is_paused"], {"queue": queue}).fetchone()[0])
            bound = controls.queue_bound(conn, self._q, queue)
        if bound is None:
            return QueueConfig(queue, paused)
        return QueueConfig(queue, paused, bound[0], QueueOverflow(bound[1]))

    def replay_dead(self, queue: str, job_ids: Sequence[str] | None = None) -> int:
        """Dead jobs back to ready (attempt 0, a new place in line), in batches."""
        replayed = self._in_batches("replay dead jobs", queue, job_ids, "replay_dead", True)
        if replayed:
            self._notify([queue])
        return replayed

    def purge_dead(self, queue: str, job_ids: Sequence[str] | None = None) -> int:
        """Delete dead jobs for good, in batches."""
        return self._in_batches("purge dead jobs", queue, job_ids, "purge_dead", False)

    def _in_batches(
        self, action: str, queue: str, job_ids: Sequence[str] | None, prefix: str, reseq: bool
    ) -> int:
        """Run ``<prefix>_all`` until nothing is left, or ``<prefix>_ids`` per chunk of ids:
        one short transaction per batch, so other writers get the lock in between."""
        if job_ids is not None:
            query = self._q[f"{prefix}_ids"]
            unique = list(dict.fromkeys(job_ids))  # a repeated id must not take two seqs
            chunks = [unique[i : i + BATCH] for i in range(0, len(unique), BATCH)]
            return sum(self._batch(action, query, queue, chunk, reseq) for chunk in chunks)
        total = 0
        while True:
            moved = self._batch(action, self._q[f"{prefix}_all"], queue, [], reseq)
            total += moved
            if moved < BATCH:
                return total

    def _batch(self, action: str, query: str, queue: str, ids: list[str], reseq: bool) -> int:
        with self._write(action) as conn:
            params = {"queue": queue, "now": _now_ms(), "limit": BATCH, "ids": json.dumps(ids)}
            if not reseq:
                moved: int = conn.execute(query, params).rowcount
                return moved
            rows = conn.execute(query, params).fetchall()
            if rows:
                # The statement numbered the rows base+1..base+moved: advance the counter.
                conn.execute(self._q["bump_seq"], {"n": len(rows)})
                controls.add_lanes(conn, self._q, queue, rows)
        return len(rows)


# ---------------------------------------------------------------------- helpers


def _claim_order(item: tuple[ClaimedJob, int]) -> tuple[int, int]:
    job, seq = item
    return (-job.priority, seq)


def _row_problem(task: Any, payload: Any, numbers: tuple[Any, ...], version: Any) -> str | None:
    """Why a claimed row cannot be delivered, or None when it is sound."""
    if not isinstance(payload, bytes):
        return f"payload is {type(payload).__name__}, not bytes"
    if not isinstance(task, str) or not task:
        return "task name is missing"
    if not all(isinstance(n, int) for n in numbers):
        return "attempt, max_attempts, priority or a timestamp is not an integer"
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        return (
            f"stored with unknown schema version {version!r} (this calmq reads 1..{SCHEMA_VERSION})"
        )
    return None


def _known_state(value: Any) -> JobState:
    try:
        return controls.public_state(value)
    except ValueError:
        raise StoreError(f"stored job has unknown state {value!r}") from None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _job_info(row: Any) -> JobInfo:
    """An admin view of a row; tolerant of damaged fields except an unknown state."""
    job_id, queue, task, state, payload, priority, attempt, max_att = row[:8]
    enqueued_at, run_at, finished_at, error, traceback, version = row[8:]
    return JobInfo(
        id=str(job_id),
        queue=str(queue),
        task=task if isinstance(task, str) else "",
        state=_known_state(state),
        payload=payload if isinstance(payload, bytes) else b"",
        priority=priority if isinstance(priority, int) else 0,
        attempt=attempt if isinstance(attempt, int) else 0,
        max_attempts=max_att if isinstance(max_att, int) else 0,
        enqueued_at_ms=enqueued_at if isinstance(enqueued_at, int) else 0,
        run_at_ms=_int_or_none(run_at),
        finished_at_ms=_int_or_none(finished_at),
        error=error if isinstance(error, str) else None,
        traceback=traceback if isinstance(traceback, str) else None,
        schema_version=version if isinstance(version, int) else SCHEMA_VERSION,
    )


def _rollback(conn: sqlite3.Connection) -> None:
    # Some errors (SQLITE_FULL, IOERR) already rolled the transaction back.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def _runtime_error(path: str, busy: float, action: str, exc: sqlite3.Error) -> CalmqError:
    """The calmq error for a SQLite error raised while serving a call."""
    code = _code(exc)
    if code in (_BUSY, _LOCKED):
        return QueueUnavailable(
            f"SQLite file {path} stayed locked by another writer for more than"
            f" busy_timeout={busy}s while trying to {action}; retrying with the same job id"
            " is safe",
            reason="busy",
        )
    if code == _FULL:
        return QueueUnavailable(
            f"disk full: SQLite could not write to {path} while trying to {action}; the"
            " transaction was rolled back and stored jobs are intact. Free disk space.",
            reason="disk_full",
        )
    if code in (_IOERR, _READONLY, _CANTOPEN):
        return QueueUnavailable(
            f"SQLite I/O error on {path} while trying to {action}: {exc}", reason="io_error"
        )
    return StoreError(f"SQLite error on {path} while trying to {action}: {exc}")


def _startup_error(path: str, exc: sqlite3.Error) -> CalmqError:
    """The calmq error for a SQLite error raised while opening the store."""
    code = _code(exc)
    if code in (_BUSY, _LOCKED):
        return QueueUnavailable(
            f"SQLite file {path} stayed locked while opening it: {exc}", reason="busy"
        )
    if code in (_NOTADB, _CORRUPT):
        return ConfigurationError(f"{path} is not a calmq SQLite database (or is damaged): {exc}")
    if code in (_READONLY, _CANTOPEN, _IOERR):
        return ConfigurationError(f"cannot open {path} for writing: {exc}")
    return ConfigurationError(f"cannot open SQLite store {path}: {exc}")


def _check_environment(path: str) -> None:
    """Clear start-up errors instead of obscure failures at the first write."""
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        need = ".".join(map(str, MIN_SQLITE_VERSION))
        raise ConfigurationError(
            f"calmq needs SQLite >= {need} (for RETURNING); this Python links SQLite"
            f" {sqlite3.sqlite_version}. Use a newer Python build, or the Redis store."
        )
    if path == MEMORY:
        return
    file = Path(path).absolute()
    if not file.parent.is_dir():
        raise ConfigurationError(f"directory {file.parent} for the SQLite store does not exist")
    if file.is_dir():
        raise ConfigurationError(f"SQLite store path {file} is a directory, not a file")
    if file.exists() and not os.access(file, os.R_OK | os.W_OK):
        raise ConfigurationError(f"SQLite store file {file} is not readable and writable")
    if not os.access(file.parent, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"directory {file.parent} is not writable: SQLite needs to create its -wal and"
            " -shm files next to the database"
        )
