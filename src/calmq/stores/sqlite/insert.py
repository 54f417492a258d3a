"""Inserting one job of an enqueue batch into the SQLite store, controls applied.

Plain jobs into an unbounded queue take one ``INSERT ... ON CONFLICT DO NOTHING``, and so do
jobs in a lane (plus joining their lane's round robin): an existing id shows as no row
inserted. A unique key without a throttle, into an unbounded queue, is taken in one more
statement that also checks the id (``claim_unique``); only when that declines (an existing
id, a key that holds) does ``controls.admit`` look closer. Throttles and bounded queues
always go through ``controls`` first. Everything runs in the enqueue's transaction, so each
check and its write are atomic.
"""

from __future__ import annotations

import sqlite3

from calmq.job import SCHEMA_VERSION, EnqueueOutcome, EnqueueResult, JobState, NewJob
from calmq.stores.sqlite import controls
from calmq.stores.sqlite.rows import known_state


def insert_job(
    conn: sqlite3.Connection,
    q: dict[str, str],
    job: NewJob,
    seq: int,
    now: int,
    bound: tuple[int, str] | None,
) -> EnqueueResult:
    """Insert ``job`` with sequence number ``seq``, or say why it was not (``bound`` is the
    queue's ready bound and overflow policy, if any)."""
    unique_taken = False
    if job.unique_key is not None and job.throttle_key is None and bound is None:
        unique_taken = controls.take_unique_key(conn, q, job, now)
    checked = job.unique_key is not None or job.throttle_key is not None or bound is not None
    if checked and not unique_taken:
        refused = controls.admit(conn, q, job, now)
        if refused is not None:
            return refused
    if bound is not None:
        refused = controls.make_room(conn, q, job, now, bound)
        if refused is not None:
            return refused
    due = job.run_at_ms if job.run_at_ms is not None else now + max(job.delay_ms, 0)
    state = JobState.SCHEDULED if due > now else JobState.READY
    lane = job.lane
    stored = "waiting" if state is JobState.READY and lane is not None else state.value
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
    if lane is None:  # no lane or limit columns to fill in
        inserted = conn.execute(q["insert_job"], params).rowcount == 1
    else:
        params |= controls.insert_params(job, lane)
        inserted = conn.execute(q["insert_limited_job"], params).rowcount == 1
    if inserted:
        if checked or lane is not None:
            controls.after_insert(
                conn, q, job, stored, seq, now, lane=lane, unique_taken=unique_taken
            )
        return EnqueueResult(job.id, True, state)
    # Only reached without admit(), which reports an existing id itself.
    row = conn.execute(q["job_state"], {"queue": job.queue, "id": job.id}).fetchone()
    return EnqueueResult(job.id, False, known_state(row[0]), EnqueueOutcome.EXISTS)
