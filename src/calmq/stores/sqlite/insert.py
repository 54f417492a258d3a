"""Inserting one job of an enqueue batch into the SQLite store, controls applied.

Plain jobs into an unbounded queue take one ``INSERT ... ON CONFLICT DO NOTHING``; jobs with
unique keys, throttles, lanes or a bounded queue go through ``controls`` first, in the same
transaction as the insert, so the check and the write are atomic.
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
    # Plain jobs into an unbounded queue take the one-statement path below.
    limited = controls.has_controls(job) or bound is not None
    if limited:
        refused = controls.admit(conn, q, job, now)
        if refused is not None:
            return refused
    if bound is not None:
        refused = controls.make_room(conn, q, job, now, bound)
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
        conn.execute(q["insert_limited_job"], params)  # admit() saw no such id
        controls.after_insert(conn, q, job, stored, seq, now)
        return EnqueueResult(job.id, True, state)
    if conn.execute(q["insert_job"], params).rowcount == 1:
        return EnqueueResult(job.id, True, state)
    row = conn.execute(q["job_state"], {"queue": job.queue, "id": job.id}).fetchone()
    return EnqueueResult(job.id, False, known_state(row[0]), EnqueueOutcome.EXISTS)
