"""Decoding the SQLite store's rows into calmq records, tolerant of damaged fields.

A claimed row that cannot be delivered is described by :func:`row_problem` (claim then
dead-letters it); admin views decode with defaults, failing only on an unknown state.
"""

from __future__ import annotations

from typing import Any

from calmq.errors import StoreError
from calmq.job import SCHEMA_VERSION, ClaimedJob, JobInfo, JobState
from calmq.stores.sqlite import controls


def claim_order(item: tuple[ClaimedJob, int]) -> tuple[int, int]:
    """Sort key of (claimed job, seq): higher priority first, then FIFO."""
    job, seq = item
    return (-job.priority, seq)


def claimed_job(queue: str, row: Any, lease: tuple[str, int, int]) -> tuple[ClaimedJob, int] | str:
    """A claimed row as the job and its seq, or why it cannot be delivered.

    ``lease`` is (token, claimed at, deadline); the row's first field is its rowid.
    """
    token, now, deadline = lease
    _rowid, job_id, task, payload, attempt, max_attempts, priority, enq, run_at, seq, v = row
    problem = row_problem(task, payload, (attempt, max_attempts, priority, enq, run_at), v)
    if problem is not None:
        return problem
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


def row_problem(task: Any, payload: Any, numbers: tuple[Any, ...], version: Any) -> str | None:
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


def known_state(value: Any) -> JobState:
    """A stored state as a public :class:`JobState`; ``StoreError`` for an unknown one."""
    try:
        return controls.public_state(value)
    except ValueError:
        raise StoreError(f"stored job has unknown state {value!r}") from None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def job_info(row: Any) -> JobInfo:
    """An admin view of a row; tolerant of damaged fields except an unknown state."""
    job_id, queue, task, state, payload, priority, attempt, max_att = row[:8]
    enqueued_at, run_at, finished_at, error, traceback, version = row[8:]
    return JobInfo(
        id=str(job_id),
        queue=str(queue),
        task=task if isinstance(task, str) else "",
        state=known_state(state),
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
