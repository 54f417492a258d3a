"""Job records: the plain data that crosses the store seam. No I/O here.

Times are integer milliseconds since the Unix epoch *on the store's clock* (Redis ``TIME``
or the SQLite host's clock), never a worker's clock. Delays are relative milliseconds so the
store can add them to its own clock.
"""

from __future__ import annotations

import enum
import os
import time

import msgspec

#: Version of the stored job layout. Bumped when the meaning of stored fields changes; the
#: stores and the worker accept every older version they know how to read.
SCHEMA_VERSION = 1

MIN_PRIORITY = -1000
MAX_PRIORITY = 1000


class JobState(enum.StrEnum):
    """Where a job is in its life."""

    SCHEDULED = "scheduled"  # waiting for its run time (delayed job or retry backoff)
    READY = "ready"  # claimable now
    RUNNING = "running"  # held by a worker under a lease
    SUCCEEDED = "succeeded"  # finished; kept for a while so enqueue stays idempotent
    DEAD = "dead"  # out of attempts or undeliverable; kept in the dead-letter store
    CANCELLED = "cancelled"  # removed by ``cancel``; kept like succeeded jobs
    #: Never stored: refused at enqueue by a throttle or a full queue (enqueue results only).
    DROPPED = "dropped"


class UniqueScope(enum.StrEnum):
    """How long a unique key blocks another enqueue with the same key."""

    QUEUED = "queued"  # while the job is ready or scheduled
    ACTIVE = "active"  # while it is ready, scheduled or running
    TTL = "ttl"  # for a fixed time after the enqueue, whatever happens to the job


class DuplicatePolicy(enum.StrEnum):
    """What an enqueue does when a job with the same unique key already blocks it."""

    KEEP = "keep"  # return the existing job (created=False, duplicate_of=its id)
    REPLACE = "replace"  # debounce: swap the pending job's payload, run at now + delay
    RAISE = "raise"  # the App raises DuplicateJob (the store reports it like KEEP)


class EnqueueOutcome(enum.StrEnum):
    """What the store did with one new job, in one word."""

    CREATED = "created"
    EXISTS = "exists"  # a job with that id already existed (idempotent enqueue)
    DUPLICATE = "duplicate"  # a job with the same unique key blocks it; nothing changed
    REPLACED = "replaced"  # the pending duplicate got this payload and run time
    THROTTLED = "throttled"  # over the throttle of its key: not stored
    REJECTED = "rejected"  # the queue is full (overflow "reject"): not stored


class NewJob(msgspec.Struct, frozen=True, gc=False):
    """A job as a producer hands it to the store.

    ``payload`` is opaque to the store (serialised task arguments and per-call options).
    Exactly one of ``delay_ms`` (relative to the store clock) or ``run_at_ms`` (absolute)
    decides when it becomes ready; both zero/None mean "now".
    """

    id: str
    queue: str
    task: str
    payload: bytes
    priority: int = 0
    max_attempts: int = 1
    delay_ms: int = 0
    run_at_ms: int | None = None
    # --- needless-work and overload controls (validated above the seam, see limits.py) ----
    #: Deduplication key; ``unique_*`` say for how long it blocks and what a duplicate does.
    unique_key: str | None = None
    unique_scope: UniqueScope = UniqueScope.QUEUED
    unique_ttl_ms: int = 0
    unique_policy: DuplicatePolicy = DuplicatePolicy.KEEP
    #: At most ``throttle_limit`` enqueues of ``throttle_key`` per ``throttle_period_ms``.
    throttle_key: str | None = None
    throttle_limit: int = 0
    throttle_period_ms: int = 0
    #: At most ``rate_limit`` starts (claims) of ``rate_key`` per ``rate_period_ms``.
    rate_key: str | None = None
    rate_limit: int = 0
    rate_period_ms: int = 0
    #: At most ``concurrency_limit`` running jobs of ``concurrency_key`` at once.
    concurrency_key: str | None = None
    concurrency_limit: int = 0
    #: Claims round-robin across fairness keys (tenants) of a queue.
    fairness_key: str | None = None

    @property
    def lane(self) -> str | None:
        """The lane the job waits in when it carries a rate, concurrency or fairness key."""
        return lane_of(self.rate_key, self.concurrency_key, self.fairness_key)


