#!/usr/bin/env python3
"""Server time per job of a claim + acknowledgement on the Redis store (docs/benchmarks.md,
"Cheaper claims and acknowledgements on the Redis server").

    .venv/bin/python bench/claim_cost.py [--url redis://127.0.0.1:6390/0] [--jobs 40000]
        [--batch 64]

Bulk-enqueues N no-op jobs, resets the server's statistics, then claims ``--batch`` jobs and
completes them until the queue is empty (no worker: the store calls alone) and prints wall and
client CPU per job and the server's ``EVALSHA`` µs per job, plus the Redis calls per job the
scripts made (``INFO commandstats``). FLUSHALLs the database first: use a redis of your own
(never the one on 6379). To compare two versions, run each with ``PYTHONPATH`` pointing at
its ``src`` and alternate.
"""

from __future__ import annotations

import argparse
import os
import time

import redis

from calmq import App, Settings

# Calls made by the scripts themselves (the rest are the client's EVALSHA and INFO).
_CLIENT_CALLS = {"evalsha", "info", "config|resetstat", "flushall"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6390/0")
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=64)
    opts = parser.parse_args()

    raw = redis.Redis.from_url(opts.url)
    raw.flushall()
    app = App(settings=Settings(url=opts.url, key_prefix=f"claimcost{os.getpid()}"))

    @app.task(name="bench.noop", retries=0)
    def noop(i: int) -> None:
        """Never runs: the store calls alone are measured."""

    for start in range(0, opts.jobs, 1000):
        noop.enqueue_many([(i,) for i in range(start, min(start + 1000, opts.jobs))])
    store = app.store
    raw.config_resetstat()
    wall, cpu, done = time.perf_counter(), time.process_time(), 0
    while True:
        claimed = store.claim("default", limit=opts.batch, lease_ms=30_000).jobs
        if not claimed:
            break
        done += len(claimed)
        store.complete("default", [job.lease for job in claimed])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = raw.info("commandstats")
    server_us = stats["cmdstat_evalsha"]["usec"]
    inner = sum(v["calls"] for k, v in stats.items() if k[8:] not in _CLIENT_CALLS)
    print(f"{done} jobs: wall {wall / done * 1e6:.1f} µs/job, client CPU {cpu / done * 1e6:.1f}"
          f" µs/job, server {server_us / done:.2f} µs/job in EVALSHA,"
          f" {inner / done:.2f} Redis calls/job inside the scripts")  # fmt: skip
    app.close()


if __name__ == "__main__":
    main()
