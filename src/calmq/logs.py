"""Structured logs through the standard ``logging`` module, fed by lifecycle events.

One line per job outcome on the ``calmq.jobs`` logger, with the job id, task, queue,
attempt, wait time and run time as ``extra`` fields (so any formatter can use them), and a
:class:`JsonFormatter` that prints one JSON object per line. Job arguments are never
logged: events do not carry them.

The worker writes these lines through :class:`JobLog`, which builds each ``LogRecord`` for a
fraction of what ``logger.info(..., extra=...)`` costs and hands it to ``logger.handle``: every
filter and handler configured on ``calmq.jobs`` or above still gets one ordinary record per
outcome. ``calmq worker`` logs to a :class:`BufferedStreamHandler` (one write per batch of
lines, not per line) unless stderr is a terminal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

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

#: Record attributes that are the same on every line :class:`JobLog` writes at one level.
_SAME_ON_EVERY_LINE = frozenset({"name", "levelname", "levelno", "process", "processName"})

#: How long a :class:`BufferedStreamHandler` keeps lines before writing them (seconds).
FLUSH_INTERVAL = 0.5


def enabled_kinds(logger: logging.Logger = job_log) -> set[EventKind]:
    """The outcomes the ``calmq.jobs`` logger would print at its current level."""
    return {kind for kind, level in OUTCOME_LEVELS.items() if logger.isEnabledFor(level)}


def log_event(event: Event, logger: logging.Logger = job_log) -> None:
    """Event hook: one log line per job outcome (the plain form of :class:`JobLog`)."""
    level = OUTCOME_LEVELS.get(event.kind)
    if level is None or not logger.isEnabledFor(level):
        return
    logger.log(level, "%s", _message(event), extra=_fields(event))


def _fields(event: Event) -> dict[str, Any]:
    return {
        "event": event.kind.value, "job_id": event.job_id, "task": event.task,
        "queue": event.queue, "attempt": event.attempt, "max_attempts": event.max_attempts,
        "wait_ms": event.wait_ms, "run_ms": event.run_ms, "error": event.error,
        "count": event.count, "detail": event.detail,
    }  # fmt: skip


_KIND_VALUES = {kind: kind.value for kind in EventKind}  # an enum's .value is a slow property


def _message(event: Event) -> str:
    wait, run = event.wait_ms, event.run_ms
    if wait is not None and run is not None and event.attempt and not (event.error or event.detail):
        # A job that ran and succeeded: most lines. One %-format: an f-string's float specs
        # cost half as much again (format() per field).
        return "%s %s %s queue=%s attempt=%d/%d wait=%.0fms run=%.1fms" % (  # noqa: UP031
            _KIND_VALUES[event.kind], event.task, event.job_id, event.queue, event.attempt,
            event.max_attempts, wait, run,
        )  # fmt: skip
    kind = _KIND_VALUES[event.kind]
    if event.kind is EventKind.RESCUED or event.kind is EventKind.ALERT:
        return f"{kind} {event.queue}: {event.detail or event.count}"
    text = f"{kind} {event.task} {event.job_id} queue={event.queue}"
    if event.attempt:
        text += f" attempt={event.attempt}/{event.max_attempts}"
    if wait is not None:
        text += f" wait={wait:.0f}ms"
    if run is not None:
        text += f" run={run:.1f}ms"
    return text + _trouble(event)


def _trouble(event: Event) -> str:
    text = f" error={event.error!r}" if event.error else ""
    return text + f": {event.detail}" if event.detail else text


class EventFormatter(Protocol):
    """A formatter that can print :class:`JobLog`'s line of an event without a record."""

    def event_line(self, event: Event, record: dict[str, Any]) -> str | _JsonLine: ...


class JobRecord(logging.LogRecord):
    """The ``LogRecord`` of one job outcome: the same attributes as any record (and the
    :data:`FIELDS`), filled from a template instead of by ``LogRecord.__init__``."""


