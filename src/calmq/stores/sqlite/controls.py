"""Needless-work and overload controls of the SQLite store, run inside its transactions.

Every function here takes the connection of an open ``BEGIN IMMEDIATE`` transaction of
:class:`~calmq.stores.sqlite.store.SqliteStore`, so each check-then-write is atomic. Plain
jobs never reach this module: enqueue consults it only for jobs that carry a control or for
a queue with a bound, claim only when the queue has lanes.

Lanes: a job with a rate, concurrency or fairness key waits in state ``waiting`` in its lane
(``lanes`` table, one row per lane with waiting jobs). A claim visits open lanes in turn
order, serves the head job of each lane that its limits allow, moves a served lane to the
back and marks a blocked one with the time it may open again (``blocked_until``), so the
next claims and the idle probe skip it. Cost: a claim on a queue with lanes does a few
index lookups per lane visited (at most ``LANE_SCAN`` lanes per call).
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

#: Most lanes one claim visits; the rest wait for the next claim (round robin keeps going).
LANE_SCAN = 200
#: A lane blocked by concurrency with no live lease to wait for is re-checked this soon.
CONC_RECHECK_MS = 1_000

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
        count, _oldest = _window(
            conn, q, job.queue, "t", job.throttle_key, job.throttle_period_ms, now
        )
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


def insert_params(job: NewJob) -> dict[str, Any]:
    """The lane and limit columns of ``job`` for ``insert_limited_job``."""
    return {
        "lane": job.lane,
        "rate_key": job.rate_key,
        "rate_limit": job.rate_limit if job.rate_key is not None else None,
        "rate_period": job.rate_period_ms if job.rate_key is not None else None,
        "conc_key": job.concurrency_key,
        "conc_limit": job.concurrency_limit if job.concurrency_key is not None else None,
    }


def after_insert(
    conn: sqlite3.Connection, q: Queries, job: NewJob, state: str, seq: int, now: int
) -> None:
    """Record a created job's unique key, throttle event and lane."""
    if job.unique_key is not None:
        expires = now + job.unique_ttl_ms if job.unique_scope is UniqueScope.TTL else None
        params = {"queue": job.queue, "key": job.unique_key, "job_id": job.id,
                  "scope": job.unique_scope.value, "expires_at": expires}  # fmt: skip
        conn.execute(q["set_unique"], params)
    if job.throttle_key is not None:
        params = {"queue": job.queue, "kind": "t", "key": job.throttle_key, "now": now,
                  "period": job.throttle_period_ms, "member": job.id}  # fmt: skip
        conn.execute(q["window_add"], params)
    if state == "waiting":
        add_lanes(conn, q, job.queue, [(job.lane, job.concurrency_key, seq)])


def _window(
    conn: sqlite3.Connection, q: Queries, queue: str, kind: str, key: str, period: int, now: int
) -> tuple[int, int | None]:
    """Events of a sliding window in the last ``period`` ms: (count, oldest time)."""
    params = {"queue": queue, "kind": kind, "key": key, "cutoff": now - period}
    conn.execute(q["window_prune"], params)
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


class LaneClaim:
    """One claim over a queue with lanes: plain jobs count as one more lane."""

    def __init__(
        self, conn: sqlite3.Connection, q: Queries, queue: str, lease: tuple[str, int, int]
    ) -> None:
        self.conn, self.q, self.queue = conn, q, queue
        self.token, self.now, self.deadline = lease
        # Rate windows counted once per claim call, then kept up to date here: counting the
        # window again for each job made a high limit cost O(window) per job.
        self._windows: dict[str, list[Any]] = {}
        self._running: dict[str, list[Any]] = {}  # the same for concurrency keys

    def run(self, limit: int) -> list[Row]:
        """Claim up to ``limit`` jobs, one per open lane (and one plain job) per pass."""
        q, params = self.q, {"queue": self.queue, "now": self.now, "limit": LANE_SCAN}
        lanes = [str(r[0]) for r in self.conn.execute(q["open_lanes"], params)]
        top = int(self.conn.execute(q["reserve_seq"], {"n": limit}).fetchone()[0])
        self.turns = iter(range(top - limit + 1, top + 1))
        rows: list[Row] = []
        plain = True
        while len(rows) < limit and (plain or lanes):
            if not lanes:  # only plain jobs left: the rest in one statement
                rows += self._plain(limit - len(rows))
                break
            if plain:
                got = self._plain(1)
                rows += got
                plain = bool(got)
            still_open: list[str] = []
            for lane in lanes:
                if len(rows) >= limit:
                    still_open.append(lane)
                    continue
                row = self._serve(lane)
                if row is not None:
                    rows.append(row)
                    still_open.append(lane)
            lanes = still_open
        return rows

    def _plain(self, limit: int) -> list[Row]:
        params = {"queue": self.queue, "token": self.token, "deadline": self.deadline,
                  "limit": limit}  # fmt: skip
        return list(self.conn.execute(self.q["claim_ready"], params).fetchall())

    def _serve(self, lane: str) -> Row | None:
        """Claim the head of ``lane`` if its limits allow; else mark it blocked (or drop it
        when it is empty)."""
        conn, q, key = self.conn, self.q, {"queue": self.queue, "lane": lane}
        head = conn.execute(q["lane_head"], key).fetchone()
        if head is None:
            conn.execute(q["drop_lane"], key)
            return None
        rowid, rate_key, rate_limit, rate_period, conc_key, conc_limit = head
        if rate_key is not None:
            window = self._windows.get(rate_key)
            if window is None:
                count, oldest = _window(conn, q, self.queue, "r", rate_key, rate_period, self.now)
                window = self._windows[rate_key] = [count, oldest]
            count, oldest = window
            if count >= rate_limit:
                until = (oldest if oldest is not None else self.now) + rate_period
                conn.execute(q["block_lane"], {**key, "until": until})
                return None
        if conc_key is not None:
            held = self._running.get(conc_key)
            if held is None:
                params = {"queue": self.queue, "conc_key": conc_key, "now": self.now}
                held = self._running[conc_key] = list(
                    conn.execute(q["count_conc"], params).fetchone()
                )
            running, first_end = held
            if running >= conc_limit:
                until = first_end if first_end is not None else self.now + CONC_RECHECK_MS
                conn.execute(q["block_lane"], {**key, "until": until})
                return None
        params = {"rowid": rowid, "token": self.token, "deadline": self.deadline}
        row: Row = conn.execute(q["claim_row"], params).fetchone()
        if rate_key is not None:
            event = {"queue": self.queue, "kind": "r", "key": rate_key, "now": self.now,
                     "period": rate_period, "member": f"{row[1]}:{self.token}"}  # fmt: skip
            conn.execute(q["window_add"], event)
            self._windows[rate_key][0] += 1
        if conc_key is not None:
            self._running[conc_key][0] += 1
        conn.execute(q["turn_lane"], {**key, "turn": next(self.turns)})
        return row


# --------------------------------------------------------------------------- maintenance


def sweep(conn: sqlite3.Connection, q: Queries, queue: str, now: int, limit: int) -> None:
    """Forget unique keys that no longer hold and limit events past any window."""
    conn.execute(q["sweep_unique"], {"queue": queue, "now": now, "limit": limit})
    conn.execute(q["sweep_events"], {"queue": queue, "now": now, "limit": limit})
