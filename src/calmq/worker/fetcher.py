"""Fetching: claim up to the free slots across the worker's queues; wait for work when idle.

Queues are served in strict order (the first queue with work first) or, with weights, in a
weighted random order per fetch so a busy queue cannot starve a lighter one. An idle worker
blocks in the store's ``wait_for_work`` (Redis: BLPOP on a wake-up list), so a new job wakes
it at once; the wait never outlasts the next scheduled job's due time. The claim that follows a
wake-up runs on the waiter thread itself (:meth:`Fetcher.wait_then_claim`), so new work on an
idle worker costs no hop through the event loop and the I/O thread before its claim.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from calmq.errors import CalmqError
from calmq.job import ClaimedJob, ClaimResult
from calmq.stores.base import CAP_CLAIM_WITH_WAIT, Store

T = TypeVar("T")
log = logging.getLogger("calmq.worker")
RunIO = Callable[..., Awaitable[Any]]
#: Gets a claim's jobs on the waiter thread; may return work for that thread to run itself.
OnClaimed = Callable[[list[ClaimedJob]], Callable[[], object] | None]


class Fetcher:
    """Claims jobs for one worker."""

    def __init__(
        self, store: Store, queues: Sequence[str], *, lease_ms: int, run_io: RunIO,
        waiter: concurrent.futures.Executor, weights: Mapping[str, float] | None = None,
        max_idle_wait: float = 1.0,
    ) -> None:  # fmt: skip
        """``waiter`` runs the store waits. Give it two threads when ``prestart`` (see
        :meth:`wait_then_claim`) may leave a job to the waiter thread: the next wait then
        need not wait for that job."""
        self.store = store
        self.queues = list(queues)
        self.weights = dict(weights or {})
        self.lease_ms = lease_ms
        self.run_io = run_io
        self.waiter = waiter
        self.max_idle_wait = max_idle_wait
        #: Store-clock ms until the earliest scheduled job is due (None: nothing scheduled).
        self.next_due_in_ms: int | None = None
        #: The last claim visited every queue and got fewer jobs than asked: nothing more is
        #: claimable until a wake-up (an enqueue, a freed lane, a due job) says otherwise.
        self.drained = False
        # The store wait in flight on the waiter thread, with its loop-clock deadline. A
        # store wait cannot be interrupted, so an abandoned one is adopted by the next call
        # instead of queueing a second wait behind it: that one would sleep through the
        # wake-up the first consumed (until the next wake-up or max_idle_wait).
        self._wait: asyncio.Future[Any] | None = None
        self._wait_deadline = 0.0
        # Claims made on the waiter thread, and the jobs of the last one until the loop has
        # taken them, so a stop never strands a claimed job (see close()).
        self._gate = threading.Lock()
        self._closed = False
        self._handed_off: list[ClaimedJob] | None = None
        # The loop's side of a wait_then_claim in flight, and whether the worker stopped
        # waiting for good (stop_waiting): a stop resolves it without the waiter thread.
        self._idle: asyncio.Future[Any] | None = None
        self._stopped = False
        self._rng = random.Random()  # noqa: S311 - fairness, not security

    def order(self) -> list[str]:
        """Queues in the order to claim from for this fetch."""
        if not self.weights:
            return self.queues
        # Weighted sampling without replacement (Efraimidis-Spirakis keys).
        keyed = [
            (self._rng.random() ** (1.0 / max(self.weights.get(q, 1.0), 1e-9)), q)
            for q in self.queues
        ]
        return [q for _, q in sorted(keyed, reverse=True)]

    async def claim(self, free_slots: int) -> list[ClaimedJob]:
        """Claim up to ``free_slots`` jobs, one store call per queue visited (on the I/O
        thread: one hop there and back however many queues are visited)."""
        jobs: list[ClaimedJob] = await self.run_io(self._claim_now, free_slots)
        return jobs

    def _claim_now(
        self, free_slots: int, order: Sequence[str] | None = None, first: ClaimResult | None = None
    ) -> list[ClaimedJob]:
        """The claim itself, on the calling thread (the I/O thread or the waiter thread),
        over ``order`` (default: :meth:`order`); ``first`` is the first queue's claim when
        it was already made (with the wait)."""
        jobs: list[ClaimedJob] = []
        next_due: int | None = None
        failure: CalmqError | None = None
        for queue in order or self.order():
            wanted = free_slots - len(jobs)
            if wanted <= 0:
                break
            try:
                if first is not None:
                    result, first = first, None
                else:
                    result = self.store.claim(queue, limit=wanted, lease_ms=self.lease_ms)
            except CalmqError as exc:
                # Keep what other queues gave: raising here would orphan jobs already
                # leased to us (they would sit until their lease expired, spending an
                # attempt). One broken queue must not stall the healthy ones either.
                log.warning("claiming from %s failed: %s", queue, exc)
                failure = exc
                continue
            jobs.extend(result.jobs)
            if result.next_due_ms is not None:
                due_in = max(0, result.next_due_ms - result.now_ms)
                next_due = due_in if next_due is None else min(next_due, due_in)
        self.next_due_in_ms = next_due
        self.drained = failure is None and len(jobs) < free_slots
        if failure is not None and not jobs:
            raise failure  # nothing claimed anywhere: let the worker back off
        return jobs

    async def wait_then_claim(
        self, free_slots: int, prestart: OnClaimed | None = None
    ) -> list[ClaimedJob]:
        """Wait for work as :meth:`wait_for_work` does, then claim up to ``free_slots`` jobs
        right there on the waiter thread: a wake-up becomes a claim without a hop to the
        loop and on to the I/O thread and back (each hop a thread wake-up, costly on a busy
        host: in a traced worker they were a large part of the slowest enqueue-to-starts).

        ``prestart``, if given, gets the claimed jobs on the waiter thread before they are
        handed to the loop (the worker starts sync jobs from there, see
        ``RunningJobs.prestart``); the work it may return, the waiter thread runs itself
        once the loop has the jobs. Must not be abandoned: after :meth:`stop_waiting` it
        returns ``[]``, and the claim the waiter thread may still make is refused, or its
        jobs are handed back by :meth:`close`.
        """
        # The loop waits on one future, settled by the waiter thread (or, with None, by
        # stop_waiting): a task for the store wait and another for the stop, joined by
        # asyncio.wait, cost the loop five passes per idle wait, at a trickle more than the
        # rest of its work on a job.
        if self._stopped:
            return []
        plain = self._wait  # a plain wait left running: let it finish first
        if plain is not None:
            idle = self._idle = asyncio.get_running_loop().create_future()
            plain.add_done_callback(functools.partial(_settle, idle))
            if await self._until_settled(idle) is None:
                return []  # stop_waiting
            self._wait_ended(plain)
        timeout = self.max_idle_wait
        if self.next_due_in_ms is not None:
            timeout = min(timeout, self.next_due_in_ms / 1000.0)
        loop = asyncio.get_running_loop()
        idle = self._idle = loop.create_future()
        hand_over = functools.partial(_settle_from_thread, loop, idle)
        self.waiter.submit(self._claim_on_waiter, hand_over, timeout, free_slots, prestart)
        claimed = await self._until_settled(idle)
        if claimed is None:
            return []  # stopping: close() collects whatever the waiter still claims
        self._handed_off = None
        if isinstance(claimed, BaseException):
            raise claimed
        jobs: list[ClaimedJob] = claimed
        return jobs

    async def _until_settled(self, idle: asyncio.Future[Any]) -> Any:
        try:
            return await idle
        finally:
            self._idle = None

    def stop_waiting(self) -> None:
        """On the loop, for good: a :meth:`wait_then_claim` in flight returns ``[]`` now (its
        store wait runs out on the waiter thread) and later ones return ``[]`` at once."""
        self._stopped = True
        idle = self._idle
        if idle is not None and not idle.done():
            idle.set_result(None)

    def _claim_on_waiter(
        self, hand_over: Callable[[object], None], timeout: float, free_slots: int,
        prestart: OnClaimed | None,
    ) -> None:  # fmt: skip
        """The waiter thread's part: wait, claim, hand the jobs (or the error) to the loop,
        then run the job ``prestart`` left to this thread, if any."""
        try:
            jobs, run_here = self._wait_then_claim(timeout, free_slots, prestart)
        except BaseException as exc:  # the loop raises it (unhanded, the loop waits for good)
            hand_over(exc)
            return
        hand_over(jobs)
        if run_here is not None:
            run_here()

    def _wait_then_claim(
        self, timeout: float, free_slots: int, prestart: OnClaimed | None = None
    ) -> tuple[list[ClaimedJob], Callable[[], object] | None]:
        order = self.order()
        first: ClaimResult | None = None
        if timeout > 0.001:
            # A failed wait is not reported: the claim below meets the same error.
            with contextlib.suppress(CalmqError):
                if CAP_CLAIM_WITH_WAIT in self.store.capabilities:
                    # The first queue's claim travels with the wait (one round trip on
                    # Redis: it runs the moment the wake-up comes).
                    first = self.store.wait_then_claim(
                        self.queues, timeout, order[0], limit=free_slots, lease_ms=self.lease_ms
                    )
                else:
                    # Claim only after the stop check below: a claim made after the
                    # worker began to stop could meet a store it is closing.
                    self.store.wait_for_work(self.queues, timeout)
        with self._gate:
            if self._closed:
                if first is not None and first.jobs:
                    self._give_back(order[0], first.jobs)
                return [], None
            jobs = self._claim_now(free_slots, order, first)
            self._handed_off = jobs
            run_here = prestart(jobs) if prestart is not None and jobs else None
        return jobs, run_here

    def _give_back(self, queue: str, jobs: list[ClaimedJob]) -> None:
        """Release jobs claimed with a wait that ended after :meth:`close`: nobody will run
        them, and a lease left to expire would delay them (and count an attempt)."""
        try:
            self.store.release(queue, [job.lease for job in jobs])
        except CalmqError as exc:
            log.warning("could not release %d jobs claimed as the worker stopped (their"
                        " leases expire on their own): %s", len(jobs), exc)  # fmt: skip

    def close(self) -> list[ClaimedJob]:
        """Refuse further claims on the waiter thread; return the jobs it claimed that the
        loop never took (possibly prestarted: the worker runs them out within its grace).
        Call from a thread that may block for one claim, not from the loop."""
        with self._gate:
            self._closed = True
            jobs, self._handed_off = self._handed_off or [], None
        return jobs

    async def wait_for_work(self, stopping: asyncio.Event) -> None:
        """Sleep until a job may be claimable, the next scheduled job is due, or stop.

        Safe to abandon (cancel) midway: the store wait keeps running and the next call
        waits on it rather than starting another.
        """
        timeout = self.max_idle_wait
        if self.next_due_in_ms is not None:
            timeout = min(timeout, self.next_due_in_ms / 1000.0)
        if timeout <= 0.001:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._wait is None:
            self._wait = loop.run_in_executor(
                self.waiter, self.store.wait_for_work, self.queues, timeout
            )
            self._wait_deadline = deadline
        waiter = self._wait
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            # A wait adopted from an earlier call may run past this call's deadline.
            at_most = None if self._wait_deadline <= deadline else timeout
            await asyncio.wait({waiter, stopper}, timeout=at_most,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            stopper.cancel()
        if waiter.done():
            self._wait_ended(waiter)

    def _wait_ended(self, wait: asyncio.Future[Any]) -> None:
        self._wait = None
        if not wait.cancelled():
            wait.exception()  # retrieved, so asyncio does not warn; errors surface on claim


def _settle(idle: asyncio.Future[Any], value: object) -> None:
    if not idle.done():
        idle.set_result(value)


def _settle_from_thread(
    loop: asyncio.AbstractEventLoop, idle: asyncio.Future[Any], value: object
) -> None:
    """On the waiter thread: settle ``idle`` with ``value`` on the loop."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is gone
        loop.call_soon_threadsafe(_settle, idle, value)
