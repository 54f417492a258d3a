"""Specs of the needless-work and overload controls, and the pure functions that apply them.

Records-and-policies layer: frozen, validated dataclasses and functions without I/O. A task
carries them as defaults (``@app.task(unique=Unique(...))``) and a call may override them
(``task.options(rate_limit=...)``); :func:`compile_limits` turns them into the plain values
a :class:`~calmq.job.NewJob` carries across the store seam, where the store enforces them
atomically.

Keys (unique, throttle, rate, concurrency, fairness) are computed from the call's arguments
by a :data:`KeySpec`: a format string over the *bound* arguments (``"{tenant}"``, ``"{0}"``
for the first positional one) or a callable taking the same arguments as the task. A spec
of ``None`` means "per task" (the task name) for limits, and "a hash of the arguments" for
unique jobs. Every limit is scoped to one queue.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from calmq.errors import ConfigurationError
from calmq.job import DuplicatePolicy, QueueOverflow, UniqueScope

#: A key: a ``str.format`` template over the arguments, or a callable of the arguments.
KeySpec = str | Callable[..., Any]

MAX_KEY_CHARS = 200
#: Longest period or TTL accepted (a year): anything longer is a units mistake.
MAX_PERIOD_S = 366 * 24 * 3600.0


def _check_spec(spec: KeySpec | None, what: str) -> None:
    if spec is None or callable(spec):
        return
    if not isinstance(spec, str) or not spec:
        raise ConfigurationError(f"{what} key must be a format string or a callable, got {spec!r}")


def _check_count(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ConfigurationError(f"{what} must be an integer in 1..1000000, got {value!r}")


def _check_period(value: float, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigurationError(f"{what} must be a number of seconds, got {value!r}")
    if not 0.001 <= value <= MAX_PERIOD_S:
        raise ConfigurationError(
            f"{what} must be in 0.001..{MAX_PERIOD_S:.0f} seconds, got {value}"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Unique:
    """At most one pending job per key.

    ``scope``: ``queued`` (while ready or scheduled), ``active`` (also while running) or
    ``ttl`` (for ``ttl`` seconds after the enqueue). ``policy``: ``keep`` returns the
    existing job, ``replace`` swaps its payload and pushes its run time to now + delay
    (debounce), ``raise`` raises :class:`~calmq.errors.DuplicateJob`.
    """

    key: KeySpec | None = None
    scope: UniqueScope | str = UniqueScope.QUEUED
    ttl: float | None = None
    policy: DuplicatePolicy | str = DuplicatePolicy.KEEP

    def __post_init__(self) -> None:
        _check_spec(self.key, "unique")
        try:
            object.__setattr__(self, "scope", UniqueScope(self.scope))
            object.__setattr__(self, "policy", DuplicatePolicy(self.policy))
        except ValueError as exc:
            raise ConfigurationError(f"bad Unique option: {exc}") from None
        if self.scope is UniqueScope.TTL:
            if self.ttl is None:
                raise ConfigurationError("Unique(scope='ttl') needs ttl= (seconds)")
            _check_period(self.ttl, "Unique ttl")
        elif self.ttl is not None:
            raise ConfigurationError(f"Unique ttl applies to scope='ttl' only, not {self.scope!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class Throttle:
    """At most ``limit`` enqueues of a key per ``period`` seconds; the rest are dropped."""

    limit: int
    period: float
    key: KeySpec | None = None

    def __post_init__(self) -> None:
        _check_count(self.limit, "Throttle limit")
        _check_period(self.period, "Throttle period")
        _check_spec(self.key, "throttle")


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` job starts of a key per ``period`` seconds, across all workers."""

    limit: int
    period: float
    key: KeySpec | None = None

    def __post_init__(self) -> None:
        _check_count(self.limit, "RateLimit limit")
        _check_period(self.period, "RateLimit period")
        _check_spec(self.key, "rate limit")


@dataclasses.dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """At most ``limit`` jobs of a key running at once, across all workers."""

    limit: int
    key: KeySpec | None = None

    def __post_init__(self) -> None:
        _check_count(self.limit, "ConcurrencyLimit limit")
        _check_spec(self.key, "concurrency limit")


@dataclasses.dataclass(frozen=True, slots=True)
class QueueLimit:
    """At most ``max_ready`` ready jobs in a queue; ``overflow`` says what a full queue does."""

    max_ready: int
    overflow: QueueOverflow | str = QueueOverflow.REJECT

    def __post_init__(self) -> None:
        _check_count(self.max_ready, "max_ready")
        try:
            object.__setattr__(self, "overflow", QueueOverflow(self.overflow))
        except ValueError:
            raise ConfigurationError(
                f"overflow must be 'reject' or 'drop_oldest', got {self.overflow!r}"
            ) from None


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Every control of one task (or one call); ``None`` means "none"."""

    unique: Unique | None = None
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    concurrency_limit: ConcurrencyLimit | None = None
    fairness_key: KeySpec | None = None

    def __post_init__(self) -> None:
        checks: tuple[tuple[object, type, str], ...] = (
            (self.unique, Unique, "unique"),
            (self.throttle, Throttle, "throttle"),
            (self.rate_limit, RateLimit, "rate_limit"),
            (self.concurrency_limit, ConcurrencyLimit, "concurrency_limit"),
        )
        for value, kind, name in checks:
            if value is not None and not isinstance(value, kind):
                raise ConfigurationError(f"{name} must be a {kind.__name__}, got {value!r}")
        _check_spec(self.fairness_key, "fairness")

    def merged(self, overrides: Mapping[str, Any]) -> Limits:
        """These limits with per-call ``overrides`` applied (a ``None`` value keeps ours)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def empty(self) -> bool:
        """True when no control is set (the plain, fast path)."""
        return self == _NO_LIMITS

    @property
    def uses_names(self) -> bool:
        """True when a key is a format string, which may name arguments: only then must a
        call's arguments be bound to the parameter names (binding costs more than the key)."""
        controls = (self.unique, self.throttle, self.rate_limit, self.concurrency_limit)
        specs = [self.fairness_key, *(c.key for c in controls if c is not None)]
        return any(isinstance(spec, str) for spec in specs)


