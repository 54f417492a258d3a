"""The worker registry of the SQLite store (table ``workers``, migration 0003).

Functions here run on a connection of :class:`~calmq.stores.sqlite.store.SqliteStore`:
``record``, ``drop_expired`` and ``forget`` inside its ``BEGIN IMMEDIATE`` transactions,
``live`` as a plain read. A heartbeat replaces the worker's row; ``seen_at`` is the store's
time of that heartbeat (the record's own ``seen_at_ms`` is ignored) and ``expires_at`` that
time plus the worker's ``ttl_ms``. Expired rows are never listed, and are deleted at most
:data:`PRUNE_LIMIT` per call, so neither a heartbeat nor a listing holds the write lock for
long after many workers crashed.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from calmq.job import WorkerInfo

#: Most expired rows one heartbeat or listing deletes.
PRUNE_LIMIT = 100

Queries = dict[str, str]


def record(conn: sqlite3.Connection, q: Queries, worker: WorkerInfo, now: int) -> None:
    """Replace ``worker``'s row (alive until ``now + ttl_ms``) and drop a few expired rows."""
    drop_expired(conn, q, now)
    params = {
        "id": worker.id,
        "info": msgspec.json.encode(worker),
        "now": now,
        "expires_at": now + worker.ttl_ms,
    }
    conn.execute(q["record_worker"], params)


def live(conn: sqlite3.Connection, q: Queries, now: int) -> tuple[list[WorkerInfo], bool]:
    """The workers alive at ``now`` sorted by id, and whether expired rows wait to be dropped.

    A row that does not decode as a ``WorkerInfo``, or holds another id (foreign data), is
    left out rather than failing the whole listing; it still expires on schedule.
    """
    workers = [
        info
        for row in conn.execute(q["live_workers"], {"now": now}).fetchall()
        if (info := _decode(row)) is not None
    ]
    stale = bool(conn.execute(q["any_expired_worker"], {"now": now}).fetchone()[0])
    return workers, stale


def drop_expired(conn: sqlite3.Connection, q: Queries, now: int) -> int:
    """Delete up to :data:`PRUNE_LIMIT` rows expired at ``now``; return how many."""
    deleted: int = conn.execute(
        q["drop_expired_workers"], {"now": now, "limit": PRUNE_LIMIT}
    ).rowcount
    return deleted


def forget(conn: sqlite3.Connection, q: Queries, worker_id: str) -> None:
    """Delete a worker's row, if any."""
    conn.execute(q["forget_worker"], {"id": worker_id})


def _decode(row: tuple[Any, ...]) -> WorkerInfo | None:
    worker_id, blob, seen_at = row
    if not isinstance(blob, bytes | str) or not isinstance(seen_at, int):
        return None
    try:
        info = msgspec.json.decode(blob, type=WorkerInfo)
    except msgspec.DecodeError:  # includes ValidationError
        return None
    if info.id != worker_id:
        return None
    return msgspec.structs.replace(info, seen_at_ms=seen_at)
