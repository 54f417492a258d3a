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
import contextlib
import dataclasses
import enum
import functools
import inspect
import signal
import threading
import traceback as tb_module
import types
from collections.abc import Callable
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
    """Turns claimed jobs into outcomes for one app. Holds no threads itself: sync work is
    returned as a callable for the worker's :class:`~calmq.worker.threads.ThreadLane`."""

    def __init__(self, app: App, *, abandoned_limit: int = 64) -> None:
        self.app = app
        self.abandoned_threads = 0
        self.abandoned_limit = abandoned_limit

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

    @staticmethod
    def timeout_of(task: Task[Any, Any], envelope: Envelope) -> float | None:
        return envelope.t if envelope.t is not None else task.defaults.timeout

    async def run_async(self, task: Task[Any, Any], envelope: Envelope) -> Outcome:
        """Run an async job on the loop under its timeout. Never raises but CancelledError."""
        timeout = self.timeout_of(task, envelope)
        try:
            # In this task, not in one of wait_for's own (Python 3.11): there a SystemExit
            # from the job would be raised out of the event loop, past the except below.
            async with asyncio.timeout(timeout):
                await task.fn(*envelope.a, **envelope.k)
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is None or current.cancelling():
                raise  # the worker cancels it (lease lost, hard stop)
            return failure(exc)  # the job's own: it ended the task with the job never reported
        except TimeoutError:
            return timed_out(timeout)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # see call_sync
            return failure(exc)
        return SUCCEEDED

    @staticmethod
    def sync_work(task: Task[Any, Any], envelope: Envelope) -> Callable[[], Outcome]:
        """A callable that runs a sync job on the calling (lane) thread."""
        return functools.partial(call_sync, task, envelope)

    def run_solo(self, task: Task[Any, Any], envelope: Envelope) -> Outcome:
        """Run a sync job right here, on the loop's thread (the ``solo`` pool).

        The timeout is enforced with SIGALRM when this is the main thread (as the CLI runs
        it): the job is interrupted by an exception it cannot catch with ``except
        Exception``. Elsewhere a solo job runs without a timeout.
        """
        timeout = self.timeout_of(task, envelope)
        if timeout is None or threading.current_thread() is not threading.main_thread():
            return call_sync(task, envelope)
        previous = signal.signal(signal.SIGALRM, _raise_solo_timeout)
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                task.fn(*envelope.a, **envelope.k)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SoloTimeout:
            return timed_out(timeout)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # see call_sync
            return failure(exc)
        finally:
            signal.signal(signal.SIGALRM, previous)
        return SUCCEEDED

    def note_abandoned(self) -> None:
        self.abandoned_threads += 1

    @property
    def must_restart(self) -> bool:
        """True when so many threads were abandoned that only a restart frees them."""
        return self.abandoned_threads >= self.abandoned_limit


class _SoloTimeout(BaseException):
    """Raised into a solo job by SIGALRM; a BaseException so ``except Exception`` in job
    code does not swallow it."""


def _raise_solo_timeout(signum: int, frame: object) -> None:
    raise _SoloTimeout


def call_sync(task: Task[Any, Any], envelope: Envelope) -> Outcome:
    """Run a sync job right here; its exception becomes a FAILED outcome.

    Any exception, ``BaseException`` included (``sys.exit()`` in job code, a
    ``CancelledError`` out of an ``asyncio.run`` inside the job, a framework's own): let
    through, it ended the job's thread with the job never reported (its lease kept alive for
    good, its slot lost) or stopped the event loop. ``KeyboardInterrupt`` alone goes on: it
    is the operator's, not the job's.
    """
    try:
        task.fn(*envelope.a, **envelope.k)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return failure(exc)
    return SUCCEEDED


#: Frames that may belong to a live generator or coroutine: clearing one would close it.
_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _free_locals(tb: types.TracebackType | None) -> None:
    """Drop the locals of the plain function frames of a traceback (what a job allocated:
    all of it after a MemoryError) before it is formatted, which needs memory too.

    Generator and coroutine frames are left alone: the exception may have come from one
    that still runs (a connection's reader task that set it on a future), and clearing its
    frame would close it. Frames still executing (ours) refuse to be cleared.
    """
    while tb is not None:
        frame = tb.tb_frame
        if not frame.f_code.co_flags & _SUSPENDABLE:
            with contextlib.suppress(RuntimeError):
                frame.clear()
        tb = tb.tb_next


def timed_out(timeout: float | None) -> Outcome:
    """The FAILED outcome of a job that ran past its timeout."""
    return Outcome(
        OutcomeKind.FAILED,
        error=f"JobTimeout: {JobTimeout(f'ran longer than its timeout of {timeout} s')}",
        timed_out=True,
    )


def failure(exc: BaseException) -> Outcome:
    """A FAILED outcome carrying the exception's type, message and traceback; ``Retry``
    carries the delay the job asked for."""
    _free_locals(exc.__traceback__)
    if isinstance(exc, Retry):
        return Outcome(OutcomeKind.FAILED, error=f"Retry: {exc.reason}", retry_delay=exc.delay)
    error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    trace = "".join(tb_module.format_exception(exc))[-MAX_TRACEBACK_CHARS:]
    return Outcome(OutcomeKind.FAILED, error=error, traceback=trace)
