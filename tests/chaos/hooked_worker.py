"""``python -m tests.chaos.hooked_worker worker tests.chaos.jobs:app ...``: the calmq CLI with
test-only faults patched in from the outside (calmq's own code is not changed):

* ``CHAOS_CLOCK_OFFSET=<seconds>``: this process's wall clock (``time.time``,
  ``time.time_ns``) runs that far ahead (or behind, if negative): clock skew on one worker.
* ``CHAOS_FREEZE_TRIGGER=<path>``: the first claim that finds ``path`` existing deletes it
  and SIGSTOPs this process *inside* the claim: on SQLite while holding the write lock (the
  transaction is open), on Redis after the claim script ran (alone, or sent with an idle
  worker's wait) and before the jobs reach the worker. Someone else must SIGCONT it.
"""

from __future__ import annotations

import os
import signal
import time


def _skew_clock(offset: float) -> None:
    real_time, real_time_ns = time.time, time.time_ns
    offset_ns = int(offset * 1e9)
    time.time = lambda: real_time() + offset  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + offset_ns  # type: ignore[assignment]


def _freeze_if_triggered(trigger: str) -> None:
    try:
        os.unlink(trigger)
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGSTOP)


def _install_freeze(trigger: str) -> None:
    from calmq.stores.redis.store import RedisStore
    from calmq.stores.sqlite.store import SqliteStore

    original_promote = SqliteStore._promote

    def promote(self, conn, queue, now, limit):  # type: ignore[no-untyped-def]
        # Called inside claim's BEGIN IMMEDIATE transaction: the write lock is held here.
        _freeze_if_triggered(trigger)
        return original_promote(self, conn, queue, now, limit)

    SqliteStore._promote = promote  # type: ignore[method-assign]
    original_claim = RedisStore.claim

    def claim(self, queue, *, limit, lease_ms):  # type: ignore[no-untyped-def]
        result = original_claim(self, queue, limit=limit, lease_ms=lease_ms)
        _freeze_if_triggered(trigger)
        return result

    RedisStore.claim = claim  # type: ignore[method-assign]
    original_wait_then_claim = RedisStore.wait_then_claim

    def wait_then_claim(self, queues, timeout, queue, *, limit, lease_ms):  # type: ignore[no-untyped-def]
        # An idle worker's claim: sent with its wait, so it comes back here, not via claim.
        result = original_wait_then_claim(
            self, queues, timeout, queue, limit=limit, lease_ms=lease_ms
        )
        _freeze_if_triggered(trigger)
        return result

    RedisStore.wait_then_claim = wait_then_claim  # type: ignore[method-assign]


def main() -> None:
    offset = float(os.environ.pop("CHAOS_CLOCK_OFFSET", "0") or 0)
    if offset:
        _skew_clock(offset)
    trigger = os.environ.pop("CHAOS_FREEZE_TRIGGER", "")
    if trigger:
        _install_freeze(trigger)
    from calmq.cli.main import main as calmq_main

    calmq_main()


if __name__ == "__main__":
    main()
