#!/usr/bin/env python3
"""Worker CPU per job and enqueue-to-start latency at a trickle (issue 4): one default worker
of a peers-harness library fed 500 jobs/s, each job arriving alone, as most production
workers see their traffic most of the time.

    # inside the library's venv (bench/run_peers.sh makes them), against your own redis:
    PEERS_REDIS_PORT=6390 PEERS_ADAPTER_PATH=bench/peers \\
        /tmp/peers/venv-calmq/bin/python bench/trickle_cost.py --lib calmq [--threads]
    for lib in floor calmq huey; do ...same with venv-$lib and --lib $lib...; done

Starts the library's DEFAULT worker (the harness's phase C settings), waits for it to run one
job, then sends ``--rate`` jobs/s for ``--seconds`` with the harness's paced producer (each
job records its enqueue-to-done time) and prints one JSON line: worker CPU µs per job (the
whole process tree, start-up excluded), p50/p99/max latency. ``--threads`` adds the CPU
per job of each worker thread, by thread name (calmq's threads are named ``calmq-*``; the
names are set for this run through a ``sitecustomize`` on the worker's ``PYTHONPATH``).

``TRICKLE_SERIES=file`` writes every job's enqueue-to-done time (ms), in completion order,
one per line: clustered slow jobs point at a stall (the VM, a collection), spread ones at a
steady cost.

Make sure no other worker of the same library runs against that redis: it would take a
share of the jobs and this script would divide the CPU by jobs it did not all run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HARNESS = os.environ.get("PEERS_HARNESS", "/work/shared/bench/peers")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "peers"), HARNESS]

import common  # noqa: E402  (the harness: MiniRedis, start/stop_worker, percentile)
import psutil  # noqa: E402

# Names the worker's threads for the kernel (comm), so /proc shows which thread spends what.
NAME_THREADS = """
import ctypes, threading
_prctl = ctypes.CDLL(None).prctl
_inner = threading.Thread._bootstrap_inner
def _named(self):
    _prctl(15, self.name[:15].encode(), 0, 0, 0)
    return _inner(self)
threading.Thread._bootstrap_inner = _named
"""


def thread_cpu(pid: int) -> dict[tuple[int, str], tuple[str, float]]:
    """CPU seconds of every thread of ``pid`` and its children: (pid, tid) -> (name, s)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        for task in Path(f"/proc/{proc.pid}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                name = (task / "comm").read_text().strip()
            except OSError:
                continue
            out[(proc.pid, task.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", required=True, help="harness adapter: floor, calmq, huey, ...")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", action="store_true", help="CPU per job of each thread")
    opts = parser.parse_args()
    lib = __import__(f"peer_{opts.lib}")
    site = tempfile.mkdtemp(prefix="trickle-")
    if opts.threads:
        Path(site, "sitecustomize.py").write_text(NAME_THREADS)
        os.environ["PYTHONPATH"] = os.pathsep.join([site, os.environ.get("PYTHONPATH", "")])
    redis = common.MiniRedis()
    redis.cmd("FLUSHALL")
    proc, log = common.start_worker(lib, "default", os.path.join(site, "worker.log"))
    try:
        lib.produce(1, bulk=False)
        deadline = time.time() + 60
        while int(redis.cmd("GET", common.DONE_KEY) or 0) < 1:
            if time.time() > deadline or proc.poll() is not None:
                sys.exit(f"the worker never ran its first job; see {site}/worker.log")
            time.sleep(0.01)
        before = thread_cpu(proc.pid)
        sent = lib.produce_paced(opts.rate, opts.seconds)
        deadline = time.time() + 30
        while int(redis.cmd("LLEN", common.LAT_KEY)) < sent and time.time() < deadline:
            time.sleep(0.02)
        after = thread_cpu(proc.pid)
        series = [float(v) * 1000 for v in redis.cmd("LRANGE", common.LAT_KEY, 0, -1)]
        if os.environ.get("TRICKLE_SERIES"):
            Path(os.environ["TRICKLE_SERIES"]).write_text("\n".join(map(str, series)))
        latencies = sorted(series)
    finally:
        common.stop_worker(proc, log)
    spent = sum(s for _, s in after.values()) - sum(s for _, s in before.values())
    result = {
        "lib": opts.lib,
        "sent": sent,
        "received": len(latencies),
        "cpu_us_per_job": round(spent / sent * 1e6),
        "p50_ms": round(common.percentile(latencies, 50), 2),
        "p99_ms": round(common.percentile(latencies, 99), 2),
        "max_ms": round(latencies[-1], 2),
    }
    if opts.threads:
        by_name: collections.Counter[str] = collections.Counter()
        for key, (name, seconds) in after.items():
            by_name[name.rstrip("0123456789_")] += seconds - before.get(key, (name, 0.0))[1]
        result["cpu_us_per_job_by_thread"] = {
            name: round(s / sent * 1e6) for name, s in by_name.most_common() if s > 0
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