def lane_of(rate_key: str | None, concurrency_key: str | None, fair_key: str | None) -> str | None:
    """The lane of a job: jobs sharing all three keys wait FIFO in one lane, and claims
    round-robin across lanes. None (a plain job) when it has no such key. Each part is
    length-prefixed, so no choice of key text can make two different triples collide."""
    if rate_key is None and concurrency_key is None and fair_key is None:
        return None
    parts = (("r", rate_key), ("c", concurrency_key), ("f", fair_key))
    return "|".join(f"{tag}{len(key)}:{key}" for tag, key in parts if key is not None)


class EnqueueResult(msgspec.Struct, frozen=True, gc=False):
    """What the store did with one :class:`NewJob`.

    ``created`` is False when a job with that id already existed: enqueue is idempotent and
    the existing job is left untouched; ``state`` is then the existing job's state.
    ``outcome`` says why in one word; for a duplicate (or a replaced pending job) ``id`` and
    ``duplicate_of`` are the existing job's id. A throttled or rejected job was not stored:
    its state is ``DROPPED``.
    """

    id: str
    created: bool
    state: JobState
    outcome: EnqueueOutcome = EnqueueOutcome.CREATED
    duplicate_of: str | None = None


class Lease(msgspec.Struct, frozen=True):
    """Proof of ownership of a running job: its id and the fencing token of this claim."""

    id: str
    token: str


class ClaimedJob(msgspec.Struct, frozen=True):
    """A job handed to a worker under a lease that ends at ``lease_deadline_ms``."""

    id: str
    queue: str
    task: str
    payload: bytes
    token: str
    attempt: int  # 1 on the first delivery
    max_attempts: int
    priority: int
    enqueued_at_ms: int
    lease_deadline_ms: int
    #: Store-clock time of the claim; with ``enqueued_at_ms`` or ``ready_at_ms`` it gives wait time.
    claimed_at_ms: int
    #: When the job became ready (its run time for delayed jobs and retries).
    ready_at_ms: int
    schema_version: int = SCHEMA_VERSION

    @property
    def lease(self) -> Lease:
        """The lease to pass to ``complete``/``fail``/``extend_leases``."""
        return Lease(self.id, self.token)

    @property
    def wait_ms(self) -> int:
        """How long it waited from ready to claimed (store clock; never negative)."""
        wait = self.claimed_at_ms - self.ready_at_ms
        return wait if wait > 0 else 0


class ClaimResult(msgspec.Struct, frozen=True):
    """Jobs claimed by one call, and when the next scheduled job of the queue falls due.

    ``next_due_ms`` lets an idle worker sleep exactly until delayed work is due instead of
    polling (None when nothing is scheduled).
    """

    jobs: list[ClaimedJob]
    next_due_ms: int | None = None
    now_ms: int = 0


class FailOutcome(enum.StrEnum):
    """What ``fail`` did with the job."""

    RETRY_SCHEDULED = "retry_scheduled"
    DEAD = "dead"
    STALE = "stale"  # the lease was not ours any more: nothing changed


class RescueResult(msgspec.Struct, frozen=True):
    """Jobs whose lease expired: ids put back to ready, and ids dead-lettered."""

    requeued: list[str]
    dead: list[str]


class JobInfo(msgspec.Struct, frozen=True):
    """A read-only view of a stored job for admin tools (CLI, dashboard, tests)."""

    id: str
    queue: str
    task: str
    state: JobState
    payload: bytes
    priority: int
    attempt: int
    max_attempts: int
    enqueued_at_ms: int
    run_at_ms: int | None = None
    finished_at_ms: int | None = None
    error: str | None = None
    traceback: str | None = None
    schema_version: int = SCHEMA_VERSION


class CancelOutcome(enum.StrEnum):
    """What ``cancel`` did."""

    CANCELLED = "cancelled"  # it was queued: removed, state cancelled
    CANCELLING = "cancelling"  # it was running: its lease is revoked; cancelled once its
    #                           worker reports back or the lease expires
    NOT_CANCELLABLE = "not_cancellable"  # unknown id, or already finished


class QueueOverflow(enum.StrEnum):
    """What enqueue does when a bounded queue is full."""

    REJECT = "reject"  # refuse the new job (the App raises QueueFull)
    DROP_OLDEST = "drop_oldest"  # dead-letter the oldest ready job, "dropped: queue full"


class QueueConfig(msgspec.Struct, frozen=True):
    """Queue-level controls as stored: paused, and the bound on ready jobs."""

    queue: str
    paused: bool = False
    max_ready: int | None = None
    overflow: QueueOverflow = QueueOverflow.REJECT


