#!/usr/bin/env python3
"""calmq's SQLite store vs its Redis store: drain rate with 1 and 2 worker processes, and
enqueue under 8 producer processes writing to one SQLite file at once.

    /tmp/peers/venv-calmq/bin/python bench/sqlite_drain.py [--n 20000] [--out sqlite.jsonl]

Needs a private redis on 127.0.0.1:$PEERS_REDIS_PORT (6390; bench/run_peers.sh starts one):
the job body is the harness's no-op — one ``INCR`` of a Redis counter through its own redis-py
client — for BOTH stores, so completions are counted the same way and the per-job cost of the
body is identical; only the queue store differs. (The SQLite runs therefore still talk to Redis
once per job, for the counter only.)

Drain: N jobs enqueued with ``enqueue_many`` (timed: bulk enqueue rate), then
``calmq worker bench_drain_app --concurrency C --processes P`` is spawned and timed until the
counter reaches N (same method as the peer harness). Producers: K processes start together
(barrier) and each enqueues M jobs one by one; QueueUnavailable answers are counted by reason,
per-call latency (success and failure) recorded. JSON lines go to --out, a table to stdout.
This file is also the worker's app module (``sqlite_drain:app``, store URL from BENCH_URL).
"""

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time

import redis

from calmq import App, QueueUnavailable, Settings

HERE = os.path.dirname(os.path.abspath(__file__))
PORT = int(os.environ.get("PEERS_REDIS_PORT", "6390"))
DONE_KEY = "drainbench:done"
WORKDIR = os.environ.get("BENCH_SQLITE_DIR", "/tmp/peers/sqlite-bench")
SQLITE_URL = f"sqlite:///{WORKDIR}/bench.sqlite3"  # sqlite:////abs/path
REDIS_URL = f"redis://127.0.0.1:{PORT}/0"

app = App(settings=Settings(url=os.environ.get("BENCH_URL", SQLITE_URL), key_prefix="drainbench"))
_r = redis.Redis(port=PORT)


@app.task(name="noop")
def noop(x: int) -> None:
    _r.incr(DONE_KEY)