_NO_LIMITS = Limits()


@dataclasses.dataclass(frozen=True, slots=True)
class CallArguments:
    """The arguments of one call, as given and as bound to the task's parameter names."""

    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Every argument by parameter name (defaults applied), for format-string keys.
    named: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def compute_key(spec: KeySpec, call: CallArguments, *, what: str = "key") -> str:
    """The key ``spec`` gives for one call: ``spec(*args, **kwargs)`` for a callable, or
    ``spec.format(*args, **named)`` for a format string."""
    try:
        if callable(spec):
            value = spec(*call.args, **call.kwargs)
        else:
            value = spec.format(*call.args, **call.named)
    except (KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"cannot compute the {what} from the arguments: {exc!r}") from None
    return validate_key(str(value), what)


def validate_key(key: str, what: str = "key") -> str:
    """Return ``key`` if it can be stored (1-200 printable characters)."""
    if not 0 < len(key) <= MAX_KEY_CHARS or not key.isprintable():
        raise ConfigurationError(f"bad {what} {key[:50]!r}: 1-{MAX_KEY_CHARS} printable characters")
    return key


def arguments_key(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """A unique key from the task name and the arguments: a hash of their canonical JSON.

    The bytes hashed are those of ``[task, list(args), dict(kwargs)]``; a tuple encodes as
    the same JSON array, so the common types skip the copies. SHA-256 stays (BLAKE2b saves
    about 0.1 µs) so that keys of jobs queued before an upgrade still match.
    """
    if type(args) is not tuple and type(args) is not list:
        args = list(args)
    if type(kwargs) is not dict:
        kwargs = dict(kwargs)
    try:
        canonical = msgspec.json.encode((task, args, kwargs), order="sorted")
    except (TypeError, msgspec.EncodeError) as exc:
        raise ConfigurationError(
            f"cannot derive a unique key from the arguments of {task!r} ({exc}); pass"
            " Unique(key=...)"
        ) from None
    return "args:" + hashlib.sha256(canonical).hexdigest()[:32]


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledLimits:
    """``limits`` of one task resolved once per enqueue plan (not once per job): the NewJob
    fields every job shares, and the keys left to compute from each call's arguments.

    Per job only the keys that depend on the arguments are computed (the default unique
    key: one hash; a per-task key: none), and the job is built once with its fields,
    instead of a record of them merged into a plain job: what a control adds to
    building a job fell from 7-9 µs to 0.5-2.5 µs (issue 5, bench VM).
    """

    task: str
    #: Fields that do not depend on the arguments (limits, periods, scope, per-task keys).
    fixed: Mapping[str, Any]
    #: (field, spec, what) of each key computed per call from the arguments.
    keyed: tuple[tuple[str, KeySpec, str], ...]
    #: The default unique key: a hash of the arguments.
    unique_by_args: bool
    uses_names: bool

    def fields(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        named: Callable[[], Mapping[str, Any]],
    ) -> dict[str, Any]:
        """The NewJob control fields of one call; ``named`` binds the arguments to the
        task's parameter names (called only when a format-string key needs them)."""
        fields = dict(self.fixed)
        if self.unique_by_args:
            fields["unique_key"] = arguments_key(self.task, args, kwargs)
        if self.keyed:
            call = CallArguments(args, kwargs, named() if self.uses_names else {})
            for field, spec, what in self.keyed:
                fields[field] = compute_key(spec, call, what=what)
        return fields


def compile_limits(limits: Limits, task: str) -> CompiledLimits:
    """``limits`` of ``task`` resolved for :meth:`CompiledLimits.fields`."""
    fixed: dict[str, Any] = {}
    keyed: list[tuple[str, KeySpec, str]] = []

    def key(field: str, spec: KeySpec | None, what: str) -> None:
        if spec is None:
            fixed[field] = task  # "per task"
        else:
            keyed.append((field, spec, what))

    if (unique := limits.unique) is not None:
        if unique.key is not None:
            keyed.append(("unique_key", unique.key, "unique key"))
        fixed["unique_scope"] = UniqueScope(unique.scope)
        fixed["unique_ttl_ms"] = _ms(unique.ttl) if unique.ttl is not None else 0
        fixed["unique_policy"] = DuplicatePolicy(unique.policy)
    if (throttle := limits.throttle) is not None:
        key("throttle_key", throttle.key, "throttle key")
        fixed["throttle_limit"] = throttle.limit
        fixed["throttle_period_ms"] = _ms(throttle.period)
    if (rate := limits.rate_limit) is not None:
        key("rate_key", rate.key, "rate limit key")
        fixed["rate_limit"] = rate.limit
        fixed["rate_period_ms"] = _ms(rate.period)
    if (conc := limits.concurrency_limit) is not None:
        key("concurrency_key", conc.key, "concurrency key")
        fixed["concurrency_limit"] = conc.limit
    if limits.fairness_key is not None:
        keyed.append(("fairness_key", limits.fairness_key, "fairness key"))
    unique_by_args = limits.unique is not None and limits.unique.key is None
    return CompiledLimits(task, fixed, tuple(keyed), unique_by_args, limits.uses_names)


def _ms(seconds: float) -> int:
    return max(round(seconds * 1000), 1)
