"""What the worker tests share: a worker running beside the test, polling with a deadline,
and who sent each acknowledgement."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from calmq.worker.worker import Worker


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """``worker`` runs beside the block and is stopped (and waited for) when it ends."""
    runner = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_stop()
        await runner


async def until(condition: Callable[[], bool], deadline: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``deadline`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def ack_senders(worker: Worker) -> list[str]:
    """The names of the threads that send each of ``worker``'s acknowledgements, as they come
    (its own store, instrumented: it still does the work)."""
    senders: list[str] = []
    complete = worker.store.complete

    def recording_complete(queue: str, leases: list[Any]) -> list[bool]:
        senders.append(threading.current_thread().name)
        return complete(queue, leases)

    worker.store.complete = recording_complete  # type: ignore[method-assign]
    return senders
