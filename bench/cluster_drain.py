#!/usr/bin/env python3
"""Aggregate drain rate: queues spread over a 3-shard Redis Cluster vs one Redis node.

    .venv/bin/python bench/cluster_drain.py [--jobs 30000] [--queues 12] [--procs 4]

Starts its own servers on free loopback ports (a 3 primaries + 3 replicas cluster and one
plain redis-server, persistence off, via tests/redis_topologies.py) and stops them. For each
target: enqueue ``--jobs`` jobs over ``--queues`` queues (batches of 500, timed: bulk enqueue
rate), then ``--procs`` processes drain the queues (each owns queues round-robin) with the
store API directly: ``claim(limit=100)`` then ``complete`` of the batch, until every queue is
empty. No job body: this measures the store, claim + complete per job, not a task.

On one 2-core machine every shard, its replica and the drainers share the same two cores,
so the cluster cannot show its scaling here: the numbers show the per-shard cost and that
fan-out adds no overhead, not what three machines would do.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.redis_server import RedisServer
from tests.redis_topologies import RedisClusterProcesses

from calmq.job import NewJob, new_job_id
from calmq.settings import Settings
from calmq.stores import open_store

PREFIX = "bench"


def fill(url: str, jobs: int, queues: list[str]) -> float:
    store = open_store(url, Settings(url=url, key_prefix=PREFIX))
    batch: list[NewJob] = []
    started = time.perf_counter()
    for i in range(jobs):
        queue = queues[i % len(queues)]
        batch.append(NewJob(id=new_job_id(), queue=queue, task="noop", payload=b"{}"))
        if len(batch) == 500:
            store.enqueue(batch)
            batch = []
    if batch:
        store.enqueue(batch)
    elapsed = time.perf_counter() - started
    store.close()
    return jobs / elapsed


def drain(url: str, queues: list[str], counter: mp.Value) -> None:  # type: ignore[valid-type]
    store = open_store(url, Settings(url=url, key_prefix=PREFIX))
    done = 0
    active = list(queues)
    while active:
        for queue in list(active):
            claimed = store.claim(queue, limit=100, lease_ms=60_000).jobs
            if not claimed:
                active.remove(queue)
                continue
            store.complete(queue, [c.lease for c in claimed])
            done += len(claimed)
    store.close()
    with counter.get_lock():
        counter.value += done


def run(name: str, url: str, jobs: int, queues: list[str], procs: int) -> dict[str, object]:
    enqueue_rate = fill(url, jobs, queues)
    counter = mp.Value("i", 0)
    workers = [
        mp.Process(target=drain, args=(url, queues[p::procs], counter)) for p in range(procs)
    ]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    assert counter.value == jobs, (counter.value, jobs)
    return {
        "target": name,
        "jobs": jobs,
        "queues": len(queues),
        "procs": procs,
        "enqueue_per_s": round(enqueue_rate),
        "drain_per_s": round(jobs / elapsed),
        "drain_s": round(elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--queues", type=int, default=12)
    parser.add_argument("--procs", type=int, default=4)
    args = parser.parse_args()
    queues = [f"q{i}" for i in range(args.queues)]
    results = []
    single = RedisServer().start()
    try:
        results.append(run("one node", single.url, args.jobs, queues, args.procs))
    finally:
        single.cleanup()
    cluster = RedisClusterProcesses().start()
    try:
        results.append(run("cluster 3 shards", cluster.url, args.jobs, queues, args.procs))
    finally:
        cluster.cleanup()
    print(f"{'target':<18}{'enqueue/s':>11}{'drain/s':>10}{'drain s':>9}")
    for r in results:
        print(f"{r['target']:<18}{r['enqueue_per_s']:>11}{r['drain_per_s']:>10}{r['drain_s']:>9}")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
