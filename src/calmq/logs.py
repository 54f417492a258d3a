"""Structured logs through the standard ``logging`` module, fed by lifecycle events.

One line per job outcome on the ``calmq.jobs`` logger, with the job id, task, queue,
attempt, wait time and run time as ``extra`` fields (so any formatter can use them), and a
:class:`JsonFormatter` that prints one JSON object per line. Job arguments are never
logged: events do not carry them.
"""

from __future__ import annotations

import datetime as dt
import logging

import msgspec

from calmq.events import Event, EventKind

job_log = logging.getLogger("calmq.jobs")

#: Outcomes worth a line, and their level. CLAIMED/STARTED would double the volume.
OUTCOME_LEVELS = {
    EventKind.SUCCEEDED: logging.INFO,
    EventKind.RETRIED: logging.WARNING,
    EventKind.DEAD: logging.ERROR,
    EventKind.CANCELLED: logging.INFO,
    EventKind.LEASE_LOST: logging.WARNING,
    EventKind.STALE: logging.WARNING,
    EventKind.RESCUED: logging.WARNING,
    EventKind.THROTTLED: logging.INFO,
    EventKind.ALERT: logging.WARNING,
}

#: Fields of the ``extra`` dict; JsonFormatter copies exactly these.
FIELDS = ("event", "job_id", "task", "queue", "attempt", "max_attempts", "wait_ms", "run_ms",
          "error", "count", "detail")  # fmt: skip


def enabled_kinds() -> set[EventKind]:
    """The outcomes the ``calmq.jobs`` logger would print at its current level."""
    return {kind for kind, level in OUTCOME_LEVELS.items() if job_log.isEnabledFor(level)}


def log_event(event: Event) -> None:
    """Event hook: one log line per job outcome."""
    level = OUTCOME_LEVELS.get(event.kind)
    if level is None or not job_log.isEnabledFor(level):
        return
    extra = {
        "event": event.kind.value, "job_id": event.job_id, "task": event.task,
        "queue": event.queue, "attempt": event.attempt, "max_attempts": event.max_attempts,
        "wait_ms": event.wait_ms, "run_ms": event.run_ms, "error": event.error,
        "count": event.count, "detail": event.detail,
    }  # fmt: skip
    job_log.log(level, "%s", _message(event), extra=extra)


def _message(event: Event) -> str:
    if event.kind in (EventKind.RESCUED, EventKind.ALERT):
        return f"{event.kind.value} {event.queue}: {event.detail or event.count}"
    text = f"{event.kind.value} {event.task} {event.job_id} queue={event.queue}"
    if event.attempt:
        text += f" attempt={event.attempt}/{event.max_attempts}"
    if event.wait_ms is not None:
        text += f" wait={event.wait_ms:.0f}ms"
    if event.run_ms is not None:
        text += f" run={event.run_ms:.1f}ms"
    if event.error:
        text += f" error={event.error!r}"
    if event.detail:
        text += f": {event.detail}"
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process, and calmq's fields."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None and value != "":
                data[name] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return self._encoder.encode(data).decode("utf-8")


def configure_logging(level: str = "info", *, json_lines: bool = False) -> None:
    """Log to stderr at ``level``; JSON lines with ``json_lines`` (the CLI's ``--log-json``)."""
    handler = logging.StreamHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
