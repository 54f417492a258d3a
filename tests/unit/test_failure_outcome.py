"""What a failed job's outcome keeps, and what it lets go of."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

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


def test_failure_leaves_a_live_generator_that_raised_the_error_running() -> None:
    """The error came from code that still runs (a connection's reader, say): recording the
    job's failure must not close it."""

    def source() -> Iterator[int]:
        n = 0
        while True:
            try:
                raise ConnectionError(f"read {n} failed")
            except ConnectionError as exc:
                caught.append(exc)
            n += 1
            yield n

    caught: list[ConnectionError] = []
    reader = source()
    assert next(reader) == 1

    def job() -> None:
        raise caught[-1]

    try:
        job()
    except ConnectionError as exc:
        outcome = failure(exc)
    assert outcome.error == "ConnectionError: read 0 failed"
    assert next(reader) == 2  # still running


async def test_failure_leaves_a_reader_task_that_set_the_error_running() -> None:
    loop = asyncio.get_running_loop()
    futures: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
    served = 0

    async def reader() -> None:  # sets a fresh error on each future, like a client's reader
        nonlocal served
        while True:
            future = await futures.get()
            try:
                raise ConnectionResetError("the server went away")
            except ConnectionResetError as exc:
                future.set_exception(exc)
            served += 1

    task = asyncio.create_task(reader())

    async def job() -> None:
        future: asyncio.Future[None] = loop.create_future()
        await futures.put(future)
        await asyncio.wait_for(future, 10)  # a closed reader never answers: fail, not hang

    for _ in range(2):
        try:
            await job()
        except ConnectionResetError as exc:
            failure(exc)
    assert served == 2 and not task.done()
    task.cancel()
