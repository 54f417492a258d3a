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
    CANCELLED = "cancelled"


class NewJob(msgspec.Struct, frozen=True):
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


class EnqueueResult(msgspec.Struct, frozen=True):
    """What the store did with one :class:`NewJob`.

    ``created`` is False when a job with that id already existed: enqueue is idempotent and
    the existing job is left untouched; ``state`` is then the existing job's state.
    """

    id: str
    created: bool
    state: JobState


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


def new_job_id() -> str:
    """A 26-character, time-ordered, random job id (48-bit ms time + 80 random bits).

    Made by the client, so a producer that retries after an ambiguous timeout sends the
    same id and the store's idempotent enqueue drops the duplicate.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    return _crockford32(value)


_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _crockford32(value: int) -> str:
    chars = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))
