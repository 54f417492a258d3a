"""Targets of the conformance suite's multi-process races (importable by spawned children).

Kept apart from the test modules so a child process imports only the store and job layers.
"""

from __future__ import annotations

from typing import Any

from calmq.job import NewJob, new_job_id
from calmq.settings import Settings
from calmq.stores import open_store


def enqueue_unique(settings: Settings, queue: str, key: str, barrier: Any, out: Any) -> None:
    """Open a store, wait for every racer at ``barrier``, enqueue one job with unique key
    ``key`` and put the outcome on ``out``."""
    store = open_store(settings.url, settings)
    try:
        job_id = new_job_id()
        job = NewJob(id=job_id, queue=queue, task="conformance.task", payload=job_id.encode(),
                     unique_key=key)  # fmt: skip
        barrier.wait(30)
        out.put(store.enqueue([job])[0].outcome.value)
    finally:
        store.close()
