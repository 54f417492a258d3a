"""Unit tests of calmq.limits: validation, key computation, NewJob fields. No I/O."""

from __future__ import annotations

import hashlib

import pytest

from calmq.errors import ConfigurationError
from calmq.job import DuplicatePolicy, NewJob, QueueOverflow, UniqueScope, lane_of
from calmq.limits import (
    CallArguments,
    ConcurrencyLimit,
    Limits,
    QueueLimit,
    RateLimit,
    Throttle,
    Unique,
    arguments_key,
    compile_limits,
    compute_key,
    validate_key,
)

CALL = CallArguments(("acme", 7), {"to": "+31"}, {"tenant": "acme", "n": 7, "to": "+31"})


def job_with(limits: Limits, task: str) -> NewJob:
    """The job of ``CALL`` under ``limits``, built as the app builds it."""
    fields = compile_limits(limits, task).fields(CALL.args, CALL.kwargs, lambda: CALL.named)
    return NewJob("i", "q", task, b"", **fields)


def test_specs_are_frozen_and_coerce_enums() -> None:
    unique = Unique(scope="active", policy="replace")
    assert unique.scope is UniqueScope.ACTIVE
    assert unique.policy is DuplicatePolicy.REPLACE
    with pytest.raises(AttributeError):
        unique.ttl = 3  # type: ignore[misc]
    assert QueueLimit(10, "drop_oldest").overflow is QueueOverflow.DROP_OLDEST


@pytest.mark.parametrize(
    "make",
    [
        lambda: Unique(scope="forever"),
        lambda: Unique(policy="ignore"),
        lambda: Unique(scope="ttl"),
        lambda: Unique(ttl=5),
        lambda: Unique(scope="ttl", ttl=0),
        lambda: Unique(key=""),
        lambda: Throttle(0, 1),
        lambda: Throttle(1, -1),
        lambda: RateLimit(True, 1),
        lambda: RateLimit(5, float("nan")),
        lambda: RateLimit(5, 1, key=3),
        lambda: ConcurrencyLimit(0),
        lambda: QueueLimit(0),
        lambda: QueueLimit(5, "block"),
        lambda: Limits(unique=RateLimit(1, 1)),  # type: ignore[arg-type]
    ],
)
def test_bad_specs_raise_configuration_error(make: object) -> None:
    with pytest.raises(ConfigurationError):
        make()  # type: ignore[operator]


def test_compute_key_from_format_and_callable() -> None:
    assert compute_key("{tenant}:{to}", CALL) == "acme:+31"
    assert compute_key("{0}-{1}", CALL) == "acme-7"
    assert compute_key(lambda tenant, n, to: f"{tenant}/{n}", CALL) == "acme/7"


def test_compute_key_errors_are_clear() -> None:
    with pytest.raises(ConfigurationError, match="fairness key"):
        compute_key("{missing}", CALL, what="fairness key")
    with pytest.raises(ConfigurationError):
        compute_key(lambda *a, **k: "", CALL)
    with pytest.raises(ConfigurationError):
        validate_key("x" * 201)
    with pytest.raises(ConfigurationError):
        validate_key("a\nb")


def test_arguments_key_is_stable_and_order_free() -> None:
    one = arguments_key("t", [1, "a"], {"x": 1, "y": 2})
    assert one == arguments_key("t", [1, "a"], {"y": 2, "x": 1})
    assert one != arguments_key("other", [1, "a"], {"x": 1, "y": 2})
    assert one.startswith("args:")
    with pytest.raises(ConfigurationError):
        arguments_key("t", [object()], {})


def test_job_fields_of_limits() -> None:
    limits = Limits(
        unique=Unique(key="{tenant}", scope="ttl", ttl=2.5, policy="replace"),
        throttle=Throttle(3, 60),
        rate_limit=RateLimit(10, 1, key="{tenant}"),
        concurrency_limit=ConcurrencyLimit(2),
        fairness_key="{tenant}",
    )
    got = job_with(limits, "sms.send")
    assert (got.unique_key, got.unique_scope, got.unique_ttl_ms) == ("acme", UniqueScope.TTL, 2500)
    assert got.unique_policy is DuplicatePolicy.REPLACE
    assert (got.throttle_key, got.throttle_limit, got.throttle_period_ms) == ("sms.send", 3, 60_000)
    assert (got.rate_key, got.rate_limit, got.rate_period_ms) == ("acme", 10, 1000)
    assert (got.concurrency_key, got.concurrency_limit) == ("sms.send", 2)
    assert got.fairness_key == "acme"


