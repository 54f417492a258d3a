"""The dashboard's JSON views: pure functions from the Store Protocol to plain dicts.

Framework-neutral (no Starlette here), so the views are tested without HTTP and can back
another front end. Input is validated here (queue names, states, bounds) and a bad value
raises :class:`BadRequest`; store errors (``QueueUnavailable``...) pass through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import msgspec

from calmq.app import App
from calmq.errors import CalmqError
from calmq.job import JobInfo, JobState, WorkerInfo
from calmq.serializers import Serializer
from calmq.stores.base import Store
from calmq.task import validate_queue_name

#: States the job browser can list (the stores index these; see ``Store.list_jobs``).
LISTABLE = (JobState.READY, JobState.SCHEDULED, JobState.RUNNING, JobState.DEAD)
MAX_PAGE = 500
#: Ids one bulk action may name; larger sets go through ``all`` or several calls.
MAX_BULK = 1000
#: How many jobs a task-name search scans past ``offset`` before it gives up.
MAX_SCAN = 5000
#: Raw payloads are shown up to this many bytes.
MAX_PAYLOAD_SHOWN = 64 * 1024
#: List views show the first line of an error, cut here.
ERROR_SUMMARY = 300


class BadRequest(ValueError):
    """A view got input it cannot serve (bad queue name, state, bounds); HTTP 400."""


class NotFound(LookupError):
    """The job asked for does not exist; HTTP 404."""


@dataclasses.dataclass(frozen=True)
class Source:
    """What the dashboard reads: a store, and the app's serializer when it has the app
    (then job arguments are decoded; with a bare store they are shown as raw text)."""

    store: Store
    serializer: Serializer | None = None
    app: App | None = None


def source_of(store_or_app: Store | App) -> Source:
    """A :class:`Source` for an :class:`App` (store and serializer) or a bare store."""
    if isinstance(store_or_app, App):
        return Source(store_or_app.store, store_or_app.serializer, store_or_app)
    return Source(store_or_app)


# --- reading --------------------------------------------------------------------------


def overview(src: Source) -> dict[str, Any]:
    """Every queue with its depth per state and its controls, plus the live worker count."""
    store = src.store
    queues = []
    for counts in store.counts():
        config = store.queue_config(counts.queue)
        queues.append({
            **msgspec.to_builtins(counts), "paused": config.paused,
            "max_ready": config.max_ready, "overflow": config.overflow.value,
        })  # fmt: skip
    return {
        "store": store.display_url,
        "now_ms": store.now_ms(),
        "queues": queues,
        "workers_alive": len(store.workers()),
        "decodes_arguments": src.serializer is not None,
    }


def worker_view(info: WorkerInfo) -> dict[str, Any]:
    """One worker as JSON: identity, queues, load, last heartbeat, versions and stats."""
    return {
        "id": info.id, "host": info.host, "pid": info.pid, "queues": list(info.queues),
        "concurrency": info.concurrency, "pool": info.pool, "running": list(info.running),
        "started_at_ms": info.started_at_ms, "seen_at_ms": info.seen_at_ms,
        "ttl_ms": info.ttl_ms, "versions": dict(info.versions), "stats": dict(info.stats),
    }  # fmt: skip


def workers(src: Source) -> dict[str, Any]:
    """The live workers, sorted by id (the store's worker registry)."""
    return {"now_ms": src.store.now_ms(), "workers": [worker_view(w) for w in src.store.workers()]}


def job_summary(job: JobInfo) -> dict[str, Any]:
    """A job for list views: no payload or traceback, the error's first line only."""
    error = job.error.splitlines()[0][:ERROR_SUMMARY] if job.error else None
    return {
        "id": job.id, "queue": job.queue, "task": job.task, "state": job.state.value,
        "priority": job.priority, "attempt": job.attempt, "max_attempts": job.max_attempts,
        "enqueued_at_ms": job.enqueued_at_ms, "run_at_ms": job.run_at_ms,
        "finished_at_ms": job.finished_at_ms, "error": error,
    }  # fmt: skip


def list_jobs(
    src: Source, queue: str, state: str, *, task: str = "", offset: int = 0, limit: int = 50
) -> dict[str, Any]:
    """One page of a queue's jobs in one state; ``task`` keeps jobs whose task name contains
    it (case-insensitive), scanning at most ``MAX_SCAN`` jobs past ``offset``.

    ``next_offset`` is where the following page starts (None at the end).
    """
    check_queue(queue)
    job_state = check_state(state)
    limit, offset = check_bounds(limit, offset)
    needle = task.strip().lower()
    if not needle:
        jobs = src.store.list_jobs(queue, job_state, offset=offset, limit=limit + 1)
        more = len(jobs) > limit
        found, next_offset = jobs[:limit], (offset + limit if more else None)
    else:
        found, next_offset = _scan_for_task(src.store, queue, job_state, needle, offset, limit)
    return {
        "queue": queue, "state": job_state.value, "task": task, "offset": offset,
        "limit": limit, "next_offset": next_offset, "jobs": [job_summary(j) for j in found],
    }  # fmt: skip


def _scan_for_task(
    store: Store, queue: str, state: JobState, needle: str, offset: int, limit: int
) -> tuple[list[JobInfo], int | None]:
    found: list[JobInfo] = []
    position = offset
    while position < offset + MAX_SCAN:
        page = store.list_jobs(queue, state, offset=position, limit=200)
        for index, job in enumerate(page):
            if needle in job.task.lower():
                found.append(job)
                if len(found) == limit:
                    return found, position + index + 1
        if len(page) < 200:
            return found, None
        position += len(page)
    return found, position  # scanned enough: the caller may ask for the next stretch


def find_job(src: Source, job_id: str, queue: str | None = None) -> dict[str, Any]:
    """Jobs with exactly this id, in ``queue`` or in every queue (ids are per queue)."""
    job_id = job_id.strip()
    if not job_id or len(job_id) > 200:
        raise BadRequest("a job id has 1-200 characters")
    names = [check_queue(queue)] if queue else src.store.queues()
    hits = [job for name in names if (job := src.store.get_job(name, job_id)) is not None]
    return {"id": job_id, "jobs": [job_summary(j) for j in hits]}


def job_detail(src: Source, queue: str, job_id: str) -> dict[str, Any]:
    """Everything about one job: attempts, error and traceback, and its arguments (decoded
    with the app's serializer when there is one, else the raw payload as text)."""
    check_queue(queue)
    job = src.store.get_job(queue, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r} in queue {queue!r}")
    return {
        **job_summary(job), "error": job.error, "traceback": job.traceback,
        "schema_version": job.schema_version, "payload_bytes": len(job.payload),
        **_payload_view(src.serializer, job.payload),
    }  # fmt: skip


def _payload_view(serializer: Serializer | None, payload: bytes) -> dict[str, Any]:
    raw = payload[:MAX_PAYLOAD_SHOWN].decode("utf-8", "replace")
    view: dict[str, Any] = {"raw_payload": raw, "arguments": None, "decode_error": None}
    if serializer is None:
        return view
    try:
        envelope = serializer.decode(payload)
    except CalmqError as exc:
        view["decode_error"] = str(exc)
        return view
    # Arguments become JSON; anything JSON cannot show (pickled objects) is shown by repr.
    shown = {"args": envelope.a, "kwargs": envelope.k, "timeout": envelope.t}
    view["arguments"] = msgspec.json.decode(msgspec.json.encode(shown, enc_hook=repr))
    return view


def dead_jobs(src: Source, queue: str | None = None, *, limit: int = 100) -> dict[str, Any]:
    """Dead jobs of one queue or of all, newest first, with their last error."""
    limit, _ = check_bounds(limit, 0)
    names = [check_queue(queue)] if queue else src.store.queues()
    jobs: list[JobInfo] = []
    for name in names:
        jobs.extend(src.store.list_jobs(name, JobState.DEAD, limit=limit))
    jobs.sort(key=lambda j: j.finished_at_ms or 0, reverse=True)
    total = sum(c.dead for c in src.store.counts(names)) if names else 0
    return {"queue": queue, "total": total, "jobs": [job_summary(j) for j in jobs[:limit]]}


# --- actions --------------------------------------------------------------------------


def replay_dead(
    src: Source, queue: str | None, ids: Sequence[str] | None, *, every: bool = False
) -> dict[str, Any]:
    """Put dead jobs back to ready: the given ids, or with ``every`` all of them (in
    ``queue``, or in every queue)."""
    chosen = check_selection(ids, every)
    names = [check_queue(queue)] if queue else src.store.queues()
    return {"replayed": sum(src.store.replay_dead(name, chosen) for name in names)}


def purge_dead(
    src: Source, queue: str | None, ids: Sequence[str] | None, *, every: bool = False
) -> dict[str, Any]:
    """Delete dead jobs for good: the given ids, or with ``every`` all of them."""
    chosen = check_selection(ids, every)
    names = [check_queue(queue)] if queue else src.store.queues()
    return {"purged": sum(src.store.purge_dead(name, chosen) for name in names)}


def pause_queue(src: Source, queue: str) -> dict[str, Any]:
    """Stop claims from ``queue``."""
    check_queue(queue)
    (src.app.pause if src.app is not None else src.store.pause)(queue)
    return {"queue": queue, "paused": src.store.queue_config(queue).paused}


def resume_queue(src: Source, queue: str) -> dict[str, Any]:
    """Let claims from ``queue`` start again."""
    check_queue(queue)
    (src.app.resume if src.app is not None else src.store.resume)(queue)
    return {"queue": queue, "paused": src.store.queue_config(queue).paused}


def cancel_job(src: Source, queue: str, job_id: str) -> dict[str, Any]:
    """Cancel a queued job, or revoke a running one's lease."""
    check_queue(queue)
    if src.app is not None:
        outcome = src.app.cancel(job_id, queue=queue)
    else:
        outcome = src.store.cancel(queue, job_id)
    return {"queue": queue, "id": job_id, "outcome": outcome.value}


# --- validation -----------------------------------------------------------------------


def check_queue(queue: str) -> str:
    """``queue`` if it is a valid queue name, else BadRequest."""
    try:
        validate_queue_name(queue)
    except CalmqError as exc:
        raise BadRequest(str(exc)) from None
    return queue


def check_state(state: str) -> JobState:
    """The listable state named ``state``, else BadRequest."""
    try:
        job_state = JobState(state)
    except ValueError:
        job_state = None
    if job_state not in LISTABLE:
        names = ", ".join(s.value for s in LISTABLE)
        raise BadRequest(f"state must be one of {names}, got {state!r}")
    return job_state


def check_bounds(limit: int, offset: int) -> tuple[int, int]:
    """``(limit, offset)`` within 1..MAX_PAGE and >= 0, else BadRequest."""
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise BadRequest(f"limit must be 1-{MAX_PAGE} and offset >= 0")
    return limit, offset


def check_selection(ids: Sequence[str] | None, every: bool) -> list[str] | None:
    """The ids to act on, or None for "all"; exactly one of the two must be given, so an
    empty or missing list can never mean "everything" by accident."""
    if every:
        if ids:
            raise BadRequest("give ids or all, not both")
        return None
    if not ids:
        raise BadRequest("give the ids to act on, or all=true")
    if len(ids) > MAX_BULK or not all(isinstance(i, str) and 0 < len(i) <= 200 for i in ids):
        raise BadRequest(f"ids: 1-{MAX_BULK} job ids of 1-200 characters")
    return list(ids)
