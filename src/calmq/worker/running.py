"""The jobs a worker is running right now: starting them, timing them out, cancelling them.

Async jobs run as tasks on the event loop; sync jobs run on the :class:`ThreadLane`. Either
way each finished job is reported once, with its :class:`Outcome`, to ``on_outcome``; a job
cancelled here (lease lost, hard stop) is not reported, because its lease is no longer ours
or is released by the worker.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from calmq.context import JobContext, reset_current, set_current
from calmq.job import ClaimedJob
from calmq.serializers import Envelope
from calmq.task import Task
from calmq.worker.executor import Executor, Outcome, OutcomeKind, timed_out
from calmq.worker.threads import ThreadLane, Work

log = logging.getLogger("calmq.worker")


@dataclasses.dataclass(frozen=True, slots=True)
class Acked:
    """The store's answer to an acknowledgement the job's own lane thread sent: True taken,
    False not ours any more (lease lost, cancelled), None unknown."""

    taken: bool | None


@dataclasses.dataclass(frozen=True, slots=True)
class _AckedOutcome:
    outcome: Outcome
    acked: Acked


#: Called with each finished job, its outcome, its run time (ms) and, when its lane thread
#: acknowledged it already, the store's answer.
OnOutcome = Callable[[ClaimedJob, Outcome, float, Acked | None], None]
#: Acknowledges a lone job on the lane thread that ran it; None when it could not (the
#: worker's acknowledger takes the job then).
AckHere = Callable[[ClaimedJob], Acked | None]
#: Longest the solo pool runs jobs back to back before the event loop gets a turn (for
#: acknowledgements, claims, lease news, signals). One loop callback per job cost more than a
#: short job itself.
SOLO_SLICE = 0.002


@dataclasses.dataclass(slots=True)
class Running:
    job: ClaimedJob
    started: float
    context: JobContext
    task: asyncio.Task[None] | None = None  # async jobs
    timer: asyncio.TimerHandle | None = None  # sync jobs with a timeout
    timeout: float | None = None  # prestarted sync jobs: the timer to set when registered
    early: Outcome | None = None  # prestarted sync jobs that ended before they were registered
    early_acked: Acked | None = None  # ...and were acknowledged by their lane thread
    claiming_thread: bool = False  # a lone sync job run by the thread that claimed it


class Wakeup:
    """A wake-up for the worker loop that costs one future per wait: no task, no event.

    On the hot path the loop waits for a slot to free once per claim; asyncio.wait over
    tasks would cost more than a short job itself.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None

    def notify(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, at_most: float | None = None) -> None:
        """Until the next ``notify`` or ``at_most`` seconds, whichever comes first."""
        future = self._future = self._loop.create_future()
        timer = self._loop.call_later(at_most, self.notify) if at_most is not None else None
        try:
            await future
        finally:
            self._future = None
            if timer is not None:
                timer.cancel()


