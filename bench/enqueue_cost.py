#!/usr/bin/env python3
"""Producer cost of enqueue on the Redis store against the "floor" (issue 4), interleaved.

    .venv/bin/python bench/enqueue_cost.py [--jobs 20000] [--rounds 5] [--profile]

The floor is the least a Redis queue can do per job (bench/peers/peer_floor.py): one
``register_script`` EVALSHA per enqueue whose Lua does HSET payload + RPUSH id + LLEN/RPUSH
wake, and for bulk one call per 1000 jobs doing HSET + RPUSH per job. calmq runs
``task.enqueue(i)`` one by one and ``task.enqueue_many`` in chunks of 1000, same payload
shape. Each round interleaves floor and calmq in slices of 1000 jobs (order alternating), in
this process, on a fresh key prefix; the report gives medians over rounds and the median of
the per-round ratios calmq / floor. Needs a Redis of your own: $BENCH_REDIS_PORT (default 6391). ``--profile`` prints a
cProfile of calmq's one-by-one enqueue afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
import uuid

import msgspec
import redis

from calmq import App
from calmq.settings import Settings

PORT = int(os.environ.get("BENCH_REDIS_PORT", "6391"))
CHUNK = 1000

FLOOR_ONE = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[1], ARGV[1])
if redis.call('LLEN', KEYS[3]) == 0 then redis.call('RPUSH', KEYS[3], 1) end
return 1
"""
FLOOR_MANY = """
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('RPUSH', KEYS[1], ARGV[i])
end
if redis.call('LLEN', KEYS[3]) == 0 then redis.call('RPUSH', KEYS[3], 1) end
return #ARGV / 2
"""


def _noop(x: int) -> None:
    """The job body (never run here)."""


class Floor:
    """peer_floor.py's producer, on its own key prefix."""

    def __init__(self, client: redis.Redis, tag: str) -> None:
        self.keys = [f"{{{tag}}}:ready", f"{{{tag}}}:jobs", f"{{{tag}}}:wake"]
        self.one = client.register_script(FLOOR_ONE)
        self.many = client.register_script(FLOOR_MANY)
        self.enc = msgspec.json.Encoder()
        self.seq = 0

    def _new(self, x: int) -> tuple[str, bytes]:
        self.seq += 1
        jid = f"{os.getpid()}-{self.seq}"
        return jid, self.enc.encode({"id": jid, "a": [x, 0.0]})

    def single(self, n: int) -> float:
        t = time.perf_counter()
        for i in range(n):
            self.one(keys=self.keys, args=list(self._new(i)))
        return time.perf_counter() - t

    def bulk(self, n: int) -> float:
        t = time.perf_counter()
        for start in range(0, n, CHUNK):
            args: list[object] = []
            for i in range(start, min(start + CHUNK, n)):
                args.extend(self._new(i))
            self.many(keys=self.keys, args=args)
        return time.perf_counter() - t


class Calmq:
    """calmq's producer on a fresh key prefix."""

    def __init__(self, prefix: str) -> None:
        settings = Settings(url=f"redis://127.0.0.1:{PORT}/0", key_prefix=prefix)
        self.app = App(settings=settings)
        self.task = self.app.task(name="bench.noop", retries=0)(_noop)

    def single(self, n: int) -> float:
        enqueue = self.task.enqueue
        t = time.perf_counter()
        for i in range(n):
            enqueue(i)
        return time.perf_counter() - t

    def bulk(self, n: int) -> float:
        t = time.perf_counter()
        for start in range(0, n, CHUNK):
            self.task.enqueue_many([(i,) for i in range(start, min(start + CHUNK, n))])
        return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    opts = parser.parse_args()
    client = redis.Redis(port=PORT)
    run = uuid.uuid4().hex[:8]
    floor = Floor(client, f"floor-{run}")
    calmq = Calmq(f"enqcost-{run}")
    floor.single(2000), calmq.single(2000)  # warm up: scripts loaded, pools filled
    rates: dict[str, list[float]] = {k: [] for k in ("fs", "cs", "fb", "cb")}
    # Each round alternates floor and calmq in short slices (1000 jobs) and sums each side's
    # time, so a burst of load from other processes hits both sides alike.
    slices = max(opts.jobs // CHUNK, 1)
    per_slice = opts.jobs // slices
    for r in range(opts.rounds):
        for kind in ("single", "bulk"):
            spent = {"f": 0.0, "c": 0.0}
            for i in range(slices):
                pair = [("f", floor), ("c", calmq)]
                for name, runner in pair if (r + i) % 2 == 0 else pair[::-1]:
                    spent[name] += getattr(runner, kind)(per_slice)
            for name in spent:
                rates[name + kind[0]].append(slices * per_slice / spent[name])
        print(
            f"round {r + 1}: single floor {rates['fs'][-1]:,.0f}/s calmq {rates['cs'][-1]:,.0f}/s"
            f" ({rates['cs'][-1] / rates['fs'][-1]:.2f}); bulk floor {rates['fb'][-1]:,.0f}/s"
            f" calmq {rates['cb'][-1]:,.0f}/s ({rates['cb'][-1] / rates['fb'][-1]:.2f})",
            flush=True,
        )
    for label, f, c in (("one by one", "fs", "cs"), ("bulk x1000", "fb", "cb")):
        ratio = statistics.median(x / y for x, y in zip(rates[c], rates[f], strict=True))
        print(
            f"{label}: floor median {statistics.median(rates[f]):,.0f}/s"
            f" ({1e6 / statistics.median(rates[f]):.1f} us/job), calmq median"
            f" {statistics.median(rates[c]):,.0f}/s ({1e6 / statistics.median(rates[c]):.1f}"
            f" us/job), median ratio calmq/floor {ratio:.2f}"
        )
    if opts.profile:
        profiler = cProfile.Profile()
        profiler.runcall(calmq.single, opts.jobs)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    for pattern in (f"{{floor-{run}}}*", f"{{enqcost-{run}:*", f"enqcost-{run}:*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    calmq.app.close()


if __name__ == "__main__":
    main()
