"""What a failed job's outcome keeps, and what it lets go of."""

from __future__ import annotations

import gc
import weakref

from calmq.errors import Retry
from calmq.worker.executor import OutcomeKind, failure


class Big:
    """Stands in for whatever a job allocated before it failed."""


def test_failure_frees_the_jobs_locals_but_keeps_the_traceback_text() -> None:
    held: list[weakref.ref[Big]] = []

    def job() -> None:
        allocated = Big()
        held.append(weakref.ref(allocated))
        raise MemoryError("out of memory")

    caught: list[BaseException] = []
    try:
        job()
    except MemoryError as exc:
        caught.append(exc)  # keeps the exception and its traceback alive past failure()
        outcome = failure(exc)
    gc.collect()
    # The traceback is still alive, yet the job's local is gone: a job that ran out of
    # memory gives it back before its failure is recorded.
    assert caught[0].__traceback__ is not None
    assert held[0]() is None
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error == "MemoryError: out of memory"
    assert outcome.traceback is not None
    assert "in job" in outcome.traceback
    assert 'raise MemoryError("out of memory")' in outcome.traceback


def test_retry_keeps_its_delay() -> None:
    try:
        raise Retry(2.5, reason="rate limited upstream")
    except Retry as exc:
        outcome = failure(exc)
    assert outcome.retry_delay == 2.5
    assert outcome.error == "Retry: rate limited upstream"
