#!/usr/bin/env python3
"""CPU a worker spends starting and stopping (docs/benchmarks.md, run E): part of every
"worker CPU per job" figure of the peers harness, which counts from spawn.

    .venv/bin/python bench/startup_cost.py [--url redis://127.0.0.1:6390/0] [--runs 2]
        [--processes 1,2,3]

Runs ``calmq worker --burst`` on an empty queue of a throwaway app (this file) with the
tuned flags, ``--runs`` times per process count, and prints wall time and the CPU of the
whole process tree. Compile the bytecode first (``python -m compileall src/calmq``) to
measure what a pip-installed calmq spends.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

from calmq import App, Settings

app = App(settings=Settings(url=os.environ.get("STARTUP_COST_URL", "redis://127.0.0.1:6390/0"),
                            key_prefix="startupcost"))  # fmt: skip


@app.task(name="bench.noop")
def noop() -> None:
    """Never enqueued: the worker finds its queue empty and exits."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6390/0")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--processes", default="1,2,3")
    opts = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, STARTUP_COST_URL=opts.url,
               PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))  # fmt: skip
    for processes in opts.processes.split(","):
        for _ in range(opts.runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "calmq", "worker", "startup_cost:app", "--queues",
                 "empty", "--pool", "solo", "--concurrency", "64", "--processes", processes,
                 "--burst", "--log-level", "warning"],
                env=env, check=True,
            )  # fmt: skip
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            print(f"--processes {processes}: wall {time.perf_counter() - wall:.2f} s,"
                  f" CPU {cpu:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
