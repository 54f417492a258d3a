"""Admin reads and bulk operations of the SQLite store: jobs, counts, queue settings, dead letters.

Each function runs on a connection (or, for the batched replay and purge, on the store's
``write`` transaction factory) handed in by :class:`~calmq.stores.sqlite.store.SqliteStore`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from calmq.job import JobState, QueueConfig, QueueCounts, QueueOverflow
from calmq.stores.sqlite import controls

#: Rows touched per transaction by bulk admin operations (replay/purge all), so that
#: a huge dead-letter store never holds the write lock for long.
BATCH = 1_000

_LIST_QUERY = {
    JobState.READY: "list_ready",
    JobState.SCHEDULED: "list_scheduled",
    JobState.RUNNING: "list_running",
}

#: ``SqliteStore._write``: one short write transaction for an action.
Write = Callable[[str], AbstractContextManager[sqlite3.Connection]]


def read_job(conn: sqlite3.Connection, q: dict[str, str], queue: str, job_id: str) -> Any:
    """The raw row of one job, or None."""
    return conn.execute(q["get_job"], {"queue": queue, "id": job_id}).fetchone()


def list_rows(
    conn: sqlite3.Connection,
    q: dict[str, str],
    queue: str,
    state: JobState,
    offset: int,
    limit: int,
) -> list[Any]:
    """The raw rows of one queue's jobs in one state, in that state's natural order."""
    query = q[_LIST_QUERY.get(state, "list_finished")]
    params = {"queue": queue, "state": state.value, "offset": offset, "limit": limit}
    return conn.execute(query, params).fetchall()


def count(conn: sqlite3.Connection, q: dict[str, str], queue: str) -> QueueCounts:
    """Jobs per state of one queue (jobs waiting in a lane count as ready)."""
    rows = conn.execute(q["count_states"], {"queue": queue}).fetchall()
    by_state = {str(state): int(n) for state, n in rows}
    return QueueCounts(
        queue=queue,
        ready=by_state.get("ready", 0) + by_state.get("waiting", 0),
        scheduled=by_state.get("scheduled", 0),
        running=by_state.get("running", 0),
        dead=by_state.get("dead", 0),
    )


def queue_config(conn: sqlite3.Connection, q: dict[str, str], queue: str) -> QueueConfig:
    """The queue's paused state and bound."""
    paused = bool(conn.execute(q["is_paused"], {"queue": queue}).fetchone()[0])
    bound = controls.queue_bound(conn, q, queue)
    if bound is None:
        return QueueConfig(queue, paused)
    return QueueConfig(queue, paused, bound[0], QueueOverflow(bound[1]))


def in_batches(
    write: Write,
    q: dict[str, str],
    now_ms: Callable[[], int],
    action: str,
    queue: str,
    job_ids: Sequence[str] | None,
    prefix: str,
    reseq: bool,
) -> int:
    """Run ``<prefix>_all`` until nothing is left, or ``<prefix>_ids`` per chunk of ids:
    one short transaction per batch, so other writers get the lock in between."""

    def batch(query: str, ids: list[str]) -> int:
        return _batch(write, q, now_ms, action, query, queue, ids, reseq)

    if job_ids is not None:
        query = q[f"{prefix}_ids"]
        unique = list(dict.fromkeys(job_ids))  # a repeated id must not take two seqs
        chunks = [unique[i : i + BATCH] for i in range(0, len(unique), BATCH)]
        return sum(batch(query, chunk) for chunk in chunks)
    total = 0
    while True:
        moved = batch(q[f"{prefix}_all"], [])
        total += moved
        if moved < BATCH:
            return total


def _batch(
    write: Write,
    q: dict[str, str],
    now_ms: Callable[[], int],
    action: str,
    query: str,
    queue: str,
    ids: list[str],
    reseq: bool,
) -> int:
    with write(action) as conn:
        params = {"queue": queue, "now": now_ms(), "limit": BATCH, "ids": json.dumps(ids)}
        if not reseq:
            moved: int = conn.execute(query, params).rowcount
            return moved
        rows = conn.execute(query, params).fetchall()
        if rows:
            # The statement numbered the rows base+1..base+moved: advance the counter.
            conn.execute(q["bump_seq"], {"n": len(rows)})
            controls.add_lanes(conn, q, queue, rows)
    return len(rows)
