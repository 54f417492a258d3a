"""In-process wake-ups of the SQLite store's ``wait_for_work``: one counter per queue.

A write that makes work claimable bumps the counters of its queues and wakes the waiters;
a waiter compares the counters of the queues it listens to with the ones it saw, so a wake
for another queue does not end its wait. Other processes' commits are noticed separately,
by polling ``PRAGMA data_version``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence


class Wakeups:
    """The condition and per-queue counters one store's waiters share."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._signals: dict[str, int] = {}

    def notify(self, queues: Iterable[str]) -> None:
        """Bump the counters of ``queues`` and wake every waiter (nothing for no queues)."""
        names = set(queues)
        if not names:
            return
        with self._cond:
            for name in names:
                self._signals[name] = self._signals.get(name, 0) + 1
            self._cond.notify_all()

    def wake_all(self) -> None:
        """Wake every waiter so it rechecks (the store is closing)."""
        with self._cond:
            self._cond.notify_all()

    def seen(self, queues: Sequence[str]) -> tuple[int, ...]:
        """The counters of ``queues`` now, to compare with later."""
        with self._cond:
            return self._state(queues)

    def wait(
        self,
        queues: Sequence[str],
        seen: tuple[int, ...],
        timeout: float,
        closed: Callable[[], bool],
    ) -> bool:
        """Wait up to ``timeout`` s for a notify of one of ``queues`` since ``seen``, or for
        ``closed()``; True when one of them happened."""
        with self._cond:
            return self._cond.wait_for(
                lambda: closed() or self._state(queues) != seen, timeout=timeout
            )

    def _state(self, queues: Sequence[str]) -> tuple[int, ...]:
        return tuple(self._signals.get(name, 0) for name in queues)
