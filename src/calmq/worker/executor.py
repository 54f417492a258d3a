"""Run one claimed job: decode it, find its task, call it under its timeout, return an Outcome.

The executor never talks to the store; it turns whatever happened into an :class:`Outcome`
value and the worker turns outcomes into store calls. Async jobs run on the event loop and
are cancelled on timeout. Sync jobs run on a thread; Python cannot kill a thread, so a timed-out
sync job is reported failed at once and its thread is *abandoned* (left to finish on its own,
its result ignored, counted in ``abandoned_threads``). Too many abandoned threads mean the
process should be restarted; the worker does that (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import traceback as tb_module
from typing import Any

from calmq.app import App
from calmq.errors import JobTimeout, Retry, SerializationError, UnknownTask
from calmq.job import ClaimedJob
from calmq.serializers import Envelope
from calmq.task import Task

MAX_ERROR_CHARS = 2000
MAX_TRACEBACK_CHARS = 20000


class OutcomeKind(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # may be retried
    REJECTED = "rejected"  # can never succeed (unknown task, undecodable): dead at once
    CANCELLED = "cancelled"  # the lease was lost or the worker is stopping


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one job run."""

    kind: OutcomeKind
    error: str | None = None
    traceback: str | None = None
    #: Seconds the job asked to wait before its retry (``raise Retry(delay)``).
    retry_delay: float | None = None
    timed_out: bool = False


SUCCEEDED = Outcome(OutcomeKind.SUCCEEDED)


class Executor:
    """Runs jobs of one app; owns the thread pool for sync jobs."""

    def __init__(self, app: App, *, concurrency: int, abandoned_limit: int = 64) -> None:
        self.app = app
        self.abandoned_threads = 0
        self.abandoned_limit = abandoned_limit
        # Headroom above concurrency so abandoned threads do not starve live jobs of threads.
        self._threads = concurrent.futures.ThreadPoolExecutor(
            concurrency + abandoned_limit, thread_name_prefix="calmq-job"
        )

    def shutdown(self) -> None:
        # Do not wait: abandoned threads may never return.
        self._threads.shutdown(wait=False, cancel_futures=True)

    def resolve(self, job: ClaimedJob) -> tuple[Task[Any, Any], Envelope] | Outcome:
        """The task and arguments of a job, or a REJECTED outcome saying why not."""
        try:
            task = self.app.get_task(job.task)
        except UnknownTask as exc:
            return Outcome(OutcomeKind.REJECTED, error=f"UnknownTask: {exc}")
        try:
            envelope = self.app.serializer.decode(job.payload)
        except SerializationError as exc:
            return Outcome(OutcomeKind.REJECTED, error=f"SerializationError: {exc}")
        return task, envelope

    async def run(self, job: ClaimedJob) -> Outcome:
        """Run the job to an outcome. Never raises except CancelledError."""
        resolved = self.resolve(job)
        if isinstance(resolved, Outcome):
            return resolved
        task, envelope = resolved
        timeout = envelope.t if envelope.t is not None else task.defaults.timeout
        try:
            if task.is_async:
                await asyncio.wait_for(task.fn(*envelope.a, **envelope.k), timeout)
            else:
                await self._run_sync(task, envelope, timeout)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return Outcome(
                OutcomeKind.FAILED,
                error=f"JobTimeout: {JobTimeout(f'ran longer than its timeout of {timeout} s')}",
                timed_out=True,
            )
        except Retry as exc:
            return Outcome(OutcomeKind.FAILED, error=f"Retry: {exc.reason}", retry_delay=exc.delay)
        except Exception as exc:
            return failure(exc)
        return SUCCEEDED

    async def _run_sync(
        self, task: Task[Any, Any], envelope: Envelope, limit: float | None
    ) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._threads, _call, task, envelope)
        if limit is None:
            await future
            return
        try:
            await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            self.abandoned_threads += 1
            raise

    @property
    def must_restart(self) -> bool:
        """True when so many threads were abandoned that only a restart frees them."""
        return self.abandoned_threads >= self.abandoned_limit


def _call(task: Task[Any, Any], envelope: Envelope) -> Any:
    return task.fn(*envelope.a, **envelope.k)


def failure(exc: BaseException) -> Outcome:
    """A FAILED outcome carrying the exception's type, message and traceback."""
    error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    trace = "".join(tb_module.format_exception(exc))[-MAX_TRACEBACK_CHARS:]
    return Outcome(OutcomeKind.FAILED, error=error, traceback=trace)
