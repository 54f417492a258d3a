"""Run N worker processes and restart any that dies (``calmq worker --processes N``).

How a child starts is the caller's choice (:data:`StartChild`): :func:`fork_child` forks the
supervisor, which has already imported calmq and the app but never runs a job or opens the
store, so each child begins with everything imported (the pre-fork model of gunicorn and
Celery; starting a fresh interpreter per child cost about 0.15 s of CPU each). The threads the
supervisor may run (the log flusher, the metrics endpoint) do not survive into the child; the
log handler is locked across the fork (calmq.logs) so no write is cut in half.
:func:`spawn_child` starts a fresh ``python -m calmq worker ... --processes 1`` instead, where
fork is not safe. Either way a child that crashes, is
OOM-killed or exits asking for a restart (abandoned threads) is replaced by a new one; the jobs
it held come back when their leases expire. Stop signals are forwarded to every child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

log = logging.getLogger("calmq.supervisor")

#: A child that dies sooner than this after its start counts as a crash loop: wait longer.
MIN_HEALTHY_SECONDS = 5.0
MAX_RESTART_DELAY = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Child(Protocol):
    """A running worker process, as the supervisor sees it (``subprocess.Popen`` fits)."""

    @property
    def pid(self) -> int: ...
    def poll(self) -> int | None: ...
    def send_signal(self, sig: int) -> None: ...


StartChild = Callable[[], Child]


class ForkedChild:
    """A child made by :func:`fork_child`: ``poll`` reaps it without blocking."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost (Popen says 0)
                self.returncode = 0
                return self.returncode
            if pid and self.returncode is None:
                # Like Popen: the exit code, or minus the signal that killed it.
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


def fork_child(run: Callable[[], object]) -> ForkedChild:
    """Fork; the child runs ``run()`` and exits with its result (an int, else 0), never
    returning here. Call it with the stop signals blocked (:meth:`Supervisor._spawn` does),
    so none reaches the child while it still has the supervisor's handler, which would
    forward it to the child's siblings."""
    # Buffered output would otherwise be written once more by every child.
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        try:
            _run_forked(run)
        finally:
            os._exit(1)  # whatever happened, never go on as a second supervisor
    return ForkedChild(pid)


def _run_forked(run: Callable[[], object]) -> None:  # pragma: no cover - child process
    code = 1
    try:
        # Own process group: a Ctrl-C in the terminal reaches only the supervisor, which
        # forwards it once (a second copy straight from the terminal would mean "stop now").
        os.setpgid(0, 0)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        result = run()
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            logging.shutdown()  # buffered log lines (calmq's handler writes in batches)
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def spawn_child(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start ``python -m calmq <argv>`` in its own process group."""
    command = [sys.executable, "-m", "calmq", *argv]
    return subprocess.Popen(command, process_group=0)  # noqa: S603 - our own module


def can_fork() -> bool:
    """Fork only where it is safe for a process like the supervisor: Linux (macOS's system
    libraries are not fork-safe once initialised, Windows has no fork)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class Supervisor:
    """Keeps ``processes`` children made by ``start_child`` alive until stopped."""

    def __init__(self, start_child: StartChild, processes: int, *, burst: bool) -> None:
        self.start_child = start_child
        self.processes = processes
        self.burst = burst
        self.children: dict[int, tuple[Child, float]] = {}
        self.stop_signals = 0
        self._to_forward: list[int] = []  # stop signals the main loop has yet to pass on
        self.restarts = 0
        #: Restart delay per slot: one crash-looping slot must not slow the others' restarts.
        self._delays: dict[int, float] = {}

    def run(self) -> int:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        for slot in range(self.processes):
            if self.stop_signals:  # stopped while starting: start no more
                break
            self._spawn(slot)
        exit_code = 0
        while self.children:
            exit_code = max(exit_code, self._reap_one())
        return exit_code

    def _spawn(self, slot: int) -> None:
        # A forked child starts with the stop signals blocked, so none reaches it before it
        # drops our handler (which would count it as its own and forward it to its siblings).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            child = self.start_child()
            self.children[slot] = (child, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        log.info("started worker process %d (pid %d)", slot, child.pid)

    def _reap_one(self) -> int:
        while True:
            self._forward_stop_signals()
            for slot, (child, started) in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self.children[slot]
                return self._after_exit(slot, code, started)
            time.sleep(0.05)

    def _after_exit(self, slot: int, code: int, started: float) -> int:
        if self.stop_signals or (self.burst and code == 0):
            return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code
        ran = time.monotonic() - started
        previous = self._delays.get(slot, 0.25)
        delay = 0.5 if ran > MIN_HEALTHY_SECONDS else min(MAX_RESTART_DELAY, previous * 2)
        self._delays[slot] = delay
        log.warning("worker process %d exited with %s after %.1fs; restarting in %.1fs",
                    slot, code, ran, delay)  # fmt: skip
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self.stop_signals:
            time.sleep(0.05)
        if not self.stop_signals:
            self.restarts += 1
            self._spawn(slot)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only noted: the main loop passes it on. Blocking the signal around a spawn does not
        # keep this handler out of it: another thread of ours (the log flusher) may take the
        # signal, and Python then runs this handler in the main thread mid-spawn, before the
        # fork, where a forwarding handler would miss the child about to be made.
        self.stop_signals += 1
        self._to_forward.append(signum)

    def _forward_stop_signals(self) -> None:
        """Pass each stop signal received since the last call on to every child, once.
        Only the main loop calls this: the list of children cannot change meanwhile."""
        while self._to_forward:
            signum = self._to_forward.pop(0)
            log.info("supervisor got signal %d; forwarding to %d workers",
                     signum, len(self.children))  # fmt: skip
            for child, _ in list(self.children.values()):
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)
