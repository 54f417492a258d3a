"""The store contract: a short typed Protocol that every store implements.

This is calmq's internal seam, not a promise to third parties: it may change in any minor
release. ``calmq.testing.conformance`` checks an implementation against it, and a change to
store behaviour lands with a conformance test (CONTRIBUTING.md).

Division of labour: the layers above (``App``, the worker) validate input, encode payloads,
decide retry delays and emit events. A store only persists, atomically: each method is one
atomic operation on the store (one Lua script, one SQLite transaction), so a crash between
two calls never leaves a job half-moved.

Rules every implementation follows:

* Times come from the store's clock; callers pass relative milliseconds.
* ``complete``, ``fail``, ``extend_leases`` and ``release`` act only when the lease token
  matches the job's current token (fencing): a worker whose lease expired and was rescued
  cannot touch the new owner's attempt.
* Enqueue is idempotent by job id: an existing id is left untouched and reported.
* Bad stored data (a foreign value, a missing record) never raises out of ``claim``: the
  job is dead-lettered with a reason and the other jobs are served.
* Methods are synchronous and thread-safe. Async callers run them on a thread (the worker
  has a dedicated one), so an event loop never blocks on a lock or a socket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from calmq.job import (
    CancelOutcome,
    ClaimResult,
    EnqueueResult,
    FailOutcome,
    JobInfo,
    JobState,
    Lease,
    NewJob,
    QueueConfig,
    QueueCounts,
    QueueOverflow,
    RescueResult,
    WorkerInfo,
)

#: ``wait_for_work`` returns as soon as an enqueue happens, even in another process.
CAP_BLOCKING_WAIT = "blocking_wait"
#: Several processes (on one or several machines) can share the store.
CAP_MULTI_PROCESS = "multi_process"
#: ``wait_then_claim`` sends the claim with the wait: it runs in the store the moment the
#: wait ends, with no second round trip. Without it a worker waits, makes sure it is not
#: stopping, then claims.
CAP_CLAIM_WITH_WAIT = "claim_with_wait"


@runtime_checkable
class Store(Protocol):
    """Persistence for jobs, leases and the dead-letter store."""

    #: Features as data, so callers branch on them and never on the class.
    capabilities: frozenset[str]
    #: A URL safe to print: no password.
    display_url: str

    # --- producers -----------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """Store new jobs, one result per job in order; all jobs of one call may share a queue
        or not. An existing id is a no-op reported with ``created=False``.

        Controls carried by a job apply atomically, in this order: an existing id; a pending
        job with the same unique key (kept, or replaced: payload swapped, run time now +
        delay); the throttle of its key (over it: not stored); the queue's bound on ready
        jobs (reject, or dead-letter the oldest ready job). None of them raises.
        """
        ...

    def enqueue_chunks(self, chunks: Iterable[Sequence[NewJob]], stored: OnStored) -> None:
        """``enqueue`` each chunk, calling ``stored(chunk, results)`` per applied chunk, in
        order. A store may take chunk k+1 from ``chunks`` before chunk k is applied, so a
        caller that builds chunks lazily overlaps its work with the store's; building them
        must not fail. Each chunk is applied atomically (maybe together with others). When
        one fails, chunks sent along with it still apply or fail on their own (applied ones
        are reported), and the first error is raised."""
        ...

    # --- workers -------------------------------------------------------------------
    def claim(self, queue: str, *, limit: int, lease_ms: int) -> ClaimResult:
        """Lease up to ``limit`` ready jobs, highest priority first, FIFO within a priority.

        Due scheduled jobs are promoted first, so a delayed job is claimable the moment it
        is due. Each claimed job gets a fresh fencing token and ``attempt`` + 1. A paused
        queue yields nothing.

        Jobs with a rate, concurrency or fairness key wait in lanes (one per combination of
        keys); claims round-robin over lanes (plain jobs count as one lane) and skip a lane
        whose head is over its rate or concurrency limit: it stays queued, no attempt spent.
        ``next_due_ms`` then also covers the moment a rate window reopens.
        """
        ...

    def extend_leases(self, queue: str, leases: Sequence[Lease], *, lease_ms: int) -> list[str]:
        """Push the deadline of each lease to now + ``lease_ms``; return the ids whose lease
        is no longer ours (expired and rescued, or finished)."""
        ...

    def complete(self, queue: str, leases: Sequence[Lease]) -> list[bool]:
        """Mark jobs succeeded; True where the lease was ours, False (and nothing changed)
        where it was not."""
        ...

    def fail(
        self,
        queue: str,
        lease: Lease,
        *,
        error: str,
        traceback: str | None = None,
        retry_in_ms: int | None = None,
    ) -> FailOutcome:
        """Record a failed attempt: schedule a retry ``retry_in_ms`` from now, or with
        ``retry_in_ms=None`` move the job to the dead-letter store with ``error``."""
        ...

    def release(self, queue: str, leases: Sequence[Lease]) -> int:
        """Give leased jobs back to ready at once without spending an attempt (graceful
        shutdown); return how many were ours."""
        ...

    def promote_due(self, queue: str, *, limit: int = 1000) -> int:
        """Move up to ``limit`` due scheduled jobs to ready; return how many moved."""
        ...

    def rescue_expired(self, queue: str, *, limit: int = 1000) -> RescueResult:
        """Take back jobs whose lease deadline passed: to ready, or to dead when that was the
        job's last allowed attempt (a job that kills its worker every time)."""
        ...

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Block up to ``timeout`` seconds until a job may be claimable in one of ``queues``.

        True means "look now"; False means the timeout passed. Spurious wake-ups are allowed.
        """
        ...

    def wait_then_claim(
        self, queues: Sequence[str], timeout: float, queue: str, *, limit: int, lease_ms: int
    ) -> ClaimResult:
        """:meth:`wait_for_work` on ``queues``, then :meth:`claim` from ``queue`` (one of
        them) whether or not the wait was woken. A store that does both in one round trip
        (a wake-up starts the claim on the server at once) says so with
        :data:`CAP_CLAIM_WITH_WAIT`; :func:`wait_then_claim_in_two_calls` is the plain
        composition."""
        ...

    # --- admin ---------------------------------------------------------------------
    def pause(self, queue: str) -> None:
        """Stop claims from ``queue`` (enqueue keeps working). Idempotent."""
        ...

    def resume(self, queue: str) -> None:
        """Let claims from ``queue`` start again and wake idle workers. Idempotent."""
        ...

    def cancel(self, queue: str, job_id: str) -> CancelOutcome:
        """Cancel a job: a queued one is removed at once (state ``cancelled``, kept like a
        succeeded job); a running one has its lease revoked, so ``extend_leases`` reports it
        lost and ``complete``/``fail``/``release`` are stale and finish it as cancelled (or
        ``rescue_expired`` does, once its lease expires)."""
        ...

    def set_queue_limit(
        self, queue: str, max_ready: int | None, overflow: QueueOverflow = QueueOverflow.REJECT
    ) -> None:
        """Bound the ready jobs of ``queue`` (``None`` removes the bound)."""
        ...

    def queue_config(self, queue: str) -> QueueConfig:
        """The queue's paused state and bound."""
        ...

    def get_job(self, queue: str, job_id: str) -> JobInfo | None:
        """The job with that id in that queue, or None."""
        ...

    def list_jobs(
        self, queue: str, state: JobState, *, offset: int = 0, limit: int = 100
    ) -> list[JobInfo]:
        """Jobs of one queue in one state, in claim order (ready), due order (scheduled),
        deadline order (running) or newest first (dead)."""
        ...

    def counts(self, queues: Sequence[str] | None = None) -> list[QueueCounts]:
        """Jobs per state for the given queues, or for every known queue."""
        ...

    def queues(self) -> list[str]:
        """Names of every queue that ever received a job, sorted."""
        ...

    def replay_dead(self, queue: str, job_ids: Sequence[str] | None = None) -> int:
        """Put dead jobs back to ready with a fresh set of attempts; ``None`` means all.
        Returns how many were replayed."""
        ...

    def purge_dead(self, queue: str, job_ids: Sequence[str] | None = None) -> int:
        """Delete dead jobs for good; ``None`` means all. Returns how many were deleted."""
        ...

    # --- worker registry -------------------------------------------------------------
    def heartbeat(self, worker: WorkerInfo) -> None:
        """Record that ``worker`` is alive, with its current state, until
        ``worker.ttl_ms`` from now (store clock). Replaces its previous record."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """Workers whose last heartbeat has not expired, sorted by id, each with
        ``seen_at_ms`` set to the store-clock time of that heartbeat. Expired records are
        dropped (bounded work per call)."""
        ...

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker's record at once (a clean shutdown). Idempotent."""
        ...

    def connections_in_use(self) -> int:
        """Store calls in flight right now, each holding a connection: what the
        ``calmq_pool_connections_in_use`` gauge shows (a pile-up is visible at once)."""
        ...

    def now_ms(self) -> int:
        """The store's clock, in ms since the epoch."""
        ...

    def close(self) -> None:
        """Release connections and files. Idempotent."""
        ...


OnStored = Callable[[Sequence[NewJob], list[EnqueueResult]], object]


def enqueue_in_one_call(
    enqueue: Callable[[Sequence[NewJob]], list[EnqueueResult]],
    chunks: Iterable[Sequence[NewJob]],
    stored: OnStored,
) -> None:
    """``enqueue_chunks`` for a store (or a path of one) that gains nothing from overlap:
    every chunk in one ``enqueue`` call, then ``stored`` per chunk, in order."""
    taken = list(chunks)
    results = enqueue([job for chunk in taken for job in chunk])
    at = 0
    for chunk in taken:
        stored(chunk, results[at : at + len(chunk)])
        at += len(chunk)


def wait_then_claim_in_two_calls(
    store: Store, queues: Sequence[str], timeout: float, queue: str, *, limit: int, lease_ms: int
) -> ClaimResult:
    """``wait_then_claim`` for a store (or a path of one) that gains nothing from joining
    the two: the wait, then the claim."""
    store.wait_for_work(queues, timeout)
    return store.claim(queue, limit=limit, lease_ms=lease_ms)
