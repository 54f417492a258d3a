"""calmq adapter for the peer harness (/work/shared/bench/peers/common.py).

Same job body as every peer: a no-op taking one small int that does one Redis round trip of
its own through its own client (``INCR peers:done``, or ``RPUSH peers:lat now-t`` in the
latency run). The job is a plain sync function (calmq runs it on a worker thread), which is
the idiomatic form and what the sync peers do. ``peer_calmq_async.py`` is the same adapter
with an ``async def`` job using ``redis.asyncio``.

Knobs (environment):
  PEERS_CALMQ_TUNED    worker flags of the tuned mode (default "--pool solo --concurrency 64
                       --processes 3 --log-level warning": best drain of the interleaved
                       pre-scan bench/calmq_tuning.sh; a quiet log, as rq's tuned "-q")
  PEERS_CALMQ_DEFAULT  worker flags of the default mode (default "--concurrency 16", the CLI default)
"""

import os
import time
from importlib.metadata import version as _v

import common
import redis

from calmq import App, Settings

NAME = "calmq"
HAS_BULK = True  # task.enqueue_many: one store call (one Lua script) per 1,000 jobs
PORT = int(os.environ.get("PEERS_REDIS_PORT", "6390"))
URL = f"redis://127.0.0.1:{PORT}/0"
DEFAULT_ARGS = os.environ.get("PEERS_CALMQ_DEFAULT", "--concurrency 16").split()
TUNED_ARGS = os.environ.get(
    "PEERS_CALMQ_TUNED", "--pool solo --concurrency 64 --processes 3 --log-level warning"
).split()


def _describe(args):
    where = "on the worker's thread" if "solo" in args else "on threads"
    return "calmq worker " + " ".join(args) + f" (sync job {where})"


SETTINGS = {"default": _describe(DEFAULT_ARGS), "tuned": _describe(TUNED_ARGS)}

app = App(settings=Settings(url=URL, key_prefix="bench"))
_r = redis.Redis(port=PORT)


@app.task(name="noop")
def noop(x: int, t: float = 0.0) -> None:
    if t:
        _r.rpush(common.LAT_KEY, time.time() - t)
    else:
        _r.incr(common.DONE_KEY)


def version():
    return _v("calmq")


def _produce(task, n, bulk):
    _ = (
        task.app.store
    )  # open the store (no I/O yet) outside the timed loop, like the other adapters
    if not bulk:
        return common.timed_sync(n, lambda i: task.enqueue(i))
    t = time.perf_counter()
    for rng in common.chunks(n, 1000):
        task.enqueue_many([(i,) for i in rng])
    return time.perf_counter() - t


def _produce_paced(task, rate, duration):
    return common.paced_sync(rate, duration, lambda i, t: task.enqueue(i, t))


def _worker_cmd(module, mode, tuned=None):
    flags = (tuned or TUNED_ARGS) if mode == "tuned" else DEFAULT_ARGS
    # The CLI default log level (info) writes one line per finished job (calmq.jobs logger) to
    # the harness's worker log; the default mode keeps it (docs/benchmarks.md measures its
    # cost), the tuned mode logs warnings only.
    return [common.bin_path("calmq"), "worker", f"{module}:app", "--queues", "default", *flags], {}


def produce(n, bulk=False):
    return _produce(noop, n, bulk)


def produce_paced(rate, duration):
    return _produce_paced(noop, rate, duration)


def worker_cmd(mode):
    return _worker_cmd("peer_calmq", mode)
