"""Translating between calmq records and the Redis store's replies and arguments.

Script arguments built from records (:func:`enqueue_args`, :func:`flatten`), flat script
replies decoded into records (:func:`enqueue_result`, :func:`job_info`, ...), and error
replies classified as "the server cannot take this now" (:func:`unavailable_reason`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TimeoutError,
)

from calmq.errors import ConfigurationError, StoreError
from calmq.job import (
    SCHEMA_VERSION,
    EnqueueOutcome,
    EnqueueResult,
    JobInfo,
    JobState,
    Lease,
    NewJob,
)
from calmq.stores.redis.scripts import Arg

#: Each enqueued job comes back as this many entries of the flat reply of enqueue.lua.
ENQUEUE_FIELDS = 4
CORRUPT_REASON = "job record missing or corrupt"

# First word of a Redis error reply -> QueueUnavailable.reason. These mean "the server
# cannot take this write right now", not "calmq's data is wrong".
_UNAVAILABLE_CODES = {
    "OOM": "oom",
    "MISCONF": "misconf",
    "READONLY": "readonly",
    "LOADING": "loading",
    "BUSY": "busy",
    "NOREPLICAS": "noreplicas",
    "MASTERDOWN": "masterdown",
    "NOAUTH": "auth",
    "WRONGPASS": "auth",
    "NOPERM": "auth",
    "CLUSTERDOWN": "clusterdown",
    "TRYAGAIN": "tryagain",
}


def unavailable_reason(exc: RedisError | RedisClusterException, message: str) -> str | None:
    """The ``QueueUnavailable.reason`` for ``exc``, or None when it is not about availability.

    redis-py strips the error code off some replies (``OOM ...`` becomes ``...``) but keeps
    it in ``status_code``; replies it does not know keep the code as their first word.
    """
    if isinstance(exc, RedisClusterException):  # no reachable node, slot not covered
        return "cluster"
    if "max number of clients" in message:  # redis-py raises it as a ConnectionError
        return "max_clients"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, AuthenticationError):
        return "auth"
    if isinstance(exc, BusyLoadingError):
        return "loading"
    if isinstance(exc, ConnectionError):
        if "SSL" in message or "certificate" in message:  # wrong CA, expired cert, not TLS
            return "tls"
        return "pool_exhausted" if "No connection available" in message else "connection"
    if isinstance(exc, ResponseError):
        code = exc.status_code or message.split(" ", 1)[0]
        return _UNAVAILABLE_CODES.get(code)
    return None


def enqueue_args(jobs: Sequence[NewJob]) -> list[Arg]:
    """ARGV of enqueue.lua: the schema version, then 8 fields per job, and after a job with
    controls the fields of each control it carries; or, for several jobs that differ only
    in id and payload (an ``enqueue_many`` of one task, as a rule), the shared form: a
    template job without id and payload, then id and payload per job."""
    if len(jobs) > 1 and (shared := _shared_fields(jobs)) is not None:
        args = [SCHEMA_VERSION, "", *shared]
        for job in jobs:
            args += (job.id, job.payload)
        return args
    args = [SCHEMA_VERSION]
    for job in jobs:
        if not job.id:  # '' marks the shared form's template
            raise ConfigurationError("a job id must not be empty")
        args += (job.id, job.task, job.payload, job.priority, job.max_attempts, *_timing(job))
        args += control_args(job)
    return args


def _timing(job: NewJob) -> tuple[Arg, Arg]:
    """A job's delay_ms and run_at_ms fields of enqueue.lua (0 and '' for none)."""
    return (job.delay_ms if job.delay_ms > 0 else 0, "" if job.run_at_ms is None else job.run_at_ms)


def _shared_fields(jobs: Sequence[NewJob]) -> tuple[Arg, ...] | None:
    """The template of enqueue.lua's shared form (task, payload '', priority, max_attempts,
    delay_ms, run_at_ms, controls '') when every job has the first job's, and no controls."""
    first = jobs[0]
    common = (first.task, first.priority, first.max_attempts, first.delay_ms, first.run_at_ms)
    for job in jobs:
        if (
            (job.task, job.priority, job.max_attempts, job.delay_ms, job.run_at_ms) != common
            or (job.unique_key is not None or job.throttle_key is not None or job.lane is not None)
            or not job.id
        ):
            return None
    return (first.task, "", first.priority, first.max_attempts, *_timing(first), "")


