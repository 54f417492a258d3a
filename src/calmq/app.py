"""App: the explicit task registry, its store and its settings. No global state.

Invariants live here, above the store seam: arguments are validated and encoded, sizes
checked and run times computed *before* any store call, so bad input never reaches storage.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ParamSpec, TypeVar, overload

from calmq.alerts import EnqueueWatch
from calmq.errors import (
    ConfigurationError,
    DuplicateJob,
    PayloadTooLarge,
    QueueFull,
    UnknownTask,
)
from calmq.events import Event, EventKind, Hook, Hooks, ManyHook
from calmq.job import (
    CancelOutcome,
    DuplicatePolicy,
    EnqueueOutcome,
    EnqueueResult,
    JobState,
    NewJob,
    QueueConfig,
    QueueOverflow,
    new_job_id,
    new_job_ids,
)
from calmq.limits import (
    ConcurrencyLimit,
    KeySpec,
    Limits,
    QueueLimit,
    RateLimit,
    Throttle,
    Unique,
)
from calmq.retry import Backoff
from calmq.serializers import Envelope, Serializer, make_serializer
from calmq.settings import Settings
from calmq.stores import open_store
from calmq.stores.base import Store
from calmq.task import (
    NO_OPTIONS,
    Call,
    CallOptions,
    EnqueuePlan,
    Job,
    Task,
    TaskOptions,
    check_priority,
    run_time,
    validate_queue_name,
)

P = ParamSpec("P")
R = TypeVar("R")

#: Jobs per store call in ``enqueue_many``: one round trip each.
ENQUEUE_BATCH = 1000
#: Jobs per chunk of a store call (one Redis script each, short enough never to stall other
#: clients): the store works on one chunk while the next is built. Measured on 1,000-job
#: calls: 125 to 250 alike, 1.3x one 1,000-job script; 334 and 500 overlap less.
ENQUEUE_CHUNK = 200

#: A call that passed every check: job id (None: make one), payload, priority, delay_ms,
#: run_at_ms, control fields (None: a plain job).
_Checked = tuple[str | None, bytes, int, int, int | None, dict[str, Any] | None]


class App:
    """A calmq application: register tasks on it, enqueue through it, point workers at it.

    Args:
        url: Store URL (``redis://...``, ``sqlite:///path``); default ``CALMQ_URL`` or the
            embedded SQLite file ``./calmq.sqlite3``.
        settings: Everything else; default ``Settings.from_env()``.
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
        base = settings if settings is not None else Settings.from_env()
        self.settings = base.replace(url=url) if url else base
        self.url = self.settings.resolved_url()
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.serializer: Serializer = make_serializer(self.settings.serializer)
        self._store: Store | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        #: Run jobs at enqueue time instead of storing them (``calmq.testing.eager``).
        self.eager = False
        #: Lifecycle events of this app's producers and workers; subscribe with ``on_event``.
        self.events = Hooks()
        self._enqueue_watch = EnqueueWatch(self.settings, self.events)
        #: What job handles hold (``Job.app_ref``): they do not keep the app alive.
        self.self_ref = weakref.ref(self)

    def on_event(self, hook: Hook, *, many: ManyHook | None = None) -> Hook:
        """Subscribe ``hook`` to every lifecycle event (or the kinds it was marked with by
        ``listens_to``; a decorator works too). ``many``: its form for a worker's batch of
        events of one kind (see ``Hooks.subscribe``)."""
        return self.events.subscribe(hook, many=many)

    def __repr__(self) -> str:
        return f"<calmq.App {self.store_display_url} tasks={len(self.tasks)}>"

    @property
    def store_display_url(self) -> str:
        from calmq.stores import redact_url

        return redact_url(self.url)

    # --- registry ------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, queue: str = "default",
        retries: int = 3,
        timeout: float | None = None, priority: int = 0, backoff: Backoff | None = None,
        unique: Unique | None = None, throttle: Throttle | None = None,
        rate_limit: RateLimit | None = None, concurrency_limit: ConcurrencyLimit | None = None,
        fairness_key: KeySpec | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...  # fmt: skip

    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
        queue: str = "default", retries: int = 3, timeout: float | None = None,
        priority: int = 0, backoff: Backoff | None = None, unique: Unique | None = None,
        throttle: Throttle | None = None, rate_limit: RateLimit | None = None,
        concurrency_limit: ConcurrencyLimit | None = None, fairness_key: KeySpec | None = None,
    ) -> Any:  # fmt: skip
        """Register a function (sync or async) as a task: ``@app.task`` or
        ``@app.task(queue="sms", retries=5, timeout=30, priority=5)``.

        Controls (see :mod:`calmq.limits`), enforced by the store: ``unique=Unique(...)``,
        ``throttle=Throttle(...)``, ``rate_limit=RateLimit(...)``,
        ``concurrency_limit=ConcurrencyLimit(...)`` and ``fairness_key`` (claims round-robin
        across its values, e.g. tenants). Each can be overridden per call with ``options``.
        """
        limits = Limits(unique, throttle, rate_limit, concurrency_limit, fairness_key)
        options = TaskOptions(queue, retries, timeout, priority, backoff or Backoff(), limits)

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            if task_name in self.tasks:
                raise ConfigurationError(f"task {task_name!r} is already registered")
            task: Task[Any, Any] = Task(self, func, task_name, options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(f"no task named {name!r} is registered on this app") from None

    # --- store ---------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The store, opened on first use (one per App, shared by its threads)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = open_store(self.url, self.settings)
        return self._store

    @property
    def producer_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """Threads that run store calls for asyncio producers; as many as pool connections,
        so async producers can never open more connections than sync ones."""
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        self.settings.pool_size, thread_name_prefix="calmq-producer"
                    )
        return self._executor

    def close(self) -> None:
        """Close the store and producer threads. Idempotent."""
        with self._lock:
            store, self._store = self._store, None
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        if store is not None:
            store.close()

    # --- enqueue -------------------------------------------------------------------
    def enqueue(self, task_name: str, *args: Any, **kwargs: Any) -> Job:
        """Enqueue a registered task by name (untyped; prefer ``task.enqueue``)."""
        return self.enqueue_calls(self.get_task(task_name), [Call(args, kwargs)], NO_OPTIONS)[0]

    def enqueue_calls(
        self, task: Task[Any, Any], calls: Sequence[Call], options: CallOptions
    ) -> list[Job]:
        """Validate and encode every call, then store them in batches. Nothing is stored
        when any call is invalid."""
        if not calls:
            return []
        plan = task.plan(options)  # options resolved and validated once per call
        if len(calls) == 1:  # one by one: the shortest path, on the store's lean enqueue
            new_jobs = [self._new_job(task, calls[0], options, plan)]
            if self.eager:
                return [self._run_eagerly(task, new_jobs[0])]
            started = time.perf_counter()
            results = self.store.enqueue(new_jobs)
            jobs = [Job.from_result(self, plan.queue, task.name, results[0])]
            self._enqueued(plan.queue, jobs, started)
        else:
            checked = [self._check_call(task, call, options, plan) for call in calls]
            if options.job_id is not None:
                raise ConfigurationError("job_id applies to one job; use Call(job_id=...) per job")
            if self.eager:
                return [self._run_eagerly(task, self._build(task, plan, c)) for c in checked]
            new_jobs, jobs = [], []
            for start in range(0, len(checked), ENQUEUE_BATCH):
                # Built lazily, chunk by chunk: the store runs chunk k while chunk k+1 is
                # built (everything that can fail was checked above, before any store call).
                end = min(start + ENQUEUE_BATCH, len(checked))
                chunks = (
                    self._build_chunk(task, plan, checked[at : min(at + ENQUEUE_CHUNK, end)])
                    for at in range(start, end, ENQUEUE_CHUNK)
                )
                jobs += self._store_chunks(task, plan.queue, chunks, new_jobs)
        _raise_refusals(new_jobs, jobs)
        return jobs

    def _store_chunks(
        self,
        task: Task[Any, Any],
        queue: str,
        chunks: Iterable[list[NewJob]],
        new_jobs: list[NewJob],
    ) -> list[Job]:
        """One store call (one round trip) for ``chunks``: the jobs stored, in order (their
        ``NewJob`` appended to ``new_jobs``), with events even when a later chunk failed."""
        done: list[Job] = []

        def stored(chunk: Sequence[NewJob], results: list[EnqueueResult]) -> None:
            # Runs while the store still works on the next chunks: keep it cheap, no hooks.
            done.extend([Job.from_result(self, queue, task.name, r) for r in results])
            new_jobs.extend(chunk)

        started = time.perf_counter()
        try:
            self.store.enqueue_chunks(chunks, stored)
        except BaseException:
            self._enqueued(queue, done, started, failed=True)
            raise
        self._enqueued(queue, done, started)
        return done

    def _enqueued(
        self, queue: str, jobs: list[Job], started: float, *, failed: bool = False
    ) -> None:
        """After a store call: its latency to the watch (unless it failed), and the events
        of the jobs it stored, with the call's duration."""
        call_ms = (time.perf_counter() - started) * 1000
        if not failed:
            self._enqueue_watch.record(queue, call_ms)
        if jobs and (
            self.events.wants(EventKind.ENQUEUED) or self.events.wants(EventKind.THROTTLED)
        ):
            self._emit_enqueued(jobs, call_ms)

    def _emit_enqueued(self, jobs: list[Job], call_ms: float) -> None:
        """ENQUEUED (with the store call's duration), DUPLICATE or THROTTLED per job."""
        for job in jobs:
            if job.created:
                kind = EventKind.ENQUEUED
            elif job.outcome in (EnqueueOutcome.THROTTLED, EnqueueOutcome.REJECTED):
                kind = EventKind.THROTTLED
            else:
                kind = EventKind.DUPLICATE
            self.events.emit(Event(kind, job.queue, job.task, job.id, run_ms=call_ms,
                                   detail=job.outcome.value))  # fmt: skip

    def _run_eagerly(self, task: Task[Any, Any], new_job: NewJob) -> Job:
        # Decode what would have been stored, so eager runs see exactly what a worker would.
        envelope = self.serializer.decode(new_job.payload)
        result = task.fn(*envelope.a, **envelope.k)
        if inspect.isawaitable(result):
            asyncio.run(_await(result))
        return Job(new_job.id, new_job.queue, task.name, True, JobState.SUCCEEDED, self.self_ref)

    def _new_job(
        self, task: Task[Any, Any], call: Call, options: CallOptions, plan: EnqueuePlan
    ) -> NewJob:
        return self._build(task, plan, self._check_call(task, call, options, plan))

    def _check_call(
        self, task: Task[Any, Any], call: Call, options: CallOptions, plan: EnqueuePlan
    ) -> _Checked:
        """Everything about one call that can fail: priority, payload and its size, run
        time, job id, controls. What is left (:meth:`_build`) cannot fail."""
        priority = plan.priority
        if call.priority is not None:
            check_priority(call.priority)
            priority = call.priority
        envelope = Envelope(a=list(call.args), k=dict(call.kwargs), t=plan.timeout, b=plan.backoff)
        payload = self.serializer.encode(envelope)
        if len(payload) > self.settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"job for {task.name!r} encodes to {len(payload)} bytes, over the limit of"
                f" {self.settings.max_payload_bytes} (Settings.max_payload_bytes); store large"
                " data elsewhere and pass a reference"
            )
        delay_ms, run_at_ms = plan.delay_ms, plan.run_at_ms
        if call.delay:  # a per-job delay (0 or None: the call's)
            delay_ms, run_at_ms = run_time(call.delay, options.at)
        job_id = call.job_id or options.job_id or None
        if job_id is not None and (
            not 0 < len(job_id) <= 200 or "{" in job_id or "}" in job_id or job_id.isspace()
        ):
            raise ConfigurationError(f"bad job id {job_id!r}: 1-200 characters, no braces")
        if plan.controls is None:  # the plain, fast path: no binding, no keys
            return job_id, payload, priority, delay_ms, run_at_ms, None
        fields = plan.controls.fields(
            call.args, call.kwargs, lambda: task.bind(call.args, call.kwargs)
        )
        return job_id, payload, priority, delay_ms, run_at_ms, fields

    @staticmethod
    def _build(
        task: Task[Any, Any], plan: EnqueuePlan, checked: _Checked, fresh_id: str | None = None
    ) -> NewJob:
        """The job of a checked call; ``fresh_id`` (else a new id: well-formed by
        construction) if it has none."""
        job_id, payload, priority, delay_ms, run_at_ms, fields = checked
        if job_id is None:
            job_id = fresh_id or new_job_id()
        return NewJob(job_id, plan.queue, task.name, payload, priority, plan.max_attempts,
                      delay_ms, run_at_ms, **(fields or {}))  # fmt: skip

    def _build_chunk(
        self, task: Task[Any, Any], plan: EnqueuePlan, checked: Sequence[_Checked]
    ) -> list[NewJob]:
        """The jobs of checked calls, their new ids made together (one clock reading, one
        read of random bytes)."""
        ids = new_job_ids(len(checked))
        return [self._build(task, plan, c, i) for c, i in zip(checked, ids, strict=True)]

    # --- queue controls ------------------------------------------------------------
    def pause(self, queue: str) -> None:
        """Stop workers claiming from ``queue``; enqueue keeps working."""
        validate_queue_name(queue)
        self.store.pause(queue)

    def resume(self, queue: str) -> None:
        """Let workers claim from ``queue`` again."""
        validate_queue_name(queue)
        self.store.resume(queue)

    def cancel(self, job_id: str, *, queue: str = "default") -> CancelOutcome:
        """Cancel a job: a queued one is removed; a running one loses its lease (its worker
        is told through the lease keeper and the job ends as cancelled)."""
        validate_queue_name(queue)
        return self.store.cancel(queue, job_id)

    def set_queue_limit(self, queue: str, limit: QueueLimit | None) -> None:
        """Bound the ready jobs of ``queue`` (``None`` removes the bound)."""
        validate_queue_name(queue)
        if limit is not None and not isinstance(limit, QueueLimit):
            raise ConfigurationError(f"limit must be a QueueLimit or None, got {limit!r}")
        if limit is None:
            self.store.set_queue_limit(queue, None)
        else:
            self.store.set_queue_limit(queue, limit.max_ready, QueueOverflow(limit.overflow))

    def queue_config(self, queue: str) -> QueueConfig:
        """Whether ``queue`` is paused, and its bound."""
        validate_queue_name(queue)
        return self.store.queue_config(queue)


def _raise_refusals(new_jobs: Sequence[NewJob], jobs: Sequence[Job]) -> None:
    """Raise for a job a full queue rejected, or a duplicate under policy ``raise`` (the
    other jobs of the call were stored)."""
    for new_job, job in zip(new_jobs, jobs, strict=True):
        if job.outcome is EnqueueOutcome.REJECTED:
            raise QueueFull(
                f"queue {job.queue!r} is full (its max_ready bound, overflow 'reject'):"
                f" job {new_job.id} was not stored",
                queue=job.queue,
            )
        if job.outcome is EnqueueOutcome.DUPLICATE and (
            new_job.unique_policy is DuplicatePolicy.RAISE
        ):
            raise DuplicateJob(
                f"job {job.id} with unique key {new_job.unique_key!r} is already queued",
                existing_id=job.id,
            )


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