class JobLog:
    """Event hook writing one line per job outcome, cheap enough for every job.

    A plain ``logger.log(..., extra=...)`` spends most of its time finding the caller's
    frame and in ``LogRecord.__init__``; here the fields that never change (logger, level,
    process, ...) come from a per-level template copied from a real ``LogRecord``, the time is
    the event's, and the record goes to ``logger.handle`` (its filters, then every handler up
    the hierarchy, as usual). An application that installed its own record factory
    (``logging.setLogRecordFactory``) gets its records from it, the slow way.

    One shortcut: when the only handler a record would reach is calmq's own
    :class:`BufferedStreamHandler` with a formatter that can print the line from the event
    (:class:`JsonFormatter`, or :class:`TextFormatter` in a format like ``calmq worker``'s)
    and no filter or record factory is installed anywhere on the way, nobody could see the
    record, so the line is built from the event and queued on that handler directly (the
    same text). Checked per call (per batch of events): attach a handler or a filter and the
    next outcome goes through a record again.
    """

    def __init__(self, logger: logging.Logger = job_log) -> None:
        self.logger = logger
        self._levels = dict(OUTCOME_LEVELS)
        self._templates: dict[int, dict[str, Any]] = {}
        # Where logging counts relativeCreated from (its module load time).
        self._start_time: float = getattr(logging, "_startTime", time.time())

    def kinds(self) -> set[EventKind]:
        """The outcomes the logger prints at its current level (subscribe to these only)."""
        return enabled_kinds(self.logger)

    def __call__(self, event: Event) -> None:
        self.many(event.kind, (event,))

    def many(self, kind: EventKind, events: Sequence[Event]) -> None:
        """The hook's form for many events of one kind (:meth:`Hooks.emit_many`): the
        level, the logging tree and the handler's lock are looked at once per batch."""
        level = self._levels.get(kind)
        if level is None or not events or not self.logger.isEnabledFor(level):
            return
        if logging.getLogRecordFactory() is not logging.LogRecord:
            for event in events:
                log_event(event, self.logger)
            return
        template = self._templates.get(level)
        if template is None:
            template = self._templates[level] = self._template(level)
        handler = self._sole_handler(level)
        if handler is not None:
            formatter: EventFormatter = handler.formatter  # type: ignore[assignment]
            line = formatter.event_line
            handler.emit_lines([line(event, template) for event in events], level)
            return
        for event in events:
            self.logger.handle(self._record(event, template))

    def _record(self, event: Event, template: dict[str, Any]) -> JobRecord:
        """The record of ``event``: ``template`` plus what changes per line."""
        d = template.copy()
        d.update(event.__dict__)  # job_id, task, queue, attempt, ..., detail: FIELDS, at once
        del d["kind"], d["values"], d["at"]
        d["event"] = _KIND_VALUES[event.kind]
        at = event.at
        d["created"] = at
        d["msecs"] = int((at - int(at)) * 1000) + 0.0
        d["relativeCreated"] = (at - self._start_time) * 1000
        if d["thread"] is not None:
            d["thread"] = threading.get_ident()
            d["threadName"] = threading.current_thread().name
        d["msg"] = _message(event)
        record = JobRecord.__new__(JobRecord)
        record.__dict__ = d
        return record

    def _sole_handler(self, level: int) -> BufferedStreamHandler | None:
        """The handler a record at ``level`` would reach if it is the only one, calmq's own
        buffered handler with a formatter that can build the line from the event (JSON, or
        text in a format that needs nothing else of the record), and no filter stands on the
        way (what ``Logger.handle`` and ``callHandlers`` would consult); else None."""
        if self.logger.disabled:
            return None
        logger: logging.Logger | None = self.logger
        found = None
        while logger is not None:
            if logger.filters:
                return None
            for handler in logger.handlers:
                formatter = handler.formatter
                if (
                    found is not None
                    or type(handler) is not BufferedStreamHandler
                    or handler.filters
                    or not (
                        type(formatter) is JsonFormatter
                        or (type(formatter) is TextFormatter and formatter.formats_events)
                    )
                ):
                    return None
                found = handler
            logger = logger.parent if logger.propagate else None
        if found is None or level < found.level:
            return None
        return found

    def _template(self, level: int) -> dict[str, Any]:
        """A real record's attributes for ``level`` (logging's own flags for threads and
        processes respected), minus what changes per line."""
        record = logging.LogRecord(self.logger.name, level, __file__, 0, "", (), None,
                                   "JobLog.__call__")  # fmt: skip
        template = dict(record.__dict__)
        if "taskName" in template:  # Python 3.12+: the asyncio task is not the job's
            template["taskName"] = None
        return template


