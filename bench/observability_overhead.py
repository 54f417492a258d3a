#!/usr/bin/env python3
"""Cost of observability in the worker: Prometheus metrics + JSON logs on vs off.

    .venv/bin/python bench/observability_overhead.py [--url redis://127.0.0.1:6390/0]
        [--job noop|incr] [--jobs 30000] [--rounds 3] [--pool solo] [--concurrency 64]
        [--out obs.jsonl]

Per round and mode (``off``, ``on``; the order alternates per round): N jobs are enqueued with
``enqueue_many`` under a fresh key prefix, then one ``calmq worker observability_overhead:app
--burst`` (this file, imported by the worker) drains them. ``--job noop`` (default): a job that
does nothing (as ``calmq bench``'s); ``--job incr``: the peer harness's standard job, one
Redis ``INCR`` through the job's own client (bench/peers/peer_calmq.py).

- ``off``: ``--log-level warning`` and no metrics (no per-job log line).
- ``on``: ``--log-level info --log-json --metrics-port P``: one JSON line per finished job to
  the worker's log file, Prometheus metrics served (scraped once mid-drain to check they work).
- with ``--modes off,on,logs,metrics``: also each of the two alone, to split the cost.

Measured: drain jobs/s (first job gone → queue empty, polled every 20 ms, as ``calmq bench``)
and worker CPU µs/job (``RUSAGE_CHILDREN`` of the burst worker, start-up included). A burst
worker on an empty queue is run per mode and round too; its CPU (imports, start-up, shutdown)
is subtracted for the "net" CPU per job. Needs a redis of your own (never the one on 6379).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import redis

from calmq import App, Settings

APP = "observability_overhead:app"
HERE = os.path.dirname(os.path.abspath(__file__))

#: The worker's app (it imports this file): store from CALMQ_URL / CALMQ_KEY_PREFIX.
app = App()
_client: list[redis.Redis] = []


@app.task(name="bench.noop", retries=0)
def noop(i: int) -> None:
    """Does nothing: what is left is calmq's own cost per job."""


@app.task(name="bench.incr", retries=0)
def incr(i: int) -> None:
    """The peer harness's job: one Redis round trip through the job's own client."""
    if not _client:
        _client.append(redis.Redis.from_url(os.environ["CALMQ_URL"]))
    _client[0].incr("obsbench:done")


MODES = {
    "off": ["--log-level", "warning"],
    "on": ["--log-level", "info", "--log-json", "--metrics-port", "{port}"],
    "logs": ["--log-level", "info", "--log-json"],  # JSON job logs only
    "metrics": ["--log-level", "warning", "--metrics-port", "{port}"],  # metrics only
}


def cpu_children() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def waiting(app: App) -> int:
    c = app.store.counts(["default"])[0]
    return c.ready + c.running + c.scheduled


