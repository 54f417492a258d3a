"""Lifecycle events: the one feed that logs, metrics, the dashboard and user hooks consume.

Producers emit ``enqueued`` (and ``throttled`` or ``duplicate``); workers emit the rest. A hook
is any callable taking an :class:`Event`; a hook that raises is logged and never breaks the
job or the caller. Events carry no job arguments, so subscribing a logger cannot leak them.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

log = logging.getLogger("calmq.events")


class EventKind(enum.StrEnum):
    """What happened."""

    ENQUEUED = "enqueued"
    DUPLICATE = "duplicate"  # idempotent or unique enqueue returned an existing job
    THROTTLED = "throttled"  # dropped by a throttle or a full queue
    CLAIMED = "claimed"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an attempt failed (then RETRIED or DEAD follows)
    RETRIED = "retried"
    DEAD = "dead"
    CANCELLED = "cancelled"
    RESCUED = "rescued"  # an expired lease was taken back (by maintenance)
    LEASE_LOST = "lease_lost"  # this worker lost a lease it held
    STALE = "stale"  # a finished job's acknowledgement was refused (fencing)
    RELEASED = "released"  # given back at shutdown
    ALERT = "alert"  # a configured threshold was crossed
    QUEUE_SAMPLE = "queue_sample"  # depths and oldest-ready age of a queue, in ``values``


_now = time.time


@dataclasses.dataclass(frozen=True, init=False)
class Event:
    """One lifecycle event. Times in milliseconds; ``at`` is this machine's clock."""

    kind: EventKind
    queue: str
    task: str = ""
    job_id: str = ""
    attempt: int = 0
    max_attempts: int = 0
    wait_ms: float | None = None  # ready -> claimed, on the store's clock
    run_ms: float | None = None
    error: str | None = None
    count: int = 1  # RESCUED and ALERT events may stand for several jobs
    detail: str = ""
    values: dict[str, float] | None = None
    at: float = dataclasses.field(default_factory=time.time)

    def __init__(
        self, kind: EventKind, queue: str, task: str = "", job_id: str = "", attempt: int = 0,
        max_attempts: int = 0, wait_ms: float | None = None, run_ms: float | None = None,
        error: str | None = None, count: int = 1, detail: str = "",
        values: dict[str, float] | None = None, at: float | None = None,
    ) -> None:  # fmt: skip
        # The worker builds one per job: filling __dict__ directly costs a third of the
        # generated frozen __init__ (one object.__setattr__ per field). Still frozen after.
        d = self.__dict__
        d["kind"] = kind
        d["queue"] = queue
        d["task"] = task
        d["job_id"] = job_id
        d["attempt"] = attempt
        d["max_attempts"] = max_attempts
        d["wait_ms"] = wait_ms
        d["run_ms"] = run_ms
        d["error"] = error
        d["count"] = count
        d["detail"] = detail
        d["values"] = values
        d["at"] = _now() if at is None else at


Hook = Callable[[Event], None]
#: A hook's form for many events of one kind at once (see :meth:`Hooks.emit_many`).
ManyHook = Callable[[EventKind, Sequence[Event]], None]
F = TypeVar("F", bound=Callable[..., None])
#: Where :func:`listens_to` keeps a hook's kinds (bound methods see their function's).
EVENT_KINDS_ATTR = "calmq_event_kinds"


def listens_to(*kinds: EventKind) -> Callable[[F], F]:
    """Mark a hook as interested in ``kinds`` only: subscribing it without ``kinds`` (as
    ``app.on_event`` does) then subscribes it to these, so nobody builds the other events
    for it. Works on functions and methods."""

    def mark(hook: F) -> F:
        setattr(hook, EVENT_KINDS_ATTR, frozenset(kinds))
        return hook

    return mark


class Hooks:
    """Subscribers of an app's events. Thread-safe; emitting with no subscriber is cheap.

    A subscriber may ask for some kinds only; :meth:`wants` then lets the hot path skip
    building events nobody listens to (a worker logging at WARNING builds no SUCCEEDED
    events at all).
    """

    def __init__(self) -> None:
        self._hooks: tuple[tuple[Hook, frozenset[EventKind] | None, ManyHook | None], ...] = ()
        self._wanted: frozenset[EventKind] = frozenset()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def wants(self, kind: EventKind) -> bool:
        """Whether any subscriber listens to ``kind``."""
        return kind in self._wanted

    def subscribe(
        self, hook: Hook, kinds: Iterable[EventKind] | None = None, *, many: ManyHook | None = None
    ) -> Hook:
        """Call ``hook`` for every event (or only ``kinds``, by default those it was marked
        with by :func:`listens_to`); returns it, so it works as a decorator.

        ``many``, if given, takes the events :meth:`emit_many` delivers in one call instead
        (the same events ``hook`` would get one by one, in the same order): a hook that
        takes a lock or walks the logging tree per event does that once per batch.
        """
        if kinds is None:
            kinds = getattr(hook, EVENT_KINDS_ATTR, None)
        entry = (hook, None if kinds is None else frozenset(kinds), many)
        with self._lock:
            self._hooks = (*self._hooks, entry)
            self._recompute()
        return hook

    def unsubscribe(self, hook: Hook) -> None:
        with self._lock:
            self._hooks = tuple(h for h in self._hooks if h[0] != hook)  # bound methods: ==
            self._recompute()

    def _recompute(self) -> None:
        wanted: set[EventKind] = set()
        for _, kinds, _ in self._hooks:
            wanted |= set(EventKind) if kinds is None else kinds
        self._wanted = frozenset(wanted)

    def emit(self, event: Event) -> None:
        for hook, kinds, _ in self._hooks:  # a tuple: safe against subscribe() elsewhere
            if kinds is not None and event.kind not in kinds:
                continue
            try:
                hook(event)
            except Exception:
                log.exception("event hook %r failed on %s", hook, event.kind)

    def emit_many(self, kind: EventKind, events: Sequence[Event]) -> None:
        """Emit ``events``, all of ``kind`` (a worker's batch of acknowledged jobs): each
        hook gets them in order, in one call where it has a ``many`` form (if that raises,
        it is logged once for the batch)."""
        for hook, kinds, many in self._hooks:
            if kinds is not None and kind not in kinds:
                continue
            if many is None:
                for event in events:
                    try:
                        hook(event)
                    except Exception:
                        log.exception("event hook %r failed on %s", hook, kind)
                continue
            try:
                many(kind, events)
            except Exception:
                log.exception("event hook %r failed on %d %s events", many, len(events), kind)
