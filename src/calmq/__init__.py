"""calmq: a background-job queue that never stalls the caller and never loses a job.

Quick start::

    from calmq import App

    app = App("redis://127.0.0.1:6379/0")   # or App(): CALMQ_URL, else ./calmq.sqlite3

    @app.task(queue="sms", retries=5, timeout=30)
    def send_sms(to: str, body: str) -> None: ...

    send_sms.enqueue("+31600000000", "hello")

and run ``calmq worker myproject.jobs:app --queues sms``.
"""

from calmq.app import App
from calmq.errors import (
    CalmqError,
    ConfigurationError,
    DuplicateJob,
    JobNotFound,
    JobTimeout,
    LeaseLost,
    PayloadTooLarge,
    QueueFull,
    QueueUnavailable,
    Retry,
    SerializationError,
    StoreError,
    UnknownTask,
)
from calmq.job import JobInfo, JobState
from calmq.limits import ConcurrencyLimit, QueueLimit, RateLimit, Throttle, Unique
from calmq.retry import Backoff
from calmq.settings import Settings
from calmq.task import Call, Job, Task
from calmq.version import __version__

__all__ = [
    "App",
    "Backoff",
    "Call",
    "CalmqError",
    "ConcurrencyLimit",
    "ConfigurationError",
    "DuplicateJob",
    "Job",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "LeaseLost",
    "PayloadTooLarge",
    "QueueFull",
    "QueueLimit",
    "QueueUnavailable",
    "RateLimit",
    "Retry",
    "SerializationError",
    "Settings",
    "StoreError",
    "Task",
    "Throttle",
    "Unique",
    "UnknownTask",
    "__version__",
]
