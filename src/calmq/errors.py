"""The exceptions calmq raises, in one place so callers can catch them by meaning."""

from __future__ import annotations


class CalmqError(Exception):
    """Base class of every error calmq raises on purpose."""


class ConfigurationError(CalmqError, ValueError):
    """A URL, option or setting is invalid; the message says which and why."""


class SerializationError(CalmqError, ValueError):
    """Job arguments could not be encoded, or a stored payload could not be decoded."""


class PayloadTooLarge(SerializationError):
    """The encoded job is larger than the configured ``max_payload_bytes``."""


class QueueUnavailable(CalmqError):
    """The store did not answer within the documented bound.

    Raised by producers instead of hanging or opening more connections: the pool was
    exhausted, the connection timed out, the server refused writes (OOM, MISCONF, disk
    full), or the SQLite file stayed locked past ``busy_timeout``. The original error is
    kept as ``__cause__``; :attr:`reason` names the kind of trouble in one word.

    A timeout is an *unknown* outcome: the job may have been stored. Enqueue is idempotent
    by job id, so retrying with the same id is always safe.
    """

    def __init__(self, message: str, *, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason


class StoreError(CalmqError):
    """The store refused an operation because stored data is inconsistent or foreign."""


class UnknownTask(CalmqError, LookupError):
    """No task with that name is registered on the app."""


class JobNotFound(CalmqError, LookupError):
    """No job with that id exists in the given queue."""


class Retry(CalmqError):
    """Raise inside a job to ask for another attempt after ``delay`` seconds.

    The attempt still counts against the task's ``retries``; when none are left the job
    is dead-lettered like any other failure.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


class JobTimeout(CalmqError, TimeoutError):
    """A job ran longer than its ``timeout``."""


class LeaseLost(CalmqError):
    """The worker no longer holds the job's lease: it expired and the job was rescued."""


class DuplicateJob(CalmqError):
    """A job with the same unique key is already queued (policy ``raise``)."""

    def __init__(self, message: str, *, existing_id: str) -> None:
        super().__init__(message)
        self.existing_id = existing_id


class QueueFull(CalmqError):
    """The queue holds its maximum of ready jobs and its overflow policy is ``reject``."""

    def __init__(self, message: str, *, queue: str) -> None:
        super().__init__(message)
        self.queue = queue
