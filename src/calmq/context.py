"""The job being run, for job code that wants to know about itself.

``current_job()`` inside a job gives its id, queue, attempt and whether it was asked to stop
(``calmq cancel``, or its lease was lost). Async jobs are cancelled for real; sync jobs cannot
be interrupted, so long ones should check ``cancelled`` (or call ``raise_if_cancelled()``)
between steps.
"""

from __future__ import annotations

import contextvars
import dataclasses

from calmq.errors import CalmqError


class JobCancelled(CalmqError):
    """Raised by :meth:`JobContext.raise_if_cancelled` when the job should stop."""


@dataclasses.dataclass(slots=True)
class JobContext:
    """What a running job knows about itself."""

    id: str
    queue: str
    task: str
    attempt: int
    max_attempts: int
    #: Set by the worker (from another thread) when the job should stop.
    cancelled: bool = False

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(f"job {self.id} was cancelled or lost its lease")


# A ContextVar (per task / per thread), the same mechanism asyncio uses for the current task.
_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "calmq_current_job", default=None
)


def current_job() -> JobContext:
    """The job this code runs in; LookupError outside a job."""
    context = _current.get()
    if context is None:
        raise LookupError("current_job() is only available inside a running calmq job")
    return context


def set_current(context: JobContext | None) -> contextvars.Token[JobContext | None]:
    """Used by the worker around each job."""
    return _current.set(context)


def reset_current(token: contextvars.Token[JobContext | None]) -> None:
    _current.reset(token)