def test_no_limits_is_the_empty_record() -> None:
    assert Limits().empty
    assert job_with(Limits(), "t").unique_key is None


def test_merged_keeps_task_defaults() -> None:
    base = Limits(rate_limit=RateLimit(5, 1))
    merged = base.merged({"rate_limit": None, "fairness_key": "{tenant}"})
    assert merged.rate_limit == RateLimit(5, 1)
    assert merged.fairness_key == "{tenant}"
    assert base.merged({"unique": None}) is base


def test_lanes_never_collide() -> None:
    assert lane_of(None, None, None) is None
    assert lane_of("a|c1:b", None, None) != lane_of("a", "b", None)
    job = NewJob("i", "q", "t", b"", rate_key="r", fairness_key="f")
    assert job.lane == "r1:r|f1:f"


def test_limits_bind_arguments_by_name_only_for_format_string_keys() -> None:
    assert not Limits().uses_names
    assert not Limits(unique=Unique()).uses_names  # hash of the arguments
    assert not Limits(rate_limit=RateLimit(5, 1.0, key=lambda tenant: tenant)).uses_names
    assert Limits(concurrency_limit=ConcurrencyLimit(1, key="account:{account}")).uses_names
    assert Limits(fairness_key="{0}").uses_names


def test_arguments_key_value_is_pinned() -> None:
    # Changing the bytes hashed or the hash would let a job queued before an upgrade and
    # its duplicate enqueued after it both run.
    want = "args:" + hashlib.sha256(b'["t",[1,"a"],{"x":1,"y":2}]').hexdigest()[:32]
    assert arguments_key("t", [1, "a"], {"y": 2, "x": 1}) == want
    assert arguments_key("t", (1, "a"), {"y": 2, "x": 1}) == want


def test_compiled_limits_give_the_job_fields() -> None:
    limits = Limits(
        unique=Unique(scope="ttl", ttl=2.5, policy="replace"),
        throttle=Throttle(3, 60, key=lambda tenant, n, to: f"{tenant}:{n}"),
        rate_limit=RateLimit(10, 1),
        concurrency_limit=ConcurrencyLimit(2, key="{tenant}"),
        fairness_key="{0}",
    )
    compiled = compile_limits(limits, "sms.send")
    assert compiled.fixed["rate_key"] == "sms.send"  # per task: computed once
    bound: list[int] = []

    def named() -> dict[str, object]:
        bound.append(1)
        return dict(CALL.named)

    fields = compiled.fields(CALL.args, CALL.kwargs, named)
    assert bound == [1]  # format-string keys bind the arguments, once
    assert fields == {
        "unique_key": arguments_key("sms.send", CALL.args, CALL.kwargs),
        "unique_scope": UniqueScope.TTL, "unique_ttl_ms": 2500,
        "unique_policy": DuplicatePolicy.REPLACE,
        "throttle_key": "acme:7", "throttle_limit": 3, "throttle_period_ms": 60_000,
        "rate_key": "sms.send", "rate_limit": 10, "rate_period_ms": 1000,
        "concurrency_key": "acme", "concurrency_limit": 2, "fairness_key": "acme",
    }  # fmt: skip
    assert fields["unique_key"] == arguments_key("sms.send", CALL.args, CALL.kwargs)
    assert (fields["throttle_key"], fields["concurrency_key"]) == ("acme:7", "acme")
    no_names = compile_limits(Limits(unique=Unique()), "t")
    assert not no_names.uses_names
    assert no_names.fields((1,), {}, lambda: pytest.fail("bound for no key")) == {
        "unique_key": arguments_key("t", [1], {}),
        "unique_scope": UniqueScope.QUEUED,
        "unique_ttl_ms": 0,
        "unique_policy": DuplicatePolicy.KEEP,
    }
