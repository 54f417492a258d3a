#!/usr/bin/env python3
"""Per-job cost of the needless-work controls (issue 5): plain job vs unique key vs rate
limit vs concurrency limit, on the Redis and the SQLite store, interleaved.

    .venv/bin/python bench/controls_cost.py [--jobs 10000] [--rounds 3] [--out controls.jsonl]
                                            [--first-round 1]

Variants (same no-op body, one task each; limits set so they never throttle or block):
  plain        @app.task
  unique       unique=Unique()                       (key = hash of the args: every job distinct)
  rate_limit   rate_limit=RateLimit(1_000_000, 1.0)  (per task)
  concurrency  concurrency_limit=ConcurrencyLimit(1_000)

Per round, store and variant (variants in a rotated order each round): N jobs enqueued one by
one (timed; producer CPU from RUSAGE_SELF), then one ``calmq worker controls_cost:app --burst
--pool solo --concurrency 64`` drains them (drain rate = first job gone → queue empty, polled
every 20 ms; worker CPU from RUSAGE_CHILDREN, start-up included, and net of an empty-queue
burst worker's CPU). Every run checks afterwards that every enqueue created a job and that
nothing is left ready, running, scheduled or dead. Redis: a fresh key prefix on
$BENCH_REDIS_URL (default redis://127.0.0.1:6390/0; start your own). SQLite: a fresh file.
This file is also the worker's app module (store URL from CALMQ_URL, prefix CALMQ_KEY_PREFIX).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from calmq import App, ConcurrencyLimit, RateLimit, Unique

HERE = os.path.dirname(os.path.abspath(__file__))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6390/0")
VARIANTS = ("plain", "unique", "rate_limit", "concurrency")

app = App()  # the worker subprocess gets CALMQ_URL / CALMQ_KEY_PREFIX from the environment


def _noop(i: int) -> None:
    """Does nothing: what is left is calmq's cost, with and without the control."""


def register(target: App) -> dict:
    return {
        "plain": target.task(name="ctl.plain", retries=0)(_noop),
        "unique": target.task(name="ctl.unique", retries=0, unique=Unique())(_noop),
        "rate_limit": target.task(
            name="ctl.rate_limit", retries=0, rate_limit=RateLimit(1_000_000, 1.0)
        )(_noop),
        "concurrency": target.task(
            name="ctl.concurrency", retries=0, concurrency_limit=ConcurrencyLimit(1_000)
        )(_noop),
    }


TASKS = register(app)


def cpu(who: int) -> float:
    u = resource.getrusage(who)
    return u.ru_utime + u.ru_stime


def run_worker(url: str, prefix: str, n: int, probe: App | None, log_path: str, timeout: float):
    """Burst worker; returns (cpu_s, drain_per_s or None, exit code)."""
    cmd = [sys.executable, "-m", "calmq", "worker", "controls_cost:app", "--queues", "default",
           "--burst", "--pool", "solo", "--concurrency", "64", "--log-level", "warning"]  # fmt: skip
    env = dict(os.environ, CALMQ_URL=url, CALMQ_KEY_PREFIX=prefix,
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))  # fmt: skip
    c0 = cpu(resource.RUSAGE_CHILDREN)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    started = finished = None
    deadline = time.monotonic() + timeout
    while probe is not None and n:
        c = probe.store.counts(["default"])[0]
        left = c.ready + c.running + c.scheduled
        now = time.perf_counter()
        if started is None and left < n:
            started = now
        if left == 0:
            finished = now
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    rate = n / max(finished - started, 1e-9) if started and finished else None
    return cpu(resource.RUSAGE_CHILDREN) - c0, rate, proc.returncode


