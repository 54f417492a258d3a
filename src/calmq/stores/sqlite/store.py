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
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from calmq.job import (
    CancelOutcome,
    ClaimedJob,
    ClaimResult,
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
from calmq.stores.base import (
    CAP_MULTI_PROCESS,
    OnStored,
    enqueue_in_one_call,
    wait_then_claim_in_two_calls,
)
from calmq.stores.sqlite import admin, controls, registry
from calmq.stores.sqlite.admin import BATCH
from calmq.stores.sqlite.connection import MEMORY, Connections, check_environment
from calmq.stores.sqlite.insert import insert_job
from calmq.stores.sqlite.lane_claim import LaneClaim
from calmq.stores.sqlite.migrate import migrate
from calmq.stores.sqlite.queries import load_queries
from calmq.stores.sqlite.rows import claim_order, claimed_job, job_info
from calmq.stores.sqlite.wakeups import Wakeups

MAX_ERROR_CHARS = 2_000
MAX_TRACEBACK_CHARS = 20_000
#: Cross-process poll interval of wait_for_work: PRAGMA data_version is one page read.
POLL_INTERVAL = 0.02


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqliteStore:
    """A :class:`~calmq.stores.base.Store` in one SQLite file (or ``":memory:"``).

    Connections (opening, pragmas, one per thread, error mapping) live in ``connection.py``,
    admin reads and batched dead-letter operations in ``admin.py``, row decoding in
    ``rows.py``; this class holds the store verbs and the in-process wake-ups.
    """

    capabilities: frozenset[str]
    display_url: str

    def __init__(self, path: str, settings: Settings | None = None) -> None:
        self._settings = settings or Settings()
        self._path = path
        self._busy_timeout = self._settings.sqlite_busy_timeout
        self._q = load_queries()
        self.display_url = f"sqlite:///{path}"
        self.capabilities = frozenset() if path == MEMORY else frozenset({CAP_MULTI_PROCESS})
        self._conns = Connections(path, self._busy_timeout, self._q)
        # Wakes wait_for_work in this process; one counter per queue limits spurious wakes.
        self._wakeups = Wakeups()
        # Per queue, the unique key the next sweep starts after (see controls.sweep).
        self._unique_sweep_from: dict[str, str] = {}
        check_environment(path)
        self._conns.open_first(migrate)  # closes what it opened if it fails

    def __repr__(self) -> str:
        return f"SqliteStore({self._path!r})"

    # ------------------------------------------------------------------ connections

    @property
    def _closed(self) -> bool:
        return self._conns.closed

    def _thread_connection(self) -> sqlite3.Connection:
        return self._conns.thread_connection()

    def _use(self, action: str) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A connection for this thread, with SQLite errors mapped to calmq errors."""
        return self._conns.use(action)

    def _write(self, action: str) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One short write transaction: BEGIN IMMEDIATE, the body, COMMIT (or ROLLBACK)."""
        return self._conns.write(action)

    def connections_in_use(self) -> int:
        """Store calls in flight right now (each on its thread's connection)."""
        return self._conns.in_use()

    def close(self) -> None:
        """Close every connection this store opened. Idempotent."""
        self._conns.close()
        self._wakeups.wake_all()

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
                insert_job(conn, self._q, job, first + i, now, bounds[job.queue])
                for i, job in enumerate(jobs)
            ]
        self._notify(job.queue for job, r in zip(jobs, results, strict=True) if r.created)
        return results

    def enqueue_chunks(self, chunks: Iterable[Sequence[NewJob]], stored: OnStored) -> None:
        """All chunks in one ``enqueue`` transaction (a commit per chunk would cost more
        than the overlap saves), then ``stored`` per chunk."""
        enqueue_in_one_call(self.enqueue, chunks, stored)

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
                rows = LaneClaim(conn, self._q, queue, lease).run(limit)
            else:
                params = {"queue": queue, "token": token, "deadline": now + lease_ms,
                          "limit": limit}  # fmt: skip
                rows = conn.execute(self._q["claim_ready"], params).fetchall()
            jobs = [self._claimed(conn, queue, row, lease) for row in rows]
            due_query = self._q["next_due_with_lanes" if has_lanes else "next_due"]
            next_due = conn.execute(due_query, {"queue": queue, "now": now}).fetchone()[0]
        good = sorted((job for job in jobs if job is not None), key=claim_order)
        return ClaimResult([job for job, _seq in good], next_due, now)

    def _claimed(
        self, conn: sqlite3.Connection, queue: str, row: Any, lease: tuple[str, int, int]
    ) -> tuple[ClaimedJob, int] | None:
        """The claimed job and its seq, or None after dead-lettering a corrupt row."""
        decoded = claimed_job(queue, row, lease)
        if isinstance(decoded, str):
            error = f"undeliverable job dead-lettered by claim: {decoded}"
            params = {"rowid": row[0], "now": lease[1], "error": error}
            conn.execute(self._q["dead_letter_row"], params)
            return None
        return decoded

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
        freed: list[Any] = []
        with self._write("complete jobs") as conn:
            now = _now_ms()
            for lease in leases:
                params = {"queue": queue, "id": lease.id, "token": lease.token, "now": now}
                row = conn.execute(query, params).fetchone()
                done.append(row is not None)
                freed.append(self._after_finish(conn, row, params))
            # Once per key for the whole batch, not once per job.
            controls.slots_freed(conn, self._q, queue, freed)
        return done

    def _after_finish(self, conn: sqlite3.Connection, row: Any, params: dict[str, Any]) -> Any:
        """After complete/fail/release of one lease: the concurrency key whose slot it
        freed (None if none); when the lease was not ours, first finish the job if it was
        cancelled while running. The caller frees the slots (``controls.slots_freed``)."""
        if row is None:
            row = conn.execute(self._q["finish_cancelled"], params).fetchone()
        return None if row is None else row[0]

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
            freed = self._after_finish(conn, row, params)
            controls.slots_freed(conn, self._q, queue, [freed])
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
            freed: list[Any] = []
            for lease in leases:
                params = {"queue": queue, "id": lease.id, "token": lease.token, "now": now}
                row = conn.execute(self._q["release_job"], params).fetchone()
                if row is not None:
                    released += 1
                    controls.add_lanes(conn, self._q, queue, [row])
                    freed.append(row[1])
                else:
                    freed.append(self._after_finish(conn, None, params))
            controls.slots_freed(conn, self._q, queue, freed)
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
            after = self._unique_sweep_from.get(queue, "")
            self._unique_sweep_from[queue] = controls.sweep(conn, self._q, queue, now, limit, after)
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

    def _notify(self, queues: Iterable[str]) -> None:
        self._wakeups.notify(queues)

    def wait_then_claim(
        self, queues: Sequence[str], timeout: float, queue: str, *, limit: int, lease_ms: int
    ) -> ClaimResult:
        """The wait, then the claim: both are local, there is no round trip to save."""
        return wait_then_claim_in_two_calls(
            self, queues, timeout, queue, limit=limit, lease_ms=lease_ms
        )

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Wait for a local notification, or for another process's commit that makes work
        claimable (``PRAGMA data_version``, polled), or for a scheduled job to fall due."""
        deadline = time.monotonic() + max(timeout, 0.0)
        seen = self._wakeups.seen(queues)
        version = self._data_version()
        if self._claimable(queues):
            return True
        next_due = self._next_due(queues)
        while not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._wakeups.wait(
                queues, seen, min(POLL_INTERVAL, remaining), lambda: self._closed
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
            row = admin.read_job(conn, self._q, queue, job_id)
        return None if row is None else job_info(row)

    def list_jobs(
        self, queue: str, state: JobState, *, offset: int = 0, limit: int = 100
    ) -> list[JobInfo]:
        """Jobs of one queue in one state, in that state's natural order."""
        with self._use("list jobs") as conn:
            rows = admin.list_rows(conn, self._q, queue, state, offset, limit)
        return [job_info(row) for row in rows]

    def counts(self, queues: Sequence[str] | None = None) -> list[QueueCounts]:
        """Jobs per state for the given queues, or for every known queue."""
        names = self.queues() if queues is None else list(queues)
        with self._use("count jobs") as conn:
            return [admin.count(conn, self._q, name) for name in names]

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
            return admin.queue_config(conn, self._q, queue)

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
        return admin.in_batches(
            self._write, self._q, _now_ms, action, queue, job_ids, prefix, reseq
        )