class _JsonLine(msgspec.Struct, omit_defaults=True, gc=False):
    """One JSON log line. Fields left at None (or an empty string) are left out; the calmq
    fields are :data:`FIELDS`, in that order."""

    time: str
    level: str
    logger: str
    message: str
    pid: int | None = None
    event: Any = None
    job_id: Any = None
    task: Any = None
    queue: Any = None
    attempt: Any = None
    max_attempts: Any = None
    wait_ms: Any = None
    run_ms: Any = None
    error: Any = None
    count: Any = None
    detail: Any = None
    traceback: str | None = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process, and calmq's fields."""

    def __init__(self) -> None:
        super().__init__()
        self._encode = msgspec.json.Encoder().encode
        self._millis: tuple[int, str] = (-1, "")  # one tuple: swapped atomically
        self._levels: dict[str, str] = {}

    def format(self, record: logging.LogRecord) -> str:
        level = self._levels.get(record.levelname)
        if level is None:
            level = self._levels[record.levelname] = record.levelname.lower()
        get = record.__dict__.get
        traceback = self.formatException(record.exc_info) if record.exc_info else None
        line = _JsonLine(
            self._time(record.created), level, record.name, record.getMessage(), record.process,
            get("event") or None, get("job_id") or None, get("task") or None,
            get("queue") or None, get("attempt"), get("max_attempts"), get("wait_ms"),
            get("run_ms"), get("error") or None, get("count"), get("detail") or None, traceback,
        )  # fmt: skip
        return self.render(line)

    def event_line(self, event: Event, record: dict[str, Any]) -> _JsonLine:
        """The line :meth:`format` prints for :class:`JobLog`'s record of ``event``, built from
        the event (``record``: the static attributes of that record: logger, level, process);
        :meth:`render` or ``msgspec.json.Encoder.encode_lines`` make it text."""
        level = self._levels.get(record["levelname"])
        if level is None:
            level = self._levels[record["levelname"]] = record["levelname"].lower()
        millis = int(event.at * 1000)
        cached = self._millis  # _time(), inlined: a hit nearly every time
        text = cached[1] if cached[0] == millis else self._time(event.at)
        return _JsonLine(
            text, level, record["name"], _message(event), record["process"],
            _KIND_VALUES[event.kind], event.job_id or None, event.task or None,
            event.queue or None, event.attempt, event.max_attempts, event.wait_ms, event.run_ms,
            event.error or None, event.count, event.detail or None,
        )  # fmt: skip

    def render(self, line: _JsonLine) -> str:
        """One line as text (what :meth:`format` returns)."""
        return self._encode(line).decode("utf-8")

    def _time(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond; built once per millisecond (a busy worker
        writes many lines in one)."""
        millis = int(created * 1000)
        cached = self._millis
        if cached[0] != millis:
            second, ms = divmod(millis, 1000)
            text = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            cached = self._millis = (millis, f"{text}.{ms:03d}+00:00")
        return cached[1]


class TextFormatter(logging.Formatter):
    """``logging.Formatter`` whose ``asctime`` is built once per second, not once per line
    (``time.strftime`` was a third of the cost of a job's text line).

    When the format uses only what is the same on every line of a level (``name``,
    ``levelname``, ``process``, ...), the time and the message, as ``calmq worker``'s does,
    :meth:`event_line` builds :class:`JobLog`'s line straight from the event.
    """

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second: tuple[int, str] = (-1, "")  # one tuple: swapped atomically
        self._fmt_text = fmt
        used = set(re.findall(r"%\((\w+)\)", fmt))
        self._static = tuple(sorted(used - {"asctime", "message"}))
        #: Whether :meth:`event_line` can build a job's line without a record.
        self.formats_events = set(self._static) <= _SAME_ON_EVERY_LINE
        self._levels: dict[tuple[int, str, int], dict[str, Any]] = {}

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self._asctime(record.created, record.msecs)

    def _asctime(self, created: float, msecs: float) -> str:
        second = int(created)
        cached = self._second
        if cached[0] != second:
            text = time.strftime(self.default_time_format, self.converter(created))
            cached = self._second = (second, text)
        return f"{cached[1]},{int(msecs):03d}"  # logging's default_msec_format

    def event_line(self, event: Event, record: dict[str, Any]) -> str:
        """The line :meth:`format` prints for :class:`JobLog`'s record of ``event``
        (``record``: that record's static attributes); only if :attr:`formats_events`."""
        # Per level, logger and process (a forked child's lines carry its own pid).
        key = (record["levelno"], record["name"], record["process"])
        static = self._levels.get(key)
        if static is None:
            static = self._levels[key] = {n: record[n] for n in self._static}
        at = event.at
        values = static.copy()
        values["asctime"] = self._asctime(at, (at - int(at)) * 1000)
        values["message"] = _message(event)
        return self._fmt_text % values


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that writes lines in batches: every ``interval`` seconds (from a
    thread), when ``max_lines`` are waiting, at once for WARNING and above (and everything
    before them, in order), and on ``flush()``/``close()`` (``logging.shutdown`` at exit).

    For a worker's own log stream, where one write per job line costs more than the line.
    """

    def __init__(self, stream: TextIO | None = None, *, interval: float = FLUSH_INTERVAL,
                 max_lines: int = 1000) -> None:  # fmt: skip
        super().__init__(stream)
        self.interval = interval
        self.max_lines = max_lines
        # Formatted records, and JobLog's lines (encoded in batches by _render: one msgspec
        # call for many lines; msgspec structs without GC tracking, so cheap to keep).
        self._lines: list[str | _JsonLine] = []
        self._encode_lines = msgspec.json.Encoder().encode_lines
        self._stop_flushing = threading.Event()
        self._start_flusher()
        # A forked child (``calmq worker --processes N`` forks its children) has no flusher
        # thread, and a copy of lines its parent will write itself. The lock is held across
        # the fork so that no flush is half-way through the stream in the child's copy
        # (logging gives the child a fresh handler lock).
        handler = weakref.ref(self)
        os.register_at_fork(
            before=lambda: _before_fork(handler),
            after_in_parent=lambda: _after_fork_in_parent(handler),
            after_in_child=lambda: _after_fork_in_child(handler),
        )

    def _start_flusher(self) -> None:
        self._thread = threading.Thread(target=self._flush_periodically,
                                        name="calmq-log-flush", daemon=True)  # fmt: skip
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))  # under the handler's lock (handle())
            if record.levelno >= logging.WARNING or len(self._lines) >= self.max_lines:
                self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def emit_lines(self, lines: Sequence[str | _JsonLine], levelno: int) -> None:
        """Queue lines built elsewhere (:class:`JobLog`'s shortcut: text without its
        terminator, or JSON) under one take of the lock, as :meth:`emit` queues a record."""
        with self.lock:  # type: ignore[union-attr]  # (always made by Handler.__init__)
            self._lines += lines
            if levelno >= logging.WARNING or len(self._lines) >= self.max_lines:
                self.flush()

    def flush(self) -> None:
        """Write the waiting lines in one call, then flush the stream."""
        self.acquire()
        try:
            if self._lines:
                lines, self._lines = self._lines, []
                self.stream.write(self._render(lines))
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()
        finally:
            self.release()

    def _render(self, lines: list[str | _JsonLine]) -> str:
        out: list[str] = []
        structs: list[_JsonLine] = []
        for line in lines:
            if isinstance(line, str):
                if structs:
                    out.append(self._encode_lines(structs).decode("utf-8"))
                    structs = []
                out.append(line + self.terminator)
            else:
                structs.append(line)
        if structs:
            out.append(self._encode_lines(structs).decode("utf-8"))
        return "".join(out)

    def _flush_periodically(self) -> None:
        while not self._stop_flushing.wait(self.interval):
            # A stream closed under us (at interpreter exit) must not kill the thread noisily;
            # the lines are lost either way.
            with contextlib.suppress(OSError, ValueError):
                self.flush()

    def close(self) -> None:
        self._stop_flushing.set()
        with contextlib.suppress(OSError, ValueError):
            self.flush()
        super().close()


def _before_fork(ref: weakref.ref[BufferedStreamHandler]) -> None:
    handler = ref()
    if handler is not None:
        handler.acquire()


def _after_fork_in_parent(ref: weakref.ref[BufferedStreamHandler]) -> None:
    handler = ref()
    if handler is not None:
        handler.release()


def _after_fork_in_child(ref: weakref.ref[BufferedStreamHandler]) -> None:
    handler = ref()
    if handler is not None and not handler._stop_flushing.is_set():
        handler._lines = []
        handler._start_flusher()


def configure_logging(level: str = "info", *, json_lines: bool = False) -> None:
    """Log to stderr at ``level``; JSON lines with ``json_lines`` (the CLI's ``--log-json``).

    Lines are written in batches (:class:`BufferedStreamHandler`) unless stderr is a terminal.
    """
    handler: logging.StreamHandler[TextIO]
    if sys.stderr is not None and not sys.stderr.isatty():
        handler = BufferedStreamHandler()
    else:
        handler = logging.StreamHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
        )
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, BufferedStreamHandler):  # ours: its flusher thread must stop
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