class QueueCounts(msgspec.Struct, frozen=True):
    """Number of jobs per state in one queue."""

    queue: str
    ready: int = 0
    scheduled: int = 0
    running: int = 0
    dead: int = 0

    @property
    def total(self) -> int:
        """Jobs not yet finished, plus the dead ones."""
        return self.ready + self.scheduled + self.running + self.dead


class WorkerInfo(msgspec.Struct, frozen=True):
    """A worker process as it reports itself in heartbeats (the worker registry).

    ``stats`` holds cumulative counters (``claimed``, ``succeeded``, ``retried``, ``dead``,
    ``lease_lost``) and recent percentiles (``wait_p50_ms``, ``wait_p99_ms``, ``run_p50_ms``,
    ``run_p99_ms``) so ``calmq top`` and the dashboard can show rates without a metrics
    server. ``seen_at_ms`` is filled in by the store when the record is read.
    """

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    pool: str = "threads"
    running: list[str] = []  # ids of the jobs it holds leases on
    started_at_ms: int = 0
    ttl_ms: int = 15_000
    versions: dict[str, str] = {}
    stats: dict[str, float] = {}
    seen_at_ms: int = 0


#: Base32 "hex" digits (RFC 4648 ``base32hex``, lower case): their order is the byte order.
_B32HEX = "0123456789abcdefghijklmnopqrstuv"
#: Every 10-bit value as its two base32hex digits.
_DIGIT_PAIRS = tuple(a + b for a in _B32HEX for b in _B32HEX)
#: ``bytes.translate`` tables: a random byte as a random digit (its low 5 bits), and as a
#: random last digit (3 bits, then the two zero bits that pad the 128 bits of an id).
_DIGIT_OF_BYTE = bytes(ord(_B32HEX[b & 31]) for b in range(256))
_LAST_DIGIT_OF_BYTE = bytes(ord(_B32HEX[b & 28]) for b in range(256))
#: Random bytes per id: 15 digits of 5 bits, one last digit of 3, and 2 bits for the digit
#: shared with the time (80 random bits).
_RANDOM_BYTES_PER_ID = 17


def new_job_id() -> str:
    """A 26-character, time-ordered, random job id (48-bit ms time + 80 random bits).

    Made by the client, so a producer that retries after an ambiguous timeout sends the
    same id and the store's idempotent enqueue drops the duplicate. Base32 "hex" keeps the
    sort order of the bytes, so ids sort by creation time. The text is exactly
    ``base64.b32hexencode(raw).decode()[:26].lower()`` for 16 raw bytes: the ms time (big
    endian), then 80 random bits.
    """
    ms = time.time_ns() // 1_000_000
    raw = os.urandom(_RANDOM_BYTES_PER_ID)
    digits = _B32HEX
    return "".join((
        _time_digits(ms), digits[((ms & 7) << 2) | (raw[16] & 3)],
        raw[:15].translate(_DIGIT_OF_BYTE).decode(), digits[raw[15] & 28],
    ))  # fmt: skip


def new_job_ids(count: int) -> list[str]:
    """``count`` ids as :func:`new_job_id` makes them, sharing one clock reading and one
    read of random bytes: a batch enqueue spends a fifth of the time per id.

    The 45 high bits of the time give the first 9 digits; the 10th holds the last 3 time
    bits and 2 random bits; the other 16 are random digits, mapped from random bytes in C
    (``bytes.translate``) rather than by shifting a 130-bit integer per id.
    """
    ms = time.time_ns() // 1_000_000
    head = _time_digits(ms)
    heads = [head + _B32HEX[((ms & 7) << 2) | bits] for bits in range(4)]
    raw = os.urandom(_RANDOM_BYTES_PER_ID * count)
    digits = raw.translate(_DIGIT_OF_BYTE).decode("ascii")
    last = raw.translate(_LAST_DIGIT_OF_BYTE).decode("ascii")
    return [
        heads[raw[at + 16] & 3] + digits[at : at + 15] + last[at + 15]
        for at in range(0, _RANDOM_BYTES_PER_ID * count, _RANDOM_BYTES_PER_ID)
    ]


def _time_digits(ms: int) -> str:
    """The first 9 digits of an id: the 45 high bits of its 48-bit millisecond time."""
    pairs = _DIGIT_PAIRS
    return "".join((
        pairs[(ms >> 38) & 1023], pairs[(ms >> 28) & 1023], pairs[(ms >> 18) & 1023],
        pairs[(ms >> 8) & 1023], _B32HEX[(ms >> 3) & 31],
    ))  # fmt: skip