def control_args(job: NewJob) -> tuple[Arg, ...]:
    """The controls field of enqueue.lua and what follows it: '' for a plain job, else a
    letter per control group the job carries, in the order ``utrcl``, then each group's
    fields: u(nique) key, scope, ttl_ms, policy; t(hrottle) key, limit, period_ms; r(ate)
    key, limit, period_ms; c(oncurrency) key, limit; l(ane). Only the groups present are
    sent: packing the 13 fields of every group cost a unique or limited job about a fifth of
    its extra client CPU (issue 5)."""
    flags = ""
    fields: list[Arg] = []
    if job.unique_key is not None:
        flags += "u"
        fields += (job.unique_key, job.unique_scope.value, job.unique_ttl_ms,
                   job.unique_policy.value)  # fmt: skip
    if job.throttle_key is not None:
        flags += "t"
        fields += (job.throttle_key, job.throttle_limit, job.throttle_period_ms)
    if job.rate_key is not None:
        flags += "r"
        fields += (job.rate_key, job.rate_limit, job.rate_period_ms)
    if job.concurrency_key is not None:
        flags += "c"
        fields += (job.concurrency_key, job.concurrency_limit)
    lane = job.lane
    if lane is not None:
        flags += "l"
        fields.append(lane)
    return (flags, *fields)


def enqueue_results(jobs: Sequence[NewJob], reply: list[Any] | bytes) -> list[EnqueueResult]:
    """The results for ``jobs`` from enqueue.lua's reply to one call: 4 entries per job, or
    the short reply when every job was created: their state (one string when they share
    it, else one entry per job)."""
    if isinstance(reply, bytes):
        state = _STATES[reply]
        return [EnqueueResult(job.id, True, state) for job in jobs]
    if len(reply) == len(jobs):
        states = _STATES
        return [EnqueueResult(job.id, True, states[s]) for job, s in zip(jobs, reply, strict=True)]
    return [enqueue_result(job, reply, ENQUEUE_FIELDS * n) for n, job in enumerate(jobs)]


def enqueue_result(job: NewJob, reply: list[Any], at: int) -> EnqueueResult:
    """The result for ``job`` from its 4 entries of enqueue.lua's reply, starting at ``at``."""
    created, state, outcome, duplicate_of = reply[at : at + ENQUEUE_FIELDS]
    if created:  # the common case, without decoding
        return EnqueueResult(job.id, True, _STATES[state])
    holder = duplicate_of.decode() if duplicate_of else None
    return EnqueueResult(
        holder or job.id,
        bool(created),
        parse_state(state),
        EnqueueOutcome(outcome.decode()),
        holder,
    )


_STATES = {b"ready": JobState.READY, b"scheduled": JobState.SCHEDULED}


def flatten(leases: Sequence[Lease]) -> list[Arg]:
    """Leases as the flat ``id, token, ...`` ARGV tail of the lease scripts."""
    args: list[Arg] = []
    for lease in leases:
        args += (lease.id, lease.token)
    return args


def score(raw: bytes) -> int:
    """A sorted-set score (ms or seq) as an int."""
    # Redis prints integral scores as integers, but float() also reads "1.7e+12".
    return int(float(raw))


def parse_state(raw: bytes) -> JobState:
    """A stored state name as a :class:`JobState`; ``StoreError`` for an unknown one."""
    try:
        return JobState(raw.decode())
    except ValueError:
        raise StoreError(f"stored job has an unknown state {raw!r}") from None


def opt_int(raw: bytes | None) -> int | None:
    """An optional integer field (empty or missing: None)."""
    return int(raw) if raw else None


def opt_text(raw: bytes | None) -> str | None:
    """An optional text field (empty or missing: None), decoded leniently."""
    return raw.decode(errors="replace") if raw else None


def job_info(queue: str, job_id: str, fields: dict[bytes, bytes]) -> JobInfo:
    """An admin view of a job hash; a hash without a state reads as dead and corrupt."""
    get = fields.get
    state = get(b"state")
    return JobInfo(
        id=job_id,
        queue=queue,
        task=get(b"task", b"").decode(),
        state=parse_state(state) if state else JobState.DEAD,
        payload=get(b"payload", b""),
        priority=int(get(b"priority") or 0),
        attempt=int(get(b"attempt") or 0),
        max_attempts=int(get(b"max_attempts") or 0),
        enqueued_at_ms=int(get(b"enq") or 0),
        run_at_ms=opt_int(get(b"run_at") or get(b"enq")),  # no run_at: the enqueue time
        finished_at_ms=opt_int(get(b"fin")),
        error=opt_text(get(b"error")) or (None if state else CORRUPT_REASON),
        traceback=opt_text(get(b"tb")),
        schema_version=int(get(b"v") or 1),  # no v: version 1 (see enqueue.lua)
    )


def corrupt_info(queue: str, job_id: str, state: JobState, fields: object) -> JobInfo:
    """A stand-in for an index entry whose job hash is missing or unreadable."""
    found = fields if isinstance(fields, dict) else {}
    return JobInfo(
        id=job_id,
        queue=queue,
        task=found.get(b"task", b"").decode(errors="replace"),
        state=state,
        payload=b"",
        priority=0,
        attempt=0,
        max_attempts=0,
        enqueued_at_ms=0,
        finished_at_ms=opt_int(found.get(b"fin")),
        error=opt_text(found.get(b"error")) or CORRUPT_REASON,
    )
