"""Freezing a worker process (SIGSTOP) at a moment that is safe for the test at hand."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time

from calmq.stores import sqlite_path


def freeze_between_writes(proc: subprocess.Popen[bytes], url: str) -> None:
    """SIGSTOP ``proc``, but never inside an SQLite write transaction.

    SQLite has one writer: a process frozen inside its (sub-millisecond) transaction holds the
    file's write lock for the whole freeze, so no other worker could rescue anything
    (docs/operations.md; chaos scenario 10 measures that on purpose). Tests about fencing must
    not stumble into it by chance, so: stop, check the lock is free, else resume for a moment
    and try again. Other stores: just stop.
    """
    for _ in range(200):
        proc.send_signal(signal.SIGSTOP)
        if not url.startswith("sqlite"):
            return
        probe = sqlite3.connect(sqlite_path(url), timeout=0.05, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # locked by the frozen worker
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        finally:
            probe.close()
    raise AssertionError("could not freeze the worker outside a write transaction")
