"""The benchmark's jobs. Worker subprocesses load ``calmq.benchmark.jobs:app``; the store
comes from CALMQ_URL and latency samples go to files under CALMQBENCH_DIR."""

from __future__ import annotations

import os
import time
from typing import TextIO

from calmq import App

app = App()
_latency_file: list[TextIO] = []


@app.task(name="bench.noop", retries=0)
def noop(i: int) -> None:
    """Does nothing: what is left is calmq's own cost per job."""


@app.task(name="bench.latency", retries=0)
def latency(enqueued_at: float) -> None:
    """Records enqueue-to-start latency in seconds (one line per job, per process file)."""
    lag = time.time() - enqueued_at
    if not _latency_file:
        folder = os.environ["CALMQBENCH_DIR"]
        _latency_file.append(open(f"{folder}/latency-{os.getpid()}.txt", "a", encoding="ascii"))  # noqa: SIM115
    out = _latency_file[0]
    out.write(f"{lag:.6f}\n")
    out.flush()