class RunningJobs:
    """Runs jobs up to ``concurrency`` at once and reports each outcome once."""

    def __init__(
        self, executor: Executor, concurrency: int, on_outcome: OnOutcome, *, solo: bool = False,
        ack_here: AckHere | None = None,
    ) -> None:  # fmt: skip
        self.executor = executor
        self.solo = solo
        self.concurrency = concurrency
        self.on_outcome = on_outcome
        self._running: dict[str, Running] = {}
        self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._loop = loop
        #: Notified whenever a slot frees up.
        self.wakeup = Wakeup(loop)
        self.ack_here = ack_here
        after = self._after_on_lane if ack_here is not None else None
        self.lane = None if solo else ThreadLane(loop, concurrency, self._deliver_sync, after)
        # Sync jobs a claiming thread already put on the lane, until start() registers them.
        self._prestarted: dict[str, Running] = {}
        # Held while a claiming thread runs a lone job itself (prestart).
        self._run_here_turn = threading.Lock()
        # Solo pool: sync jobs waiting for their turn on the loop, run in slices.
        self._solo: collections.deque[tuple[Running, Task[Any, Any], Envelope]] = (
            collections.deque()
        )
        self._solo_scheduled = False

    def __len__(self) -> int:
        return len(self._running)

    @property
    def free_slots(self) -> int:
        return self.concurrency - len(self._running)

    def prestart(self, jobs: Sequence[ClaimedJob]) -> Work | None:
        """Put sync jobs on the lane right away, from the thread that claimed them; every
        job must then be passed to :meth:`start` on the loop, which registers it.

        A wake-up's claim then goes straight from the waiter thread to a lane thread instead
        of through the event loop: one thread hop fewer before the job starts (each hop is a
        scheduler wake-up, the costliest part of enqueue-to-start on a busy host). Async
        jobs, rejected jobs and the solo pool wait for :meth:`start` as usual.

        A lone sync job claimed while nothing else of this worker runs is not put on the
        lane: its work is returned, for the claiming thread to run itself once the loop has
        the claim (no hop at all: at a trickle, most jobs). One such job at a time: one that
        outlives its timeout holds the turn until it returns, so while a claiming thread is
        stuck, the other one waits and claims and its jobs go to the lane.
        """
        if self.lane is None:
            return None
        lone = len(jobs) == 1 and not self._running and not self._prestarted
        run_here: Work | None = None
        for job in jobs:
            resolved = self.executor.resolve(job)
            if isinstance(resolved, Outcome) or resolved[0].is_async:
                continue
            task, envelope = resolved
            context = JobContext(job.id, job.queue, job.task, job.attempt, job.max_attempts)
            entry = Running(job, time.perf_counter(), context,
                            timeout=self.executor.timeout_of(task, envelope))  # fmt: skip
            work = _in_context(context, self.executor.sync_work(task, envelope))
            self._prestarted[job.id] = entry  # before the lane can deliver it
            if lone and self._run_here_turn.acquire(blocking=False):
                entry.claiming_thread = True
                run_here = functools.partial(self._run_here, entry, work)
            else:
                self.lane.submit(entry, work)
        return run_here

    def _run_here(self, entry: Running, work: Work) -> None:
        assert self.lane is not None
        try:
            self.lane.run_here(entry, work)
        finally:
            self._run_here_turn.release()

    def start(self, jobs: Sequence[ClaimedJob]) -> None:
        resolve, running, now = self.executor.resolve, self._running, time.perf_counter()
        for job in jobs:
            if self._prestarted and self._register_prestarted(job.id):
                continue
            resolved = resolve(job)
            context = JobContext(job.id, job.queue, job.task, job.attempt, job.max_attempts)
            entry = Running(job, now, context)
            running[job.id] = entry
            if isinstance(resolved, Outcome):
                self._finish(job.id, resolved)
                continue
            task, envelope = resolved
            if task.is_async:
                entry.task = asyncio.create_task(self._run_async(entry, task, envelope))
            else:
                self._run_sync(entry, task, envelope)

    def _register_prestarted(self, job_id: str) -> bool:
        entry = self._prestarted.pop(job_id, None)
        if entry is None:
            return False
        self._running[job_id] = entry
        if entry.early is not None:
            self._finish(job_id, entry.early, entry.early_acked)
        else:
            self._arm_timeout(entry, entry.timeout)
        return True

    async def _run_async(self, entry: Running, task: Task[Any, Any], env: Envelope) -> None:
        set_current(entry.context)  # this task's own context: no reset needed
        outcome = await self.executor.run_async(task, env)
        self._finish(entry.job.id, outcome)

    def _run_sync(self, entry: Running, task: Task[Any, Any], envelope: Envelope) -> None:
        if self.lane is None:
            self._solo.append((entry, task, envelope))
            if not self._solo_scheduled:
                self._solo_scheduled = True
                self._loop.call_soon(self._run_solo_slice)
            return
        self._arm_timeout(entry, self.executor.timeout_of(task, envelope))
        self.lane.submit(entry, _in_context(entry.context, self.executor.sync_work(task, envelope)))

    def _arm_timeout(self, entry: Running, timeout: float | None) -> None:
        """A sync job on the lane: fail it (and abandon its thread) after ``timeout``."""
        if timeout is not None:
            entry.timer = self._loop.call_later(timeout, self._sync_timed_out, entry, timeout)

    def _run_solo_slice(self) -> None:
        """Run waiting solo jobs one after another for up to SOLO_SLICE seconds, then give
        the loop a turn (and come back if jobs are left)."""
        waiting, clock = self._solo, time.perf_counter
        now = clock()
        deadline = now + SOLO_SLICE
        try:
            while waiting and now < deadline:
                entry, task, envelope = waiting.popleft()
                if self._running.get(entry.job.id) is entry:  # not cancelled while it waited
                    entry.started = now  # its run time starts now, not when it was queued
                    token = set_current(entry.context)
                    try:
                        outcome = self.executor.run_solo(task, envelope)
                    finally:
                        reset_current(token)
                    self._finish(entry.job.id, outcome)
                now = clock()  # the next job's start: after this one's bookkeeping
        finally:  # even if a job raised past run_solo (SystemExit): the rest still run
            if waiting:
                self._loop.call_soon(self._run_solo_slice)
            else:
                self._solo_scheduled = False

    def _after_on_lane(self, key: object, outcome: Any) -> Any:
        """On the lane thread, right after a sync job: one that succeeded while no other job
        of this worker runs is acknowledged here (``ack_here``), sparing the acknowledgement
        thread and a loop wake-up (each a scheduler wake-up, at a trickle most of a job's
        cost); the store's answer then travels with the outcome. Under load the acknowledger
        batches as before."""
        assert isinstance(key, Running)
        assert self.ack_here is not None
        job_id = key.job.id
        if (
            not isinstance(outcome, Outcome)
            or outcome.kind is not OutcomeKind.SUCCEEDED
            or len(self._running) + len(self._prestarted) > 1
            or (self._running.get(job_id) is not key and self._prestarted.get(job_id) is not key)
        ):
            return outcome
        acked = self.ack_here(key.job)
        return outcome if acked is None else _AckedOutcome(outcome, acked)

    def _deliver_sync(self, batch: list[tuple[object, Any]]) -> None:
        for entry, result in batch:
            assert isinstance(entry, Running)
            outcome, acked = result, None
            if isinstance(result, _AckedOutcome):
                outcome, acked = result.outcome, result.acked
            # Gone means timed out, lease lost or cancelled at stop: the result is ignored
            # (an acknowledgement sent meanwhile was settled by the store's fencing token).
            if self._running.get(entry.job.id) is entry:
                if entry.timer is not None:
                    entry.timer.cancel()
                self._finish(entry.job.id, outcome, acked)
            elif self._prestarted.get(entry.job.id) is entry:
                # Ended before start() registered it: finished there.
                entry.early, entry.early_acked = outcome, acked

    def _sync_timed_out(self, entry: Running, timeout: float) -> None:
        if self._running.get(entry.job.id) is not entry:
            return
        self.executor.note_abandoned()
        if self.lane is not None and not entry.claiming_thread:  # that one was not the lane's
            self.lane.replace_abandoned_thread()
        log.warning("sync job %s (%s) outlived its timeout of %ss; its thread is abandoned",
                    entry.job.id, entry.job.task, timeout)  # fmt: skip
        self._finish(entry.job.id, timed_out(timeout))

    def _finish(self, job_id: str, outcome: Outcome, acked: Acked | None = None) -> None:
        entry = self._running.pop(job_id)
        self._changed.set()
        self.wakeup.notify()
        run_ms = (time.perf_counter() - entry.started) * 1000.0
        self.on_outcome(entry.job, outcome, run_ms, acked)

    def forget(self, job_id: str) -> bool:
        """Stop tracking a job whose lease is gone; cancel it if it is async. True if it ran."""
        entry = self._running.pop(job_id, None)
        if entry is None:
            return False
        self._changed.set()
        self.wakeup.notify()
        entry.context.cancelled = True  # what a sync job can see (current_job().cancelled)
        if entry.task is not None:
            entry.task.cancel()
        if entry.timer is not None:
            entry.timer.cancel()
        return True

    async def wait_for_change(self) -> None:
        """Return when a job finished or was forgotten since the last call."""
        self._changed.clear()
        await self._changed.wait()

    async def drain(self, grace: float, hard_stop: asyncio.Event) -> list[ClaimedJob]:
        """Wait up to ``grace`` s (or until ``hard_stop``) for running jobs, then cancel the
        rest; return the jobs cancelled, whose leases the caller releases."""
        deadline = time.monotonic() + grace
        while self._running and not hard_stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            change = asyncio.ensure_future(self.wait_for_change())
            stop = asyncio.ensure_future(hard_stop.wait())
            await asyncio.wait({change, stop}, timeout=remaining,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            change.cancel()
            stop.cancel()
        cancelled = [entry.job for entry in self._running.values()]
        tasks = [e.task for e in self._running.values() if e.task is not None]
        for job in cancelled:
            self.forget(job.id)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        return cancelled

    def get(self, job_id: str) -> ClaimedJob | None:
        entry = self._running.get(job_id)
        return entry.job if entry else None

    def close(self) -> None:
        if self.lane is not None:
            self.lane.close()


def _in_context(context: JobContext, work: Callable[[], Outcome]) -> Callable[[], Outcome]:
    """``work`` with ``current_job()`` set on the lane thread while it runs."""

    def run() -> Outcome:
        token = set_current(context)
        try:
            return work()
        finally:
            reset_current(token)

    return run
