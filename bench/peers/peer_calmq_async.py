"""calmq adapter, ``async def`` job variant: the INCR / RPUSH goes through ``redis.asyncio``
on the worker's event loop instead of a sync redis-py call on a worker thread. Everything else
(enqueue, default worker flags) is as in ``peer_calmq.py``. Run it as library ``calmq_async``
(run_all.py looks for /tmp/peers/venv-calmq_async, a symlink to venv-calmq).

Tuned flags: ``PEERS_CALMQ_ASYNC_TUNED`` (default "--pool solo --concurrency 64 --processes 2
--log-level warning": an async job overlaps its own round trips, so a third process did not
help in bench/calmq_tuning.sh; past 100 jobs at once the job's own redis.asyncio pool, 100
connections by default in redis-py 8, runs out and the drain falls off)."""

import os
import time

import common
import peer_calmq as base
import redis.asyncio as aioredis

from calmq import App, Settings

NAME = "calmq_async"
HAS_BULK = True
TUNED_ARGS = os.environ.get(
    "PEERS_CALMQ_ASYNC_TUNED", "--pool solo --concurrency 64 --processes 2 --log-level warning"
).split()
SETTINGS = {
    "default": base.SETTINGS["default"].split(" (sync job")[0] + " (async job, redis.asyncio)",
    "tuned": "calmq worker " + " ".join(TUNED_ARGS) + " (async job, redis.asyncio)",
}
version = base.version

app = App(settings=Settings(url=base.URL, key_prefix="bench"))
_ar = None


def _client():
    global _ar
    if _ar is None:  # created inside the worker's running loop
        _ar = aioredis.Redis(port=base.PORT)
    return _ar


@app.task(name="noop")
async def noop(x: int, t: float = 0.0) -> None:
    if t:
        await _client().rpush(common.LAT_KEY, time.time() - t)
    else:
        await _client().incr(common.DONE_KEY)


def produce(n, bulk=False):
    return base._produce(noop, n, bulk)


def produce_paced(rate, duration):
    return base._produce_paced(noop, rate, duration)


def worker_cmd(mode):
    return base._worker_cmd("peer_calmq_async", mode, TUNED_ARGS)