# ----------------------------------------------------------------------------- helpers
def reset(url):
    _r.delete(DONE_KEY)
    if url.startswith("sqlite"):
        os.makedirs(WORKDIR, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{WORKDIR}/bench.sqlite3{suffix}")
    else:
        for key in _r.scan_iter("*drainbench*", count=1000):
            _r.delete(key)


def tree_stats(pid):
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    rss = cpu = 0.0
    for p in procs:
        try:
            rss += p.memory_info().rss
            ct = p.cpu_times()
            cpu += ct.user + ct.system + ct.children_user + ct.children_system
        except psutil.Error:
            continue
    return {"rss_mb": round(rss / 2**20, 1), "cpu_s": round(cpu, 2), "nproc": len(procs)}


def stop(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


def counts(url):
    a = App(settings=Settings(url=url, key_prefix="drainbench"))
    try:
        c = {q.queue: q for q in a.store.counts()}.get("default")
        return (
            {}
            if c is None
            else {
                "left_ready": c.ready,
                "left_running": c.running,
                "left_scheduled": c.scheduled,
                "left_dead": c.dead,
            }
        )
    finally:
        a.close()


def drain(url, n, processes, concurrency, timeout, logf):
    reset(url)
    a = App(settings=Settings(url=url, key_prefix="drainbench"))
    task = a.get_task("noop") if "noop" in a.tasks else a.task(name="noop")(noop.fn)
    _ = a.store  # open (and, for SQLite, create/migrate) outside the timed loop
    t = time.perf_counter()
    for start in range(0, n, 1000):
        task.enqueue_many([(i,) for i in range(start, min(n, start + 1000))])
    enq_s = time.perf_counter() - t
    a.close()
    argv = [
        os.path.join(os.path.dirname(sys.executable), "calmq"),
        "worker",
        "sqlite_drain:app",
        "--queues",
        "default",
        "--concurrency",
        str(concurrency),
        "--processes",
        str(processes),
        "--pool",
        os.environ.get("BENCH_POOL", "threads"),
    ]
    env = dict(os.environ, BENCH_URL=url, PYTHONPATH=HERE, PEERS_REDIS_PORT=str(PORT))
    logf.write(f"\n==== {time.ctime()} {url} {argv}\n".encode())
    logf.flush()
    proc = subprocess.Popen(
        argv,
        cwd=HERE,
        env=env,
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    t0 = time.time()
    t_first = None
    done = 0
    ok = True
    while True:
        done = int(_r.get(DONE_KEY) or 0)
        now = time.time()
        if done and t_first is None:
            t_first = now
        if done >= n:
            break
        if now - t0 > timeout or proc.poll() is not None:
            ok = False
            break
        time.sleep(0.005)
    stats = tree_stats(proc.pid)
    stop(proc)
    time.sleep(0.2)
    rec = {
        "bench": "drain",
        "store": url.split(":")[0],
        "processes": processes,
        "concurrency": concurrency,
        "n": n,
        "completed": done,
        "complete": ok,
        "bulk_enqueue_rate": round(n / enq_s, 1),
        "wall_s": round(now - t0, 3),
        "rate": round(done / (now - t0), 1),
        "steady_rate": round(done / (now - t_first), 1) if t_first and now > t_first else None,
        "startup_s": round(t_first - t0, 3) if t_first else None,
        **stats,
        "cpu_us_per_job": round(stats.get("cpu_s", 0) * 1e6 / max(1, done)),
        **counts(url),
    }
    return rec


def _producer(url, m, barrier, out_q):
    a = App(settings=Settings(url=url, key_prefix="drainbench"))
    task = a.task(name="noop")(noop.fn)
    _ = a.store
    task.enqueue(-1)  # connect / open the file before the clock starts (not counted)
    ok_lat, fail_lat, reasons = [], [], {}
    barrier.wait()
    t_start = time.time()
    for i in range(m):
        t = time.perf_counter()
        try:
            task.enqueue(i)
            ok_lat.append(time.perf_counter() - t)
        except QueueUnavailable as exc:
            fail_lat.append(time.perf_counter() - t)
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
    t_end = time.time()
    a.close()
    out_q.put(
        {"ok": ok_lat, "fail": fail_lat, "reasons": reasons, "t_start": t_start, "t_end": t_end}
    )


def pct(sorted_vals, q):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, round(q / 100.0 * len(sorted_vals) + 0.5) - 1))
    return sorted_vals[k]


def producers(url, k, m, timeout):
    reset(url)
    a = App(settings=Settings(url=url, key_prefix="drainbench"))
    a.store.counts()  # create the schema once, before the producers race
    a.close()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(k)
    out_q = ctx.Queue()
    procs = [ctx.Process(target=_producer, args=(url, m, barrier, out_q)) for _ in range(k)]
    for p in procs:
        p.start()
    results = []
    deadline = time.time() + timeout
    for _ in procs:
        results.append(out_q.get(timeout=max(1, deadline - time.time())))
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    ok = sorted(x for r in results for x in r["ok"])
    fail = sorted(x for r in results for x in r["fail"])
    reasons = {}
    for r in results:
        for key, v in r["reasons"].items():
            reasons[key] = reasons.get(key, 0) + v
    wall = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    ms = lambda v: round(v * 1000, 2) if v is not None else None  # noqa: E731
    return {
        "bench": "producers",
        "store": url.split(":")[0],
        "producers": k,
        "per_producer": m,
        "attempted": k * m,
        "accepted": len(ok),
        "unavailable": len(fail),
        "reasons": reasons,
        "wall_s": round(wall, 3),
        "accepted_rate": round(len(ok) / wall, 1),
        "p50_ms": ms(pct(ok, 50)),
        "p99_ms": ms(pct(ok, 99)),
        "max_ms": ms(ok[-1] if ok else None),
        "fail_p50_ms": ms(pct(fail, 50)),
        "fail_max_ms": ms(fail[-1] if fail else None),
        "per_producer_rate_median": round(
            statistics.median(len(r["ok"]) / (r["t_end"] - r["t_start"]) for r in results), 1
        ),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--producers", type=int, default=8)
    ap.add_argument("--per-producer", type=int, default=2000)
    ap.add_argument("--drain-timeout", type=float, default=60)
    ap.add_argument("--out", default="/tmp/peers/sqlite.jsonl")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    os.makedirs(WORKDIR, exist_ok=True)
    logf = open(os.path.join(WORKDIR, "worker.log"), "ab")  # noqa: SIM115 - closed at exit of this short script
    recs = []

    def emit(rec):
        rec = {"ts": round(time.time(), 1), "load1": round(os.getloadavg()[0], 2), **rec}
        recs.append(rec)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), file=sys.stderr, flush=True)

    # interleaved: sqlite 1, redis 1, sqlite 2, redis 2
    for procs in (1, 2):
        for url in (SQLITE_URL, REDIS_URL):
            emit(drain(url, args.n, procs, args.concurrency, args.drain_timeout, logf))
    for url, k in ((SQLITE_URL, 1), (SQLITE_URL, args.producers), (REDIS_URL, args.producers)):
        emit(producers(url, k, args.per_producer, timeout=120))

    print(
        "\n| store | worker processes x concurrency | bulk enqueue/s | drain jobs/s (from spawn) "
        "| steady jobs/s | worker CPU µs/job | RSS MB | complete | left ready/running/dead | load1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in recs:
        if r["bench"] != "drain":
            continue
        print(
            f"| {r['store']} | {r['processes']} x {r['concurrency']} | {r['bulk_enqueue_rate']:,.0f} "
            f"| {r['rate']:,.0f} | {r['steady_rate'] or 0:,.0f} | {r['cpu_us_per_job']:,} | {r.get('rss_mb')} "
            f"| {r['completed']}/{r['n']} | {r.get('left_ready')}/{r.get('left_running')}/{r.get('left_dead')} "
            f"| {r['load1']} |"
        )
    print(
        "\n| store | producer processes | jobs accepted / attempted | QueueUnavailable (reasons) "
        "| accepted/s (all producers) | enqueue p50 / p99 / max ms | failed call p50 / max ms | load1 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in recs:
        if r["bench"] != "producers":
            continue
        print(
            f"| {r['store']} | {r['producers']} | {r['accepted']:,} / {r['attempted']:,} "
            f"| {r['unavailable']} {r['reasons'] or ''} | {r['accepted_rate']:,.0f} "
            f"| {r['p50_ms']} / {r['p99_ms']} / {r['max_ms']} | {r['fail_p50_ms']} / {r['fail_max_ms']} "
            f"| {r['load1']} |"
        )


if __name__ == "__main__":
    main()
