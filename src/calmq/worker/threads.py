"""The thread lane: where sync jobs run, with results handed back to the loop in batches.

``loop.run_in_executor`` costs two futures, several callbacks and one self-pipe write per
job, which for short jobs costs more than the job. Here each thread takes jobs from one
inbox, and finished jobs go to one outbox that the event loop drains in a single callback:
the loop is woken once per batch, not once per job.

A thread whose job outlived its timeout is *abandoned*: Python cannot kill it, so it is left
to finish on its own and a fresh thread takes its place so capacity holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger("calmq.worker")

#: A unit of work for a lane thread: called in the thread, returns what ``deliver`` gets.
Work = Callable[[], Any]
P = ParamSpec("P")
T = TypeVar("T")


class ThreadLane:
    """``size`` threads running :data:`Work` items; results go to ``deliver`` on the loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, size: int,
        deliver: Callable[[list[tuple[object, Any]]], None],
        after: Callable[[object, Any], Any] | None = None,
    ) -> None:  # fmt: skip
        """``after(key, result)``, when given, runs on the lane thread once ``work`` returned
        and gives what ``deliver`` receives instead (it must not raise; if it does, the
        result goes on unchanged)."""
        self._loop = loop
        self._deliver = deliver
        self._after = after
        self._inbox: queue.SimpleQueue[tuple[object, Work] | None] = queue.SimpleQueue()
        self._outbox: list[tuple[object, Any]] = []
        self._outbox_lock = threading.Lock()
        self._scheduled = False
        self._threads: list[threading.Thread] = []
        self._closed = False
        for _ in range(size):
            self._spawn()

    def submit(self, key: object, work: Work) -> None:
        """Run ``work`` on a lane thread; ``deliver`` later receives ``(key, result)``."""
        self._inbox.put((key, work))

    def replace_abandoned_thread(self) -> None:
        """A thread is stuck in a timed-out job: add one so the lane keeps its capacity."""
        self._spawn()

    def close(self) -> None:
        """Ask idle threads to exit; busy ones exit after their job (daemon threads)."""
        self._closed = True
        for _ in self._threads:
            self._inbox.put(None)

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._run, name=f"calmq-job-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def run_here(self, key: object, work: Work) -> None:
        """Run ``work`` on the calling thread as a lane thread would (``after``, then
        ``deliver`` on the loop): for a thread that has nothing better to do until it ends."""
        self._run_one(key, work)

    def _run(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None or not self._run_one(*item):
                return

    def _run_one(self, key: object, work: Work) -> bool:
        """False once the loop is closed (the worker is gone)."""
        result = work()
        if self._after is not None:
            try:
                result = self._after(key, result)
            except Exception:  # a bug there must not lose the job's outcome
                log.exception("lane: after-job step failed; the result goes on as it was")
        with self._outbox_lock:
            self._outbox.append((key, result))
            wake = not self._scheduled
            self._scheduled = True
        if wake and not self._closed:
            try:
                self._loop.call_soon_threadsafe(self._flush)
            except RuntimeError:
                return False
        return True

    def _flush(self) -> None:
        with self._outbox_lock:
            batch, self._outbox = self._outbox, []
            self._scheduled = False
        self._deliver(batch)


class DaemonThreads(concurrent.futures.Executor):
    """``size`` daemon threads behind the executor interface, for the worker's waiting
    threads: unlike ``ThreadPoolExecutor``'s, they never hold up the interpreter's exit, and
    a waiting thread may run a job (``RunningJobs.prestart``), which may hang."""

    def __init__(self, size: int, name: str) -> None:
        self._work: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None
        ] = queue.SimpleQueue()
        self._closed = False
        self._size = size
        self._name = name
        self._threads: list[threading.Thread] = []  # started on the first submit

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("cannot schedule new work after shutdown")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._work.put((future, lambda: fn(*args, **kwargs)))
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._run, name=f"{self._name}_{i}", daemon=True)
                for i in range(self._size)
            ]
            for thread in self._threads:
                thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Idle threads exit at once, busy ones after what they run."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # the future carries it to the caller
                future.set_exception(exc)
            else:
                future.set_result(result)
