"""Tasks: a decorated function plus its defaults, and typed ways to enqueue it.

``Task[P, R]`` keeps the function's signature (ParamSpec), so ``send_sms.enqueue(1, 2)`` on a
``(to: str, body: str)`` task is a type error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import msgspec

from calmq.errors import CalmqError, ConfigurationError
from calmq.job import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    CancelOutcome,
    EnqueueOutcome,
    EnqueueResult,
    JobInfo,
    JobState,
)
from calmq.limits import (
    CompiledLimits,
    ConcurrencyLimit,
    KeySpec,
    Limits,
    RateLimit,
    Throttle,
    Unique,
    compile_limits,
)
from calmq.retry import Backoff

if TYPE_CHECKING:
    from calmq.app import App

P = ParamSpec("P")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True, slots=True)
class TaskOptions:
    """Defaults of one task; each can be overridden per call with :meth:`Task.options`."""

    queue: str = "default"
    retries: int = 3
    timeout: float | None = None
    priority: int = 0
    backoff: Backoff = dataclasses.field(default_factory=Backoff)
    #: Unique key, throttle, rate and concurrency limits, fairness key (calmq.limits).
    limits: Limits = dataclasses.field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.retries > 1000:
            raise ConfigurationError(f"retries must be in 0..1000, got {self.retries!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigurationError(f"timeout must be > 0 seconds or None, got {self.timeout!r}")
        check_priority(self.priority)
        validate_queue_name(self.queue)


def check_priority(priority: int) -> None:
    """Raise ConfigurationError for a priority outside MIN_PRIORITY..MAX_PRIORITY."""
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ConfigurationError(
            f"priority must be in {MIN_PRIORITY}..{MAX_PRIORITY}, got {priority!r}"
        )


# \s matches exactly what str.isspace() accepts (both use Py_UNICODE_ISSPACE).
_QUEUE_NAME = re.compile(r"[^{}\s]{1,200}")


def validate_queue_name(queue: str) -> None:
    """Queue names end up in Redis keys and SQL rows: keep them plain."""
    if not isinstance(queue, str) or _QUEUE_NAME.fullmatch(queue) is None:
        raise ConfigurationError(
            f"bad queue name {queue!r}: 1-200 characters, no braces or white space"
        )


def run_time(delay: float | dt.timedelta | None, at: dt.datetime | None) -> tuple[int, int | None]:
    """(delay_ms, run_at_ms) from a relative delay or an aware datetime."""
    if delay is not None and at is not None:
        raise ConfigurationError("give either a delay or a run time, not both")
    if at is not None:
        if not isinstance(at, dt.datetime) or at.tzinfo is None:
            raise ConfigurationError(
                f"run time must be a timezone-aware datetime, got {at!r}"
                " (use datetime.now(timezone.utc) + ...)"
            )
        return 0, int(at.timestamp() * 1000)
    if delay is None:
        return 0, None
    seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else delay
    if not isinstance(seconds, int | float) or seconds < 0 or seconds != seconds:
        raise ConfigurationError(f"delay must be a non-negative number of seconds, got {delay!r}")
    return int(seconds * 1000), None


class Call(msgspec.Struct, frozen=True, gc=False):
    """One job to enqueue with :meth:`Task.enqueue_many`: arguments plus per-job options.

    A msgspec Struct rather than a dataclass: a bulk enqueue makes one per job, and a frozen
    dataclass spent 0.7 µs on each (a tenth of a job's cost on the bulk path). It is not
    tracked by Python's cycle collector either (``gc=False``): a Call whose own arguments
    refer back to it would never be freed, which no real call does."""

    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = msgspec.field(default_factory=dict)
    job_id: str | None = None
    delay: float | dt.timedelta | None = None
    priority: int | None = None


class Job(msgspec.Struct, frozen=True, gc=False):
    """Handle of an enqueued job. ``created`` is False when the id already existed (idempotent
    enqueue returned the existing job), when a job with the same unique key was pending (the
    handle is then that job's: ``duplicate_of``), or when a throttle or full queue dropped it
    (``outcome`` says which).

    A msgspec Struct for the same reason as :class:`Call` (a frozen dataclass cost 1.1 µs per
    handle, this 0.15). It refers to its app weakly (``app_ref``): a handle does not keep the
    app alive, so it can never sit in a reference cycle and Python's cycle collector need not
    track it (tracked handles made a bulk enqueue 15 % slower)."""

    id: str
    queue: str
    task: str
    created: bool
    state: JobState
    app_ref: weakref.ref[App]
    outcome: EnqueueOutcome = EnqueueOutcome.CREATED
    duplicate_of: str | None = None

    @property
    def app(self) -> App:
        """The app that enqueued the job; ``CalmqError`` once nothing else holds it."""
        app = self.app_ref()
        if app is None:
            raise CalmqError(f"job {self.id}: the App that enqueued it is gone")
        return app

    def __repr__(self) -> str:
        return (
            f"Job(id={self.id!r}, queue={self.queue!r}, task={self.task!r},"
            f" created={self.created!r}, state={self.state!r}, outcome={self.outcome!r},"
            f" duplicate_of={self.duplicate_of!r})"
        )

    @property
    def throttled(self) -> bool:
        """True when a throttle dropped the job: it was not stored."""
        return self.outcome is EnqueueOutcome.THROTTLED

    def info(self) -> JobInfo | None:
        """The job as stored now (None once a finished job is forgotten)."""
        return self.app.store.get_job(self.queue, self.id)

    def cancel(self) -> CancelOutcome:
        """Cancel the job (see :meth:`calmq.App.cancel`)."""
        return self.app.cancel(self.id, queue=self.queue)

    @classmethod
    def from_result(cls, app: App, queue: str, task: str, result: EnqueueResult) -> Job:
        return cls(result.id, queue, task, result.created, result.state, app.self_ref,
                   result.outcome, result.duplicate_of)  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class CallOptions:
    """Per-call overrides collected by :meth:`Task.options`; unset fields use the task's."""

    job_id: str | None = None
    queue: str | None = None
    priority: int | None = None
    retries: int | None = None
    timeout: float | None = None
    backoff: Backoff | None = None
    delay: float | dt.timedelta | None = None
    at: dt.datetime | None = None
    unique: Unique | None = None
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    concurrency_limit: ConcurrencyLimit | None = None
    fairness_key: KeySpec | None = None

    def limit_overrides(self) -> dict[str, Any]:
        """The controls set on this call (None fields keep the task's)."""
        return {
            "unique": self.unique,
            "throttle": self.throttle,
            "rate_limit": self.rate_limit,
            "concurrency_limit": self.concurrency_limit,
            "fairness_key": self.fairness_key,
        }


#: The options of a plain ``task.enqueue(...)``: one shared (immutable) instance, so the
#: task's resolved :class:`EnqueuePlan` for it is found by identity.
NO_OPTIONS = CallOptions()


@dataclasses.dataclass(frozen=True, slots=True)
class EnqueuePlan:
    """The options of one enqueue call resolved against the task's defaults and validated
    once, not once per job: what every job of the call shares."""

    queue: str
    max_attempts: int
    priority: int
    timeout: float | None
    backoff: list[float] | None  # the envelope's backoff override, [base, cap]
    delay_ms: int
    run_at_ms: int | None
    #: The call's controls resolved for this task: what each job adds to them. None when
    #: no control is set: jobs need no argument binding and no limit keys.
    controls: CompiledLimits | None


def plan_enqueue(defaults: TaskOptions, options: CallOptions, *, task: str) -> EnqueuePlan:
    """Resolve and validate ``options`` over ``defaults`` for the task named ``task``
    (ConfigurationError when bad)."""
    queue = options.queue or defaults.queue
    retries = defaults.retries if options.retries is None else options.retries
    priority = defaults.priority if options.priority is None else options.priority
    checked = TaskOptions(queue, retries, options.timeout, priority)  # validates ranges
    backoff = options.backoff
    delay_ms, run_at_ms = run_time(options.delay, options.at)
    limits = defaults.limits.merged(options.limit_overrides())
    return EnqueuePlan(
        queue, retries + 1, priority, checked.timeout,
        [backoff.base, backoff.cap] if backoff else None, delay_ms, run_at_ms,
        None if limits.empty else compile_limits(limits, task),
    )  # fmt: skip


class Task(Generic[P, R]):
    """A function registered on an :class:`~calmq.App` under a name."""

    def __init__(
        self, app: App, fn: Callable[P, R] | Callable[P, Awaitable[R]], name: str,
        options: TaskOptions,
    ) -> None:  # fmt: skip
        self.app = app
        self.fn = fn
        self.name = name
        self.defaults = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature: inspect.Signature | None = None
        # The last plan made, with the options and defaults it was made from: a loop of
        # task.enqueue() (or of one BoundTask's) resolves its options once. One tuple, so a
        # thread reading it while another replaces it sees a consistent triple.
        self._last_plan: tuple[CallOptions, TaskOptions, EnqueuePlan] | None = None

    def plan(self, options: CallOptions) -> EnqueuePlan:
        """``options`` resolved over this task's defaults and validated (cached by identity)."""
        last = self._last_plan
        if last is not None and last[0] is options and last[1] is self.defaults:
            return last[2]
        plan = plan_enqueue(self.defaults, options, task=self.name)
        self._last_plan = (options, self.defaults, plan)
        return plan

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name (defaults applied), for limit keys."""
        if self._signature is None:
            self._signature = inspect.signature(self.fn)
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"bad arguments for task {self.name!r}: {exc}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.defaults.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R | Awaitable[R]:
        """Call the function directly, in this process (no queue)."""
        return self.fn(*args, **kwargs)

    def options(self, **overrides: Any) -> BoundTask[P, R]:
        """Per-call options: ``job_id``, ``queue``, ``priority``, ``retries``, ``timeout``,
        ``backoff``, ``delay``, ``at``, and the controls ``unique``, ``throttle``,
        ``rate_limit``, ``concurrency_limit``, ``fairness_key`` (see :mod:`calmq.limits`).
        Example: ``task.options(priority=9).enqueue(x)``."""
        try:
            return BoundTask(self, CallOptions(**overrides))
        except TypeError as exc:
            raise ConfigurationError(f"bad option for {self.name!r}: {exc}") from None

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue one job to run as soon as a worker is free."""
        return self.app.enqueue_calls(self, [Call(args, kwargs)], NO_OPTIONS)[0]

    def enqueue_in(self, delay: float | dt.timedelta, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue one job to run ``delay`` (seconds or a timedelta) from now."""
        return BoundTask(self, CallOptions(delay=delay)).enqueue(*args, **kwargs)

    def enqueue_at(self, when: dt.datetime, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue one job to run at ``when`` (a timezone-aware datetime)."""
        return BoundTask(self, CallOptions(at=when)).enqueue(*args, **kwargs)

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """``enqueue`` for asyncio code: the event loop never waits on the store."""
        return await BoundTask(self, NO_OPTIONS).enqueue_async(*args, **kwargs)

    def enqueue_many(self, calls: Iterable[Sequence[Any] | Call]) -> list[Job]:
        """Enqueue many jobs in one round trip per batch. Each item is a tuple of positional
        arguments or a :class:`Call`."""
        return BoundTask(self, NO_OPTIONS).enqueue_many(calls)


class BoundTask(Generic[P, R]):
    """A task with per-call options applied; made by :meth:`Task.options`."""

    def __init__(self, task: Task[P, R], options: CallOptions) -> None:
        self.task = task
        self.call_options = options

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue one job with these options."""
        return self.task.app.enqueue_calls(self.task, [Call(args, kwargs)], self.call_options)[0]

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """``enqueue`` for asyncio code, run on the app's bounded producer threads."""
        app = self.task.app
        jobs = await asyncio.get_running_loop().run_in_executor(
            app.producer_executor, app.enqueue_calls, self.task, [Call(args, kwargs)],
            self.call_options,
        )  # fmt: skip
        return jobs[0]

    def enqueue_many(self, calls: Iterable[Sequence[Any] | Call]) -> list[Job]:
        """Enqueue many jobs with these options, in batches of one round trip each."""
        normalised = [c if isinstance(c, Call) else Call(tuple(c)) for c in calls]
        return self.task.app.enqueue_calls(self.task, normalised, self.call_options)
