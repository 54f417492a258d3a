"""Property-based test of the store contract on both stores: random payloads and random
operation sequences (enqueue / claim / complete / fail / release / extend / rescue, with the
current, a stale or a made-up token), checked against a tiny model after every step.

Invariants: a job is in exactly one state; counts match the listings; no job is lost;
payloads round-trip byte for byte; claims take the highest priority first; an operation with
a token that is not the current one changes nothing at all.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calmq import JobState, Settings
from calmq.job import FailOutcome, JobInfo, Lease, NewJob
from calmq.stores import open_store
from calmq.stores.base import Store
from tests.redis_server import RedisServer, unique_prefix

Q = "props"
IDS = [f"j{i}" for i in range(6)] + ["ü-ñ:odd id", "x" * 200]
FAR = 10**9  # ms: "scheduled" jobs never fall due during an example
MAX_ATTEMPTS = 2
INDEXED = (JobState.READY, JobState.SCHEDULED, JobState.RUNNING, JobState.DEAD)

token_mode = st.sampled_from(["current", "stale", "made-up"])
operation = st.one_of(
    st.tuples(st.just("enqueue"), st.sampled_from(IDS), st.binary(max_size=300),
              st.integers(-3, 3), st.booleans()),
    st.tuples(st.just("claim"), st.integers(1, 3), st.booleans()),
    st.tuples(st.just("complete"), st.integers(0, 50), token_mode),
    st.tuples(st.just("fail"), st.integers(0, 50), token_mode, st.booleans()),
    st.tuples(st.just("release"), st.integers(0, 50), token_mode),
    st.tuples(st.just("extend"), st.integers(0, 50), token_mode),
    st.tuples(st.just("rescue")),
)  # fmt: skip


@dataclasses.dataclass
class Model:
    state: JobState
    payload: bytes
    priority: int
    attempt: int = 0
    token: str | None = None
    short: bool = False
    old_tokens: list[str] = dataclasses.field(default_factory=list)


@pytest.fixture(params=["redis", "sqlite"])
def make_store(request: pytest.FixtureRequest) -> Iterator[Any]:
    opened: list[Store] = []
    dirs: list[tempfile.TemporaryDirectory[str]] = []

    def make() -> Store:
        if request.param == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            s = Settings(url=server.url, key_prefix=unique_prefix("props"))
        else:
            d = tempfile.TemporaryDirectory(prefix="calmq-props-")
            dirs.append(d)
            s = Settings(url=f"sqlite:///{d.name}/p.sqlite3")
        store = open_store(s.url, s)
        opened.append(store)
        return store

    request.getfixturevalue("redis_server") if request.param == "redis" else None
    yield make
    for store in opened:
        store.close()
    for d in dirs:
        d.cleanup()


def _token(job: Model, mode: str) -> tuple[str, bool]:
    """(token to send, whether it is the current one)."""
    if mode == "current" and job.token is not None:
        return job.token, True
    if mode == "stale" and job.old_tokens:
        return job.old_tokens[-1], False
    return "made-up-token", False


def _view(info: JobInfo | None) -> tuple[Any, ...] | None:
    return None if info is None else (info.state, info.attempt, info.payload, info.priority)


def _check(store: Store, model: dict[str, Model]) -> None:
    listed: dict[JobState, set[str]] = {}
    for state in INDEXED:
        listed[state] = {j.id for j in store.list_jobs(Q, state, limit=1000)}
    seen: set[str] = set()
    for ids in listed.values():
        assert not (ids & seen), f"a job listed in two states: {ids & seen}"
        seen |= ids
    for jid, job in model.items():
        info = store.get_job(Q, jid)
        assert info is not None, f"job {jid!r} lost"
        assert info.state == job.state, (jid, info.state, job.state)
        if job.state in INDEXED:
            assert jid in listed[job.state], (jid, job.state)
        if job.state != JobState.SUCCEEDED:
            assert info.payload == job.payload
    c = store.counts([Q])[0]
    assert (c.ready, c.scheduled, c.running, c.dead) == tuple(len(listed[s]) for s in INDEXED)
    for state in INDEXED:
        assert listed[state] == {j for j, m in model.items() if m.state == state}


def _step(store: Store, model: dict[str, Model], op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "enqueue":
        _, jid, payload, priority, delayed = op
        new = NewJob(id=jid, queue=Q, task="t", payload=payload, priority=priority,
                     max_attempts=MAX_ATTEMPTS, delay_ms=FAR if delayed else 0)  # fmt: skip
        [result] = store.enqueue([new])
        if jid in model:
            assert not result.created and result.state == model[jid].state
        else:
            assert result.created
            state = JobState.SCHEDULED if delayed else JobState.READY
            model[jid] = Model(state, payload, priority)
        return
    if kind == "claim":
        _, limit, short = op
        ready = {j: m for j, m in model.items() if m.state == JobState.READY}
        got = store.claim(Q, limit=limit, lease_ms=1 if short else 60_000).jobs
        assert len(got) == min(limit, len(ready))
        rest = dict(ready)
        for job in got:
            m = rest.pop(job.id)
            assert job.payload == m.payload and job.attempt == m.attempt + 1
            m.state, m.attempt, m.token, m.short = JobState.RUNNING, job.attempt, job.token, short
        if got and rest:
            assert min(j.priority for j in got) >= max(m.priority for m in rest.values())
        return
    if kind == "rescue":
        time.sleep(0.005)  # every 1 ms lease is over
        result = store.rescue_expired(Q)
        expired = {j for j, m in model.items() if m.state == JobState.RUNNING and m.short}
        assert set(result.requeued) | set(result.dead) == expired
        for jid in expired:
            m = model[jid]
            m.old_tokens.append(m.token or "")
            m.token = None
            m.state = JobState.DEAD if m.attempt >= MAX_ATTEMPTS else JobState.READY
            assert (jid in result.dead) == (m.state == JobState.DEAD)
        return
    ids = sorted(model)
    if not ids:
        return
    jid = ids[op[1] % len(ids)]
    m = model[jid]
    token, current = _token(m, op[2])
    current = current and m.state == JobState.RUNNING
    before = _view(store.get_job(Q, jid))
    lease = Lease(jid, token)
    if kind == "complete":
        assert store.complete(Q, [lease]) == [current]
        if current:
            m.state = JobState.SUCCEEDED
    elif kind == "fail":
        retry = op[3]
        outcome = store.fail(Q, lease, error="boom", retry_in_ms=FAR if retry else None)
        if current:
            assert outcome == (FailOutcome.RETRY_SCHEDULED if retry else FailOutcome.DEAD)
            m.state = JobState.SCHEDULED if retry else JobState.DEAD
        else:
            assert outcome == FailOutcome.STALE
    elif kind == "release":
        assert store.release(Q, [lease]) == int(current)
        if current:
            m.state, m.attempt = JobState.READY, max(m.attempt - 1, 0)
    elif kind == "extend":
        lost = store.extend_leases(Q, [lease], lease_ms=60_000)
        assert (jid in lost) == (not current)
        if current:
            m.short = False
    if current and kind != "extend":
        m.old_tokens.append(m.token or "")
        m.token = None
    if not current:
        assert _view(store.get_job(Q, jid)) == before, f"a {kind} with a wrong token changed {jid}"


_examples = int(os.environ.get("CHAOS_PROPERTY_EXAMPLES", "60"))


@pytest.mark.slow
@settings(
    max_examples=_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operation, max_size=40))
def test_store_contract_holds_under_random_operations(make_store: Any, ops: list[Any]) -> None:
    store = make_store()
    model: dict[str, Model] = {}
    for op in ops:
        _step(store, model, op)
        _check(store, model)
