"""Run N worker processes and restart any that dies (``calmq worker --processes N``).

Each child is a fresh ``python -m calmq worker ... --processes 1``, so a child that crashes,
is OOM-killed or exits asking for a restart (abandoned threads) is replaced; the jobs it held
come back when their leases expire. Stop signals are forwarded to every child.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("calmq.supervisor")

#: A child that dies sooner than this after its start counts as a crash loop: wait longer.
MIN_HEALTHY_SECONDS = 5.0
MAX_RESTART_DELAY = 30.0


class Supervisor:
    """Keeps ``processes`` children of ``child_argv`` alive until stopped."""

    def __init__(self, child_argv: Sequence[str], processes: int, *, burst: bool) -> None:
        self.child_argv = [sys.executable, "-m", "calmq", *child_argv]
        self.processes = processes
        self.burst = burst
        self.children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stop_signals = 0
        self.restarts = 0
        #: Restart delay per slot: one crash-looping slot must not slow the others' restarts.
        self._delays: dict[int, float] = {}

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for slot in range(self.processes):
            self._spawn(slot)
        exit_code = 0
        while self.children:
            exit_code = max(exit_code, self._reap_one())
        return exit_code

    def _spawn(self, slot: int) -> None:
        # Own process group: a Ctrl-C in the terminal reaches only the supervisor, which
        # forwards it once (a second copy straight from the terminal would mean "stop now").
        proc = subprocess.Popen(self.child_argv, process_group=0)  # noqa: S603 - our own module
        self.children[slot] = (proc, time.monotonic())
        log.info("started worker process %d (pid %d)", slot, proc.pid)

    def _reap_one(self) -> int:
        while True:
            for slot, (proc, started) in list(self.children.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self.children[slot]
                return self._after_exit(slot, code, started)
            time.sleep(0.2)

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
        self.stop_signals += 1
        log.info("supervisor got signal %d; forwarding to %d workers", signum, len(self.children))
        for proc, _ in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signum)
