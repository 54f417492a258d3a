"""Needless-work and overload controls of the SQLite store, run inside its transactions.

Every function here takes the connection of an open ``BEGIN IMMEDIATE`` transaction of
:class:`~calmq.stores.sqlite.store.SqliteStore`, so each check-then-write is atomic. Plain
jobs never reach this module: enqueue consults it only for jobs that carry a control or for
a queue with a bound, claim only when the queue has lanes (``lane_claim.py`` serves them).

Lanes: a job with a rate, concurrency or fairness key waits in state ``waiting`` in its lane
(``lanes`` table, one row per lane with waiting jobs, ``blocked_until`` set while its limits
keep it shut). This module adds lanes and reopens those of a freed concurrency slot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from calmq.job import (
    DuplicatePolicy,
    EnqueueOutcome,
    EnqueueResult,
    JobState,
    NewJob,
    QueueOverflow,
    UniqueScope,
)

Queries = dict[str, str]
Row = tuple[Any, ...]

_PENDING = ("ready", "scheduled", "waiting")
_ACTIVE = (*_PENDING, "running")


def has_controls(job: NewJob) -> bool:
    """True when enqueue must look at anything beyond the plain insert."""
    return (
        job.unique_key is not None
        or job.throttle_key is not None
        or job.rate_key is not None
        or job.concurrency_key is not None
        or job.fairness_key is not None
    )


def public_state(value: str) -> JobState:
    """The API state of a stored state (``waiting`` is a ready job in a lane)."""
    return JobState.READY if value == "waiting" else JobState(value)


# --------------------------------------------------------------------------- enqueue


def admit(conn: sqlite3.Connection, q: Queries, job: NewJob, now: int) -> EnqueueResult | None:
    """Apply the unique key and throttle of ``job``: a result when it is not to be inserted
    (an existing id, a duplicate, replaced, throttled), None to go on with the insert."""
    row = conn.execute(q["job_state"], {"queue": job.queue, "id": job.id}).fetchone()
    if row is not None:
        return EnqueueResult(job.id, False, public_state(row[0]), EnqueueOutcome.EXISTS)
    if job.unique_key is not None:
        result = _check_unique(conn, q, job, now)
        if result is not None:
            return result
    if job.throttle_key is not None:
        count, _oldest = count_window(
            conn, q, job.queue, "t", job.throttle_key, job.throttle_period_ms, now,
            below=job.throttle_limit,
        )  # fmt: skip
        if count >= job.throttle_limit:
            return EnqueueResult(job.id, False, JobState.DROPPED, EnqueueOutcome.THROTTLED)
    return None


def _check_unique(
    conn: sqlite3.Connection, q: Queries, job: NewJob, now: int
) -> EnqueueResult | None:
    found = conn.execute(q["get_unique"], {"queue": job.queue, "key": job.unique_key}).fetchone()
    if found is None:
        return None
    holder, scope, expires_at, state = found
    if scope == UniqueScope.TTL:
        holds = expires_at is not None and expires_at > now
    else:
        holds = state in (_ACTIVE if scope == UniqueScope.ACTIVE else _PENDING)
    if not holds:
        return None
    if job.unique_policy is DuplicatePolicy.REPLACE and state in _PENDING:
        run_at = _due(job, now)
        params = {"queue": job.queue, "id": holder, "payload": job.payload, "run_at": run_at,
                  "now": now}  # fmt: skip
        replaced = conn.execute(q["replace_pending"], params).fetchone()
        if replaced is not None:
            new_state, lane, conc_key, seq = replaced
            if new_state == "waiting":
                add_lanes(conn, q, job.queue, [(lane, conc_key, seq)])
            return EnqueueResult(
                holder, False, public_state(new_state), EnqueueOutcome.REPLACED, holder
            )
    shown = public_state(state) if state is not None else JobState.SUCCEEDED
    return EnqueueResult(holder, False, shown, EnqueueOutcome.DUPLICATE, holder)


def _due(job: NewJob, now: int) -> int:
    due = job.run_at_ms if job.run_at_ms is not None else now + max(job.delay_ms, 0)
    return max(due, now)


def queue_bound(conn: sqlite3.Connection, q: Queries, queue: str) -> tuple[int, str] | None:
    """The (max_ready, overflow) of a bounded queue, or None."""
    row = conn.execute(q["get_queue_limit"], {"queue": queue}).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def make_room(
    conn: sqlite3.Connection, q: Queries, job: NewJob, now: int, bound: tuple[int, str]
) -> EnqueueResult | None:
    """Enforce the queue's bound for a job that would be ready now: a REJECTED result, or
    None after dead-lettering the oldest ready job (or when there is room)."""
    if _due(job, now) > now:
        return None
    max_ready, overflow = bound
    ready = int(conn.execute(q["count_ready"], {"queue": job.queue}).fetchone()[0])
    if ready < max_ready:
        return None
    if overflow != QueueOverflow.DROP_OLDEST:
        return EnqueueResult(job.id, False, JobState.DROPPED, EnqueueOutcome.REJECTED)
    for _ in range(ready - max_ready + 1):
        conn.execute(q["drop_oldest_ready"], {"queue": job.queue, "now": now}).fetchall()
    return None


def insert_params(job: NewJob, lane: str | None) -> dict[str, Any]:
    """The lane (``job.lane``, computed once by the caller) and limit columns of ``job`` for
    ``insert_limited_job``."""
    return {
        "lane": lane,
        "rate_key": job.rate_key,
        "rate_limit": job.rate_limit if job.rate_key is not None else None,
        "rate_period": job.rate_period_ms if job.rate_key is not None else None,
        "conc_key": job.concurrency_key,
        "conc_limit": job.concurrency_limit if job.concurrency_key is not None else None,
    }


def take_unique_key(conn: sqlite3.Connection, q: Queries, job: NewJob, now: int) -> bool:
    """Take the unique key of ``job`` in one statement when no job has its id and the key
    does not hold (the rules of ``_check_unique``). False (nothing written): ``admit`` must
    look closer. Only for a job with no throttle into an unbounded queue: nothing may refuse
    it once its key is taken."""
    params = {"queue": job.queue, "key": job.unique_key, "job_id": job.id,
              "scope": job.unique_scope.value, "expires_at": _unique_expiry(job, now),
              "now": now}  # fmt: skip
    return conn.execute(q["claim_unique"], params).rowcount == 1


def _unique_expiry(job: NewJob, now: int) -> int | None:
    return now + job.unique_ttl_ms if job.unique_scope is UniqueScope.TTL else None


def after_insert(
    conn: sqlite3.Connection,
    q: Queries,
    job: NewJob,
    state: str,
    seq: int,
    now: int,
    *,
    lane: str | None,
    unique_taken: bool = False,
) -> None:
    """Record a created job's unique key (unless ``take_unique_key`` already did), throttle
    event and lane (``job.lane``, computed once by the caller)."""
    if job.unique_key is not None and not unique_taken:
        expires = _unique_expiry(job, now)
        params = {"queue": job.queue, "key": job.unique_key, "job_id": job.id,
                  "scope": job.unique_scope.value, "expires_at": expires}  # fmt: skip
        conn.execute(q["set_unique"], params)
    if job.throttle_key is not None:
        params = {"queue": job.queue, "kind": "t", "key": job.throttle_key, "now": now,
                  "period": job.throttle_period_ms, "member": job.id}  # fmt: skip
        conn.execute(q["window_add"], params)
    if state == "waiting" and lane is not None:
        params = {"queue": job.queue, "lane": lane, "turn": seq, "conc_key": job.concurrency_key}
        conn.execute(q["add_lane"], params)


def count_window(
    conn: sqlite3.Connection,
    q: Queries,
    queue: str,
    kind: str,
    key: str,
    period: int,
    now: int,
    *,
    below: int | None = None,
) -> tuple[int, int | None]:
    """Events of a sliding window in the last ``period`` ms: (count, oldest time).

    With ``below``: when the table holds fewer than ``below`` events of any key, that
    upper bound is returned instead of the exact count (oldest None): enough for a caller
    that only asks whether the count stays under ``below``, and O(log n) where counting is
    O(window), which made a high limit far from full cost several µs per job (issue 5).
    """
    params = {"queue": queue, "kind": kind, "key": key, "cutoff": now - period}
    conn.execute(q["window_prune"], params)
    if below is not None:
        bound = int(conn.execute(q["window_bound"]).fetchone()[0])
        if bound < below:
            return bound, None
    count, oldest = conn.execute(q["window_count"], params).fetchone()
    return int(count), oldest


# --------------------------------------------------------------------------- lanes


def add_lanes(
    conn: sqlite3.Connection, q: Queries, queue: str, rows: Iterable[tuple[Any, Any, Any]]
) -> None:
    """Make sure the lanes of jobs that just became ``waiting`` are in the round robin.
    ``rows`` are (lane, conc_key, seq) of those jobs; plain jobs (lane NULL) are skipped."""
    seen: set[str] = set()
    for lane, conc_key, seq in rows:
        if lane is None or lane in seen:
            continue
        seen.add(lane)
        params = {"queue": queue, "lane": lane, "turn": seq, "conc_key": conc_key}
        conn.execute(q["add_lane"], params)


def slots_freed(conn: sqlite3.Connection, q: Queries, queue: str, conc_keys: Iterable[Any]) -> None:
    """Reopen the lanes of concurrency keys that just lost a running job."""
    for conc_key in {k for k in conc_keys if k is not None}:
        conn.execute(q["unblock_conc"], {"queue": queue, "conc_key": conc_key})


# --------------------------------------------------------------------------- maintenance


def sweep(
    conn: sqlite3.Connection, q: Queries, queue: str, now: int, limit: int, after: str
) -> str:
    """Forget limit events past any window, and the unique keys that no longer hold among
    the next ``limit`` keys after ``after``; return where the next sweep starts ('' when
    it went past the last key: from the first again).

    Keys of finished jobs never block (enqueue checks the holder's state), so this only
    frees space; visiting a bounded span per call keeps its cost flat however many pending
    jobs hold keys."""
    span = {"queue": queue, "after": after, "scan": limit}
    last, visited = conn.execute(q["unique_sweep_span"], span).fetchone()
    if last is not None:
        params = {"queue": queue, "after": after, "last": last, "now": now}
        conn.execute(q["sweep_unique"], params)
    conn.execute(q["sweep_events"], {"queue": queue, "now": now, "limit": limit})
    return str(last) if last is not None and visited >= limit else ""
