"""The worker: its lifecycle and the top-level loop. Fetching, executing, acknowledging,
lease keeping and maintenance live in their own modules; this one wires them together and
turns each job's :class:`Outcome` into a store call.

Shutdown: the first SIGTERM/SIGINT stops claiming and waits up to ``grace`` seconds for
running jobs; then running jobs are cancelled and their leases released, so other workers
pick them up at once instead of after the lease runs out. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from calmq.alerts import QueueWatch
from calmq.app import App
from calmq.errors import CalmqError, ConfigurationError
from calmq.events import Event, EventKind, Hook
from calmq.job import ClaimedJob, FailOutcome, WorkerInfo
from calmq.logs import JobLog
from calmq.retry import Backoff
from calmq.stores import open_store
from calmq.stores.base import CAP_MULTI_PROCESS, Store
from calmq.task import validate_queue_name
from calmq.worker.acker import Acker
from calmq.worker.executor import Executor, Outcome, OutcomeKind
from calmq.worker.fetcher import Fetcher
from calmq.worker.heartbeat import Heartbeat, versions
from calmq.worker.lease_keeper import InFlight, LeaseKeeper
from calmq.worker.maintenance import Maintenance
from calmq.worker.running import Acked, RunningJobs
from calmq.worker.stats import WorkerStats
from calmq.worker.threads import DaemonThreads

log = logging.getLogger("calmq.worker")
T = TypeVar("T")


DEFAULT_LEASE = 30.0
#: Longest a worker under load (last claim full) with free slots waits for more to free
#: before claiming (seconds).
CLAIM_LINGER = 0.002
EXIT_RESTART = 3  # exit code asking the supervisor for a fresh process


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How one worker process runs. Defaults are documented in docs/operations.md."""

    queues: Sequence[str] = ("default",)
    #: Jobs running at once in this process (async jobs on the loop, sync jobs on threads).
    concurrency: int = 16
    #: Lease length in seconds; extended every lease/3 while a job runs.
    lease: float = DEFAULT_LEASE
    #: Exit once no job is ready or running (tests, cron).
    burst: bool = False
    #: Seconds to wait for running jobs after the first stop signal.
    grace: float = 25.0
    #: Relative weights per queue; None serves queues in strict order.
    weights: Mapping[str, float] | None = None
    #: How often expired leases are rescued, in seconds.
    maintenance_interval: float = 1.0
    #: Longest idle wait before claiming again even without a wake-up.
    max_idle_wait: float = 1.0
    #: Where sync jobs run: "threads" (one thread per slot) or "solo" (one at a time on the
    #: worker's own thread: the least overhead per job, for short jobs; see operations.md).
    pool: str = "threads"
    #: One log line per job outcome on the ``calmq.jobs`` logger.
    log_jobs: bool = True
    #: Seconds between heartbeats to the worker registry (dropped after 5 missed).
    heartbeat_interval: float = 3.0

    def __post_init__(self) -> None:
        if not self.queues:
            raise ConfigurationError("a worker needs at least one queue")
        for queue in self.queues:
            validate_queue_name(queue)
        if not 1 <= self.concurrency <= 10_000:
            raise ConfigurationError(f"concurrency must be in 1..10000, got {self.concurrency}")
        if not 0.1 <= self.lease <= 86_400:
            raise ConfigurationError(f"lease must be in 0.1..86400 seconds, got {self.lease}")
        if self.grace < 0:
            raise ConfigurationError(f"grace must be >= 0 seconds, got {self.grace}")
        if self.pool not in ("threads", "solo"):
            raise ConfigurationError(f"pool must be 'threads' or 'solo', got {self.pool!r}")
        if self.weights is not None and any(w <= 0 for w in self.weights.values()):
            raise ConfigurationError("queue weights must be > 0")