def run_one(args, mode: str, n: int, rnd: int, workdir: str) -> dict:
    prefix = f"obsbench-{os.getpid()}-{rnd}-{mode}-{n}"
    app = App(settings=Settings(url=args.url, key_prefix=prefix))
    job = {"noop": noop, "incr": incr}[args.job]
    task = app.task(name=job.name, retries=0)(job.fn)
    for first in range(0, n, 1000):
        task.enqueue_many([(i,) for i in range(first, min(n, first + 1000))])
    flags = [f.format(port=args.metrics_port) for f in MODES[mode]]
    cmd = [sys.executable, "-m", "calmq", "worker", APP, "--queues", "default", "--burst",
           "--pool", args.pool, "--concurrency", str(args.concurrency), *flags]  # fmt: skip
    path = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, CALMQ_URL=args.url, CALMQ_KEY_PREFIX=prefix, PYTHONPATH=path)
    log_path = os.path.join(workdir, f"worker-{rnd}-{mode}-{n}.log")
    cpu0 = cpu_children()
    t_spawn = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    started = finished = None
    scraped = None
    deadline = time.monotonic() + args.timeout
    while n:
        left = waiting(app)
        now = time.perf_counter()
        if started is None and left < n:
            started = now
        if (
            "--metrics-port" in MODES[mode]
            and scraped is None
            and started is not None
            and left < n // 2
        ):
            try:
                body = urllib.request.urlopen(
                    f"http://127.0.0.1:{args.metrics_port}/metrics", timeout=2
                ).read()
                scraped = len(body)
            except OSError as exc:
                scraped = f"scrape failed: {exc}"
        if left == 0:
            finished = now
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    try:
        proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    t_exit = time.perf_counter()
    cpu = cpu_children() - cpu0
    left = waiting(app) if n else 0
    dead = app.store.counts(["default"])[0].dead
    app.close()
    with open(log_path, "rb") as f:
        log_lines = sum(1 for _ in f)
    rec = {
        "round": rnd, "mode": mode, "job": args.job, "jobs": n, "pool": args.pool, "concurrency": args.concurrency,
        "cpu_s": round(cpu, 4), "wall_s": round(t_exit - t_spawn, 4), "left": left, "dead": dead,
        "exit": proc.returncode, "log_lines": log_lines, "metrics_bytes": scraped,
        "load1": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    if n and started and finished:
        rec["drain_per_s"] = round(n / max(finished - started, 1e-9), 1)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="redis://127.0.0.1:6390/0")
    ap.add_argument("--job", default="noop", choices=["noop", "incr"])
    ap.add_argument("--jobs", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pool", default="solo", choices=["solo", "threads"])
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--metrics-port", type=int, default=9391)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--modes", default="off,on", help="subset of off,on,logs,metrics")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    modes = args.modes.split(",")
    workdir = tempfile.mkdtemp(prefix="calmq-obsbench-")
    recs = []
    for rnd in range(1, args.rounds + 1):
        order = modes if rnd % 2 else modes[::-1]
        for mode in order:
            base = run_one(args, mode, 0, rnd, workdir)  # start-up + shutdown only
            rec = run_one(args, mode, args.jobs, rnd, workdir)
            rec["startup_cpu_s"] = base["cpu_s"]
            rec["cpu_us_per_job"] = round(rec["cpu_s"] / args.jobs * 1e6, 1)
            rec["net_cpu_us_per_job"] = round((rec["cpu_s"] - base["cpu_s"]) / args.jobs * 1e6, 1)
            recs.append(rec)
            print(json.dumps(rec), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(rec) + "\n")

    def med(mode, key):
        return statistics.median(r[key] for r in recs if r["mode"] == mode and key in r)

    print("\n| mode | drain jobs/s (median) | CPU µs/job | net CPU µs/job | log lines/job |")
    print("|---|---|---|---|---|")
    for mode in modes:
        lines = med(mode, "log_lines") / args.jobs
        print(f"| {mode} | {med(mode, 'drain_per_s'):,.0f} | {med(mode, 'cpu_us_per_job'):.1f} "
              f"| {med(mode, 'net_cpu_us_per_job'):.1f} | {lines:.2f} |")  # fmt: skip
    for mode in [m for m in modes if m != "off"]:
        cpu_pct = (med(mode, "net_cpu_us_per_job") / med("off", "net_cpu_us_per_job") - 1) * 100
        gross = (med(mode, "cpu_us_per_job") / med("off", "cpu_us_per_job") - 1) * 100
        rate_pct = (1 - med(mode, "drain_per_s") / med("off", "drain_per_s")) * 100
        print(f"\n{mode} vs off (medians of {args.rounds} rounds): net CPU/job {cpu_pct:+.1f} %"
              f" (with start-up {gross:+.1f} %), drain rate {-rate_pct:+.1f} %")  # fmt: skip
        # Per-round paired ratios (same round, adjacent runs: the load is the most alike).
        paired = []
        for rnd in range(1, args.rounds + 1):
            on = next(r for r in recs if r["round"] == rnd and r["mode"] == mode)
            off = next(r for r in recs if r["round"] == rnd and r["mode"] == "off")
            paired.append(on["net_cpu_us_per_job"] / off["net_cpu_us_per_job"])
            print(f"  round {rnd}: net CPU {on['net_cpu_us_per_job'] / off['net_cpu_us_per_job']:.2f}x"
                  f", rate {on.get('drain_per_s', 0) / off.get('drain_per_s', 1):.2f}x"
                  f" (load {off['load1']}/{on['load1']})")  # fmt: skip
        print(f"  median of the paired net CPU ratios: {statistics.median(paired):.3f}x")


if __name__ == "__main__":
    main()
