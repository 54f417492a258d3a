#!/usr/bin/env python3
"""Where a worker's time goes per job: no-op jobs drained in this process, optionally under
cProfile (docs/benchmarks.md, "Where the time goes per job").

    .venv/bin/python bench/noop_profile.py [--url redis://127.0.0.1:6390/0] [--jobs 40000]
        [--concurrency 64] [--pool solo] [--profile]

Bulk-enqueues N no-op jobs under a fresh key prefix, then runs one ``Worker`` in burst mode in
this process (no start-up, no per-job log lines) and prints jobs/s and CPU µs per job; with
``--profile`` the drain runs under cProfile (about 3x slower) and the top functions by own time
are printed. Needs a redis of your own (never the one on 6379).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import time

from calmq import App, Settings
from calmq.worker.worker import Worker, WorkerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6390/0")
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pool", choices=("solo", "threads"), default="solo")
    parser.add_argument("--profile", action="store_true")
    opts = parser.parse_args()

    prefix = f"noopprof{os.getpid()}"
    app = App(settings=Settings(url=opts.url, key_prefix=prefix))

    @app.task(name="bench.noop", retries=0)
    def noop(i: int) -> None:
        """Does nothing: what is left is calmq's own cost per job."""

    logging.getLogger("calmq").setLevel(logging.WARNING)
    for start in range(0, opts.jobs, 1000):
        noop.enqueue_many([(i,) for i in range(start, min(start + 1000, opts.jobs))])
    config = WorkerConfig(concurrency=opts.concurrency, burst=True, pool=opts.pool, log_jobs=False)
    worker = Worker(app, config)
    wall, cpu = time.perf_counter(), time.process_time()
    if opts.profile:
        profile = cProfile.Profile()
        profile.runcall(worker.run_sync)
    else:
        worker.run_sync()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{opts.jobs / wall:,.0f} jobs/s, {cpu / opts.jobs * 1e6:.1f} µs CPU per job"
          f" ({opts.pool} pool, concurrency {opts.concurrency})")  # fmt: skip
    if opts.profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
