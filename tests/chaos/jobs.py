"""Job functions for the chaos suite, importable by worker subprocesses (``tests.chaos.jobs:app``).

The app reads its store from ``CALMQ_URL`` / ``CALMQ_KEY_PREFIX``. Every job that counts as
"done" appends its own id to a per-process completion log (``<log_dir>/done-<pid>.log``) and
fsyncs it *before* returning, so the line exists before the worker can acknowledge the job:
the checker trusts those logs, never the store. Jobs that also want to show each *attempt*
write to ``<log_dir>/attempts-<pid>.log``.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

from calmq import App, Backoff, Settings

fast = Backoff(base=0.05, cap=0.2, jitter=0.0)
#: Generous: a job may lose its lease many times under SIGKILL chaos without being "lost".
MANY = 25


def append_line(path: str, line: str) -> None:
    """Append one line with a single write(2) (atomic for short lines) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_done(log_dir: str, jid: str) -> None:
    append_line(os.path.join(log_dir, f"done-{os.getpid()}.log"), jid)


def mark_attempt(log_dir: str, jid: str) -> None:
    append_line(os.path.join(log_dir, f"attempts-{os.getpid()}.log"), jid)


def make_app(settings: Settings | None = None) -> App:
    """A fresh App with every chaos task registered."""
    app = App(settings=settings)

    @app.task(name="chaos.record", retries=MANY, backoff=fast)
    def record(log_dir: str, jid: str, pad: str = "", sleep: float = 0.0) -> None:
        if sleep:
            time.sleep(sleep)
        mark_done(log_dir, jid)

    @app.task(name="chaos.work", retries=MANY, backoff=fast)
    def work(log_dir: str, jid: str, seconds: float) -> None:
        """Takes ``seconds`` (a stand-in for real work), then records completion."""
        mark_attempt(log_dir, jid)
        time.sleep(seconds)
        mark_done(log_dir, jid)

    @app.task(name="chaos.segfault", retries=1, backoff=fast)
    def segfault(log_dir: str, jid: str) -> None:
        mark_attempt(log_dir, jid)
        ctypes.string_at(0)  # SIGSEGV: kills the whole worker process

    @app.task(name="chaos.exit", retries=2, backoff=fast)
    def hard_exit(log_dir: str, jid: str) -> None:
        mark_attempt(log_dir, jid)
        os._exit(13)

    @app.task(name="chaos.hog", retries=1, backoff=fast)
    def hog(log_dir: str, jid: str) -> None:
        """Allocates until the address-space limit stops it (run under RLIMIT_AS)."""
        mark_attempt(log_dir, jid)
        chunks = []
        for _ in range(4096):  # at most 64 GiB: never unbounded
            chunks.append(bytearray(16 << 20))
        mark_done(log_dir, jid)  # only reached without a memory limit

    return app


def read_ids(log_dir: str | Path, kind: str = "done") -> list[str]:
    """Every id in every ``<kind>-*.log`` of ``log_dir`` (one entry per line)."""
    ids: list[str] = []
    for path in sorted(Path(log_dir).glob(f"{kind}-*.log")):
        ids.extend(line for line in path.read_text().splitlines() if line)
    return ids


def read_by_pid(log_dir: str | Path, kind: str = "done") -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for path in Path(log_dir).glob(f"{kind}-*.log"):
        pid = int(path.stem.split("-", 1)[1])
        out[pid] = [line for line in path.read_text().splitlines() if line]
    return out


#: The app worker subprocesses load; configured by CALMQ_* variables.
app = make_app()