def one(store: str, variant: str, n: int, rnd: int, workdir: str, timeout: float) -> dict:
    prefix = f"ctlbench-{os.getpid()}-{rnd}-{store}-{variant}"
    if store == "redis":
        url = REDIS_URL
    else:
        folder = os.path.join(workdir, prefix)
        os.makedirs(folder)
        url = f"sqlite:///{folder}/calmq.sqlite3"
    from calmq import Settings

    producer = App(settings=Settings(url=url, key_prefix=prefix))
    task = register(producer)[variant]
    _ = producer.store  # open the store outside the timed loop
    base_cpu, _, _ = run_worker(url, prefix, 0, None, os.path.join(workdir, "empty.log"), timeout)
    c0, t0 = cpu(resource.RUSAGE_SELF), time.perf_counter()
    created = sum(1 for i in range(n) if task.enqueue(i).created)
    enq_s, enq_cpu = time.perf_counter() - t0, cpu(resource.RUSAGE_SELF) - c0
    log_path = os.path.join(workdir, f"{prefix}.log")
    wcpu, rate, code = run_worker(url, prefix, n, producer, log_path, timeout)
    counts = producer.store.counts(["default"])[0]
    producer.close()
    if store == "sqlite":
        shutil.rmtree(os.path.dirname(url.removeprefix("sqlite:///")), ignore_errors=True)
    return {
        "round": rnd, "store": store, "variant": variant, "jobs": n, "created": created,
        "enqueue_per_s": round(n / enq_s, 1), "enqueue_cpu_us": round(enq_cpu / n * 1e6, 1),
        "drain_per_s": round(rate, 1) if rate else None,
        "worker_cpu_us": round(wcpu / n * 1e6, 1),
        "worker_net_cpu_us": round((wcpu - base_cpu) / n * 1e6, 1),
        "total_cpu_us": round((enq_cpu + wcpu - base_cpu) / n * 1e6, 1),
        "jobs_per_s_end_to_end": round(n / (enq_s + n / rate), 1) if rate else None,
        "left": counts.ready + counts.running + counts.scheduled, "dead": counts.dead,
        "exit": code, "load1": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stores", default="redis,sqlite")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--first-round", type=int, default=1,
                    help="number of the first round (sets the variant order): lets runs of"
                         " two code versions alternate round by round")  # fmt: skip
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="calmq-ctlbench-")
    recs = []
    for rnd in range(args.first_round, args.first_round + args.rounds):
        order = VARIANTS[rnd - 1 :] + VARIANTS[: rnd - 1]  # rotate: no variant always first
        for store in args.stores.split(","):
            for variant in order:
                rec = one(store, variant, args.jobs, rnd, workdir, args.timeout)
                recs.append(rec)
                print(json.dumps(rec), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(rec) + "\n")
    print("\n| store | variant | enqueue jobs/s | enqueue CPU µs | drain jobs/s | worker net CPU µs"
          " | total CPU µs/job | ÷ plain (CPU) | end-to-end jobs/s | ÷ plain (rate) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for store in args.stores.split(","):

        def med(variant, key, store=store):
            xs = [r[key] for r in recs if r["store"] == store and r["variant"] == variant]
            xs = [x for x in xs if x is not None]
            return statistics.median(xs) if xs else float("nan")

        for v in VARIANTS:
            print(f"| {store} | {v} | {med(v, 'enqueue_per_s'):,.0f} | {med(v, 'enqueue_cpu_us'):.0f}"
                  f" | {med(v, 'drain_per_s'):,.0f} | {med(v, 'worker_net_cpu_us'):.0f}"
                  f" | {med(v, 'total_cpu_us'):.0f}"
                  f" | {med(v, 'total_cpu_us') / med('plain', 'total_cpu_us'):.2f}"
                  f" | {med(v, 'jobs_per_s_end_to_end'):,.0f}"
                  f" | {med(v, 'jobs_per_s_end_to_end') / med('plain', 'jobs_per_s_end_to_end'):.2f} |")  # fmt: skip
    bad = [r for r in recs if r["left"] or r["dead"] or r["created"] != r["jobs"] or r["exit"]]
    print(
        f"\nmedians of {args.rounds} rounds; runs with leftovers/dead/duplicates/errors: {len(bad)}"
    )


if __name__ == "__main__":
    main()