class Worker:
    """Runs an app's jobs from some queues until stopped."""

    def __init__(
        self, app: App, config: WorkerConfig | None = None, *,
        hooks: Sequence[Hook] = (),
    ) -> None:  # fmt: skip
        self.app = app
        self.config = config or WorkerConfig()
        #: The app's event feed; ``hooks`` are subscribed to it while the worker runs.
        self.events = app.events
        self.hooks = list(hooks)
        self.stats = WorkerStats()
        self.id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.exit_code = 0
        self.lease_ms = int(self.config.lease * 1000)
        self.started_at_ms = int(time.time() * 1000)
        self.claim_batch = max(1, self.config.concurrency // 2)
        self.inflight = InFlight()
        self._recording: set[asyncio.Task[None]] = set()
        self._stopping: asyncio.Event | None = None
        self._hard_stop: asyncio.Event | None = None
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="calmq-io")
        # Acknowledgements have a thread (and so a connection) of their own: behind one
        # thread, a claim waited for the previous batch's acknowledgement and Redis sat idle
        # while the worker parsed each reply; side by side the two calls overlap.
        self._ack_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="calmq-ack")
        # Two: a waiting thread may run a lone job it claimed (RunningJobs.prestart) while
        # the other one waits for the next. Daemon threads, like the lane's, so a job stuck
        # there never holds up the process's exit.
        self._waiter = DaemonThreads(2, "calmq-wait")
        self.store: Store = self._open_store(app)
        self.executor = Executor(app)
        self._versions = versions(self.store)

    @staticmethod
    def _open_store(app: App) -> Store:
        """The worker's own store: a worker may wait longer on the store than a web request
        should. An in-memory store cannot be opened twice, so that one is shared."""
        if CAP_MULTI_PROCESS not in app.store.capabilities:
            return app.store
        # One connection each for the I/O, acknowledgement, waiter and lease-keeper threads,
        # and one to spare (a lone job's acknowledgement from the thread that ran it).
        relaxed = app.settings.replace(
            pool_size=5, pool_timeout=5.0, command_timeout=5.0, connect_timeout=2.0
        )
        return open_store(app.url, relaxed)

    # --- the loop --------------------------------------------------------------------
    async def run(self) -> int:
        """Work until stopped (or, in burst mode, until idle). Returns the exit code."""
        await self._start()
        failures = 0
        try:
            while not self.stopping.is_set():
                free = await self._free_slots_worth_a_claim()
                if free <= 0:
                    continue
                try:
                    if self.fetcher.drained and not self.config.burst:
                        # The queues ran dry: claiming before a wake-up (enqueue, freed lane,
                        # due job) would find nothing. Freed slots alone make nothing
                        # claimable, so running jobs are not waited on.
                        claimed = await self.fetcher.wait_then_claim(free, self.jobs.prestart)
                    else:
                        claimed = await self.fetcher.claim(free)
                    failures = 0
                except CalmqError as exc:
                    failures += 1
                    await self._back_off(failures, exc)
                    continue
                if claimed:
                    self._claimed(claimed)
                if self.config.burst:
                    if not claimed and not self.jobs and not self._recording:
                        log.info("burst mode: no job ready or running, exiting")
                        break
                    if not claimed:  # wake on a free slot (to notice idleness) or new work
                        await self._wait_for(
                            self.jobs.wait_for_change(), self.fetcher.wait_for_work(self.stopping)
                        )
        finally:
            await self._stop()
        return self.exit_code

    def run_sync(self) -> int:
        """Run the worker on a new event loop (what ``calmq worker`` does)."""
        return asyncio.run(self.run())

    # --- start and stop ----------------------------------------------------------------
    @property
    def stopping(self) -> asyncio.Event:
        assert self._stopping is not None, "worker not started"
        return self._stopping

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping, self._hard_stop = asyncio.Event(), asyncio.Event()
        self.jobs = RunningJobs(
            self.executor, self.config.concurrency, self._on_outcome,
            solo=self.config.pool == "solo", ack_here=self._ack_here,
        )  # fmt: skip
        self.fetcher = Fetcher(
            self.store, self.config.queues, lease_ms=self.lease_ms, run_io=self._run_io,
            waiter=self._waiter, weights=self.config.weights,
            max_idle_wait=self.config.max_idle_wait,
        )  # fmt: skip
        self.acker = Acker(self.store.complete, self.inflight, self._run_ack_io, self._on_acked)
        self.maintenance = Maintenance(
            self.store, self.config.queues, interval=self.config.maintenance_interval,
            run_io=self._run_io, events=self.events,
            watch=QueueWatch(self.app.settings, self.events),
        )  # fmt: skip
        self.keeper = LeaseKeeper(
            self.store, self.inflight, lease_ms=self.lease_ms,
            on_lost=lambda ids, cancelled: self._call_soon_threadsafe(loop, ids, cancelled),
        )  # fmt: skip
        self.heartbeat = Heartbeat(self.store, self._snapshot, self._run_io,
                                   interval=self.config.heartbeat_interval)  # fmt: skip
        self._background = [
            asyncio.create_task(self.heartbeat.run_forever(self.stopping), name="calmq-beat"),
            asyncio.create_task(self.acker.run_forever(), name="calmq-acker"),
            asyncio.create_task(self.maintenance.run_forever(self.stopping), name="calmq-maint"),
        ]
        self.keeper.start()
        self._subscribed = list(self.hooks)
        for hook in self.hooks:
            self.events.subscribe(hook)
        if self.config.log_jobs:
            # Only the outcomes the logger prints at its level: at WARNING, the hot path
            # builds no event for a claimed or succeeded job.
            job_log = JobLog()
            self.events.subscribe(job_log, job_log.kinds(), many=job_log.many)
            self._subscribed.append(job_log)
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        log.info(
            "worker %s started: queues=%s concurrency=%d lease=%.1fs store=%s",
            self.id, ",".join(self.config.queues), self.config.concurrency,
            self.config.lease, self.store.display_url,
        )  # fmt: skip

    def request_stop(self) -> None:
        """First call: stop claiming and drain. Second call: stop now."""
        if self._stopping is None:
            return
        if self._stopping.is_set():
            log.warning("second stop signal: cancelling running jobs now")
            assert self._hard_stop is not None
            self._hard_stop.set()
        else:
            log.info(
                "stop requested: finishing %d running jobs (grace %.0fs)",
                len(self.jobs),
                self.config.grace,
            )
            self._stopping.set()
            self.fetcher.stop_waiting()
            self.jobs.wakeup.notify()

    async def _stop(self) -> None:
        self.stopping.set()
        self.fetcher.stop_waiting()
        # Jobs claimed on the waiter thread as the stop came (maybe already running): they
        # run out within the grace period like every other running job.
        leftover = await self._run_io(self.fetcher.close)
        if leftover:
            self._claimed(leftover)
        assert self._hard_stop is not None
        cancelled = await self.jobs.drain(self.config.grace, self._hard_stop)
        if cancelled:
            log.warning("%d jobs still running after the grace period: releasing their leases",
                        len(cancelled))  # fmt: skip
        if self._recording:
            await asyncio.wait(self._recording, timeout=10)
        with contextlib.suppress(CalmqError):
            await self.acker.flush()
        await self._release_held()
        await self.heartbeat.forget(self.id)
        self.keeper.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.jobs.close()
        self._io.shutdown(wait=True)
        self._ack_io.shutdown(wait=True)
        self._waiter.shutdown(wait=False)
        if self.store is not self.app.store:
            self.store.close()
        for hook in self._subscribed:
            self.events.unsubscribe(hook)
        log.info(
            "worker %s stopped: %d succeeded, %d retried, %d dead",
            self.id,
            self.stats.succeeded,
            self.stats.retried,
            self.stats.dead,
        )

    async def _release_held(self) -> None:
        """Give back every lease still held (jobs cancelled or abandoned at shutdown)."""
        for queue, leases in self.inflight.by_queue().items():
            try:
                released = await self._run_io(self.store.release, queue, leases)
            except CalmqError as exc:
                log.warning(
                    "could not release %d leases in %s (they expire on their own): %s",
                    len(leases),
                    queue,
                    exc,
                )
                continue
            self.stats.released += released
            if released and self.events:
                self.events.emit(Event(EventKind.RELEASED, queue, count=released,
                                       detail=f"{released} leases given back"))  # fmt: skip
            for lease in leases:
                self.inflight.remove(lease.id)

    # --- jobs --------------------------------------------------------------------------
    def _snapshot(self) -> WorkerInfo:
        """This worker as the registry shows it."""
        return WorkerInfo(
            id=self.id, host=self.heartbeat.host, pid=os.getpid(), queues=list(self.config.queues),
            concurrency=self.config.concurrency, pool=self.config.pool,
            running=self.inflight.ids(), started_at_ms=self.started_at_ms,
            ttl_ms=self.heartbeat.ttl_ms, versions=self._versions, stats=self.stats.summary(),
        )  # fmt: skip

    def _claimed(self, claimed: list[ClaimedJob]) -> None:
        self.stats.claimed += len(claimed)
        self.inflight.add(*claimed)
        if self.events.wants(EventKind.CLAIMED):
            for job in claimed:
                self._emit(EventKind.CLAIMED, job)
        self.jobs.start(claimed)

    def _on_outcome(
        self, job: ClaimedJob, outcome: Outcome, run_ms: float, acked: Acked | None
    ) -> None:
        """Every finished job comes here once: acknowledge it (unless its lane thread did,
        ``acked``) or record the failure."""
        self.stats.sample(job.wait_ms, run_ms)
        if outcome.kind is OutcomeKind.SUCCEEDED:
            if acked is None:
                self.acker.add(job, run_ms)
            else:
                self.acker.report_alone(job, run_ms, acked.taken)
        else:
            recording = asyncio.create_task(self._record_failure(job, outcome, run_ms))
            self._recording.add(recording)
            recording.add_done_callback(self._recording.discard)
        if self.executor.must_restart and not self.stopping.is_set():
            log.error("%d sync jobs outlived their timeout; restarting the process to free"
                      " their threads", self.executor.abandoned_threads)  # fmt: skip
            self.exit_code = EXIT_RESTART
            self.request_stop()

    def _ack_here(self, job: ClaimedJob) -> Acked | None:
        """Acknowledge a lone job on the lane thread that ran it (``RunningJobs``); None when
        the store call failed: the acknowledger then takes the job, with its retries."""
        try:
            return Acked(self.acker.complete_alone(job))
        except CalmqError:
            return None

    async def _record_failure(self, job: ClaimedJob, outcome: Outcome, run_ms: float) -> None:
        retry_in = self._retry_delay(job, outcome)
        if outcome.timed_out:
            self.stats.timed_out += 1
        try:
            result = await self._run_io(
                self.store.fail, job.queue, job.lease, error=outcome.error or "failed",
                traceback=outcome.traceback,
                retry_in_ms=None if retry_in is None else int(retry_in * 1000),
            )  # fmt: skip
        except CalmqError as exc:
            log.error(
                "could not record failure of job %s (its lease will expire and it will"
                " run again): %s",
                job.id,
                exc,
            )
            result = None
        self.inflight.remove(job.id)
        kind = EventKind.STALE
        if result is FailOutcome.RETRY_SCHEDULED:
            kind, self.stats.retried = EventKind.RETRIED, self.stats.retried + 1
        elif result is FailOutcome.DEAD:
            kind, self.stats.dead = EventKind.DEAD, self.stats.dead + 1
        else:
            self.stats.stale_acks += 1
        if self.events:
            detail = f"retry in {retry_in:.2f}s" if kind is EventKind.RETRIED else ""
            self._emit(EventKind.FAILED, job, run_ms=run_ms, error=outcome.error)
            self._emit(kind, job, run_ms=run_ms, error=outcome.error, detail=detail)

    def _retry_delay(self, job: ClaimedJob, outcome: Outcome) -> float | None:
        """Seconds until the retry, or None for the dead-letter store."""
        if outcome.kind is OutcomeKind.REJECTED or job.attempt >= job.max_attempts:
            return None
        if outcome.retry_delay is not None:
            return max(0.0, outcome.retry_delay)
        return self._backoff_for(job).delay(job.attempt)

    def _backoff_for(self, job: ClaimedJob) -> Backoff:
        task = self.app.tasks.get(job.task)
        backoff = task.defaults.backoff if task else Backoff()
        with contextlib.suppress(CalmqError):
            override = self.app.serializer.decode(job.payload).b
            if override:
                backoff = dataclasses.replace(backoff, base=override[0], cap=override[1])
        return backoff

    def _on_acked(self, jobs: list[tuple[ClaimedJob, float]], acked: list[bool | None]) -> None:
        """A batch of acknowledgements came back: one SUCCEEDED event per job taken, emitted
        together (hooks with a batch form take the lock or walk the logging tree once)."""
        kind = EventKind.SUCCEEDED
        wanted = self.events.wants(kind)
        succeeded: list[Event] = []
        for (job, run_ms), ok in zip(jobs, acked, strict=True):
            if not ok:
                self._not_acked(job, ok, run_ms)
            elif wanted:
                succeeded.append(Event(kind, job.queue, job.task, job.id, job.attempt,
                                       job.max_attempts, float(job.wait_ms), run_ms))  # fmt: skip
        self.stats.succeeded += acked.count(True)
        if succeeded:
            self.events.emit_many(kind, succeeded)

    def _not_acked(self, job: ClaimedJob, acked: bool | None, run_ms: float) -> None:
        if acked is None:
            self._emit(EventKind.STALE, job, run_ms=run_ms,
                       detail="finished, but the store did not take the acknowledgement: it"
                       " runs again once its lease expires (at-least-once)")  # fmt: skip
        else:
            self.stats.stale_acks += 1
            self._emit(EventKind.STALE, job, run_ms=run_ms,
                       detail="finished, but its lease was no longer ours: it expired and the"
                       " job was handed to another worker")  # fmt: skip

    def _leases_lost(self, ids: list[str], cancelled: set[str]) -> None:
        for job_id in ids:
            self.inflight.remove(job_id)
            job = self.jobs.get(job_id)
            if job is None or not self.jobs.forget(job_id):
                continue
            if job_id in cancelled:
                self._emit(EventKind.CANCELLED, job, detail="cancelled while running")
            else:
                self.stats.lease_lost += 1
                self._emit(EventKind.LEASE_LOST, job,
                           detail="the lease was lost (expired and taken back)")  # fmt: skip

    def _call_soon_threadsafe(
        self, loop: asyncio.AbstractEventLoop, ids: list[str], cancelled: set[str]
    ) -> None:
        loop.call_soon_threadsafe(self._leases_lost, ids, cancelled)

    def _emit(self, kind: EventKind, job: ClaimedJob, **fields: Any) -> None:
        # Every event of a job carries its wait (logs, metrics).
        self.events.emit(Event(kind, job.queue, job.task, job.id, job.attempt, job.max_attempts,
                               float(job.wait_ms), **fields))  # fmt: skip

    # --- slots and I/O -----------------------------------------------------------------
    async def _free_slots_worth_a_claim(self) -> int:
        """Free slots, once enough are free to make a claim worth its round trip.

        Claiming each time one slot frees would cost a store call per job, more than short
        jobs themselves. So under load (the last claim came back full), while jobs are
        running, wait up to CLAIM_LINGER for half the slots to free, then claim whatever is
        free. After a claim that drained the queues there is no linger: the next claim follows
        a wake-up for new work, and that work should start at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLAIM_LINGER
        while not self.stopping.is_set():
            free = self.jobs.free_slots
            if free >= self.claim_batch or not self.jobs or (free > 0 and self.fetcher.drained):
                return free
            remaining = deadline - loop.time()
            if free > 0 and remaining <= 0:
                return free
            await self.jobs.wakeup.wait(remaining if free > 0 else None)
        return 0

    async def _wait_for(self, *waits: Coroutine[Any, Any, Any]) -> None:
        """Wait until the first of ``waits`` or a stop request completes."""
        futures = {asyncio.ensure_future(w) for w in (*waits, self.stopping.wait())}
        try:
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in futures:
                future.cancel()

    async def _back_off(self, failures: int, exc: Exception) -> None:
        delay = min(5.0, 0.05 * 2**failures) * (0.5 + random.random() / 2)  # noqa: S311
        log.warning("store unavailable (%s); retrying in %.2fs", exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)

    async def _run_io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call on the I/O thread, so the loop never blocks on the store."""
        return await _run_in(self._io, fn, *args, **kwargs)

    async def _run_ack_io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an acknowledgement on its own thread, beside the claims on the I/O thread."""
        return await _run_in(self._ack_io, fn, *args)


async def _run_in(
    executor: concurrent.futures.Executor, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))


def run_worker(app: App, config: WorkerConfig, hooks: Sequence[Hook] = ()) -> int:
    """Run one worker process to completion; returns its exit code."""
    return Worker(app, config, hooks=hooks).run_sync()
