"""One claim over a queue with lanes in the SQLite store: decided in memory, written once.

Lanes (``lanes`` table, one row per lane with ``waiting`` jobs) are served round robin: per
pass, one plain job (plain jobs count as one more lane), then the head job of each open
lane in turn order that its rate and concurrency limits allow. A served lane goes to the
back, a blocked one is marked with the time it may open again (``blocked_until``) so that
the next claims and the idle probe skip it, an empty one is dropped.

The passes run in memory over lane heads read up front (one statement for every lane
visited), with rate windows and concurrency slots counted once per key and kept up to date
here; the writes follow in one statement each: the chosen jobs leased, their rate events
logged, the lanes turned, blocked or dropped. Nothing else writes inside the transaction, so
the result is the one that serving the lanes row by row gave, at a cost per claim of a few
statements instead of a few statements per job. Every function takes the connection of the
store's open ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from typing import Any

from calmq.stores.sqlite.controls import Queries, Row, count_window

#: Most lanes one claim visits; the rest wait for the next claim (round robin keeps going).
LANE_SCAN = 200
#: A lane blocked by concurrency with no live lease to wait for is re-checked this soon.
CONC_RECHECK_MS = 1_000

# A lane head: rowid, id, rate_key, rate_limit, rate_period, conc_key, conc_limit.
Head = tuple[Any, ...]


class LaneClaim:
    """One claim over a queue with lanes: plain jobs count as one more lane."""

    def __init__(
        self, conn: sqlite3.Connection, q: Queries, queue: str, lease: tuple[str, int, int]
    ) -> None:
        self.conn, self.q, self.queue = conn, q, queue
        self.token, self.now, self.deadline = lease
        # Rate windows and running counts, read once per key per claim then kept up to date
        # here: counting again for each job made a high limit cost O(window) per job.
        self._windows: dict[str, list[Any]] = {}
        self._running: dict[str, list[Any]] = {}
        self._heads: dict[str, deque[Head]] = {}  # fetched, not yet served, in lane order
        self._fetched: dict[str, int] = {}
        self._exhausted: set[str] = set()  # lanes whose every waiting job was fetched
        self._chosen: list[int] = []  # rowids of the lane jobs to lease
        self._events: list[list[Any]] = []  # rate events of the chosen jobs
        self._lanes_out: dict[str, list[Any]] = {}  # lane -> [new turn or None, blocked_until]
        self._dropped: list[str] = []
        self.limit = 0  # set by run()

    def run(self, limit: int) -> list[Row]:
        """Claim up to ``limit`` jobs, one per open lane (and one plain job) per pass."""
        conn, q = self.conn, self.q
        self.limit = limit
        params = {"queue": self.queue, "now": self.now, "limit": LANE_SCAN}
        lanes = [str(r[0]) for r in conn.execute(q["open_lanes"], params)]
        top = int(conn.execute(q["reserve_seq"], {"n": limit}).fetchone()[0])
        self.turns = iter(range(top - limit + 1, top + 1))
        plain_left = int(
            conn.execute(
                q["count_claimable_plain"], {"queue": self.queue, "limit": limit}
            ).fetchone()[0]
        )
        if lanes:
            parties = len(lanes) + (1 if plain_left else 0)
            self._fetch(lanes, -(-limit // parties), 0)  # an even share each, rounded up
        return self._write(self._choose(lanes, plain_left, limit))

    def _choose(self, lanes: list[str], plain_left: int, limit: int) -> int:
        """Run the passes in memory; return how many plain jobs to take."""
        plain_taken = 0
        plain = True
        while plain_taken + len(self._chosen) < limit and (plain or lanes):
            if not lanes:  # only plain jobs left: the rest of them
                return min(limit - len(self._chosen), plain_left)
            if plain:
                plain = plain_taken < plain_left
                if plain:
                    plain_taken += 1
            still_open: list[str] = []
            for lane in lanes:
                if plain_taken + len(self._chosen) >= limit or self._serve(lane, limit):
                    still_open.append(lane)
            lanes = still_open
        return plain_taken

    def _fetch(self, lanes: list[str], n: int, skip: int) -> None:
        """Read up to ``n`` more head jobs of each lane (past the first ``skip``)."""
        params = {"queue": self.queue, "lanes": json.dumps(lanes), "n": n, "skip": skip}
        got: dict[str, list[Head]] = {lane: [] for lane in lanes}
        for row in self.conn.execute(self.q["lane_heads"], params):
            got[str(row[0])].append(tuple(row[1:]))
        for lane, heads in got.items():
            self._heads.setdefault(lane, deque()).extend(heads)
            self._fetched[lane] = self._fetched.get(lane, 0) + len(heads)
            if len(heads) < n:
                self._exhausted.add(lane)

    def _head(self, lane: str, limit: int) -> Head | None:
        heads = self._heads[lane]
        if not heads and lane not in self._exhausted:
            self._fetch([lane], max(limit - len(self._chosen), 1), self._fetched[lane])
        return heads[0] if heads else None

    def _serve(self, lane: str, limit: int) -> bool:
        """Choose the head of ``lane`` if its limits allow; else mark it blocked (or drop it
        when it is empty). True when the lane stays open."""
        head = self._head(lane, limit)
        if head is None:
            self._dropped.append(lane)
            return False
        rowid, job_id, rate_key, _rate_limit, rate_period, conc_key, _conc_limit = head
        until = self._blocked_until(head)
        if until is not None:
            self._lanes_out[lane] = [self._lanes_out.get(lane, [None])[0], until]
            return False
        self._heads[lane].popleft()
        self._chosen.append(rowid)
        if rate_key is not None:
            self._events.append([rate_key, rate_period, f"{job_id}:{self.token}"])
            self._windows[rate_key][0] += 1
        if conc_key is not None:
            self._running[conc_key][0] += 1
        self._lanes_out[lane] = [next(self.turns), 0]
        return True

    def _blocked_until(self, head: Head) -> int | None:
        """When the limits of ``head`` let it start again, or None if they do now."""
        _rowid, _id, rate_key, rate_limit, rate_period, conc_key, conc_limit = head
        if rate_key is not None:
            window = self._windows.get(rate_key)
            if window is None:
                # This claim adds at most self.limit events: a bound under rate_limit by
                # that much proves the limit cannot be reached, without counting.
                window = self._windows[rate_key] = list(
                    count_window(
                        self.conn, self.q, self.queue, "r", rate_key, rate_period, self.now,
                        below=rate_limit - self.limit,
                    )
                )  # fmt: skip
            count, oldest = window
            if count >= rate_limit:
                return int((oldest if oldest is not None else self.now) + rate_period)
        if conc_key is not None:
            held = self._running.get(conc_key)
            if held is None:
                params = {"queue": self.queue, "conc_key": conc_key, "now": self.now}
                held = self._running[conc_key] = list(
                    self.conn.execute(self.q["count_conc"], params).fetchone()
                )
            running, first_end = held
            if running >= conc_limit:
                return int(first_end if first_end is not None else self.now + CONC_RECHECK_MS)
        return None

    def _write(self, plain_taken: int) -> list[Row]:
        """Lease the chosen jobs, log their rate events, turn, block and drop the lanes."""
        conn, q, key = self.conn, self.q, {"queue": self.queue}
        lease = {**key, "token": self.token, "deadline": self.deadline}
        rows: list[Row] = []
        if plain_taken:
            rows += conn.execute(q["claim_ready"], {**lease, "limit": plain_taken}).fetchall()
        if self._chosen:
            params = {**lease, "rowids": json.dumps(self._chosen)}
            rows += conn.execute(q["claim_rows"], params).fetchall()
        if self._events:
            params = {**key, "kind": "r", "now": self.now, "events": json.dumps(self._events)}
            conn.execute(q["window_add_many"], params)
        dropped = set(self._dropped)
        updates = [[lane, *out] for lane, out in self._lanes_out.items() if lane not in dropped]
        if updates:
            conn.execute(q["update_lanes"], {**key, "updates": json.dumps(updates)})
        if dropped:
            conn.execute(q["drop_lanes"], {**key, "lanes": json.dumps(sorted(dropped))})
        return rows
