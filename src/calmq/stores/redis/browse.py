"""Read-only views of the Redis store for admins: which jobs a state holds, and how many.

Plain commands (no scripts: nothing changes), run by :class:`~calmq.stores.redis.store.RedisStore`
inside its error guard. Jobs waiting in lanes (keys with limits or fairness) count and list as
ready, after the plain ready ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from calmq.job import JobState
from calmq.stores.redis.keys import QueueKeys, derived_key


def list_ids(client: Any, keys: QueueKeys, state: JobState, start: int, limit: int) -> list[bytes]:
    """Ids of up to ``limit`` jobs of ``state`` from position ``start``: claim order for ready,
    due order for scheduled, deadline order for running, newest first for dead; [] for states
    without an index (succeeded, cancelled)."""
    index = {
        JobState.READY: keys.ready,
        JobState.SCHEDULED: keys.scheduled,
        JobState.RUNNING: keys.leases,
        JobState.DEAD: keys.dead,
    }.get(state)
    if index is None or limit < 1:
        return []
    read = client.zrevrange if state is JobState.DEAD else client.zrange
    ids = cast(list[bytes], read(index, start, start + limit - 1))
    if state is JobState.READY and len(ids) < limit:
        ids += _lane_ids(client, keys, start, limit - len(ids))
    return ids


def _lane_ids(client: Any, keys: QueueKeys, start: int, wanted: int) -> list[bytes]:
    """Ready jobs waiting in lanes, lane by lane in turn order; ``start`` counts from the
    first plain ready job."""
    skip = max(start - int(client.zcard(keys.ready)), 0)
    ids: list[bytes] = []
    for lane in cast(list[bytes], client.zrange(keys.lanes, 0, -1)):
        lane_key = derived_key(keys.tag, "lane", lane.decode())
        size = int(client.zcard(lane_key))
        if skip >= size:
            skip -= size
            continue
        ids += cast(list[bytes], client.zrange(lane_key, skip, skip + wanted - len(ids) - 1))
        skip = 0
        if len(ids) >= wanted:
            break
    return ids


def state_sizes(client: Any, all_keys: Sequence[QueueKeys]) -> list[list[int]]:
    """[ready, scheduled, running, dead] per queue: one round trip, two when a queue has
    lanes (their jobs count as ready)."""
    pipe = client.pipeline(transaction=False)
    for keys in all_keys:
        for key in (keys.ready, keys.scheduled, keys.leases, keys.dead):
            pipe.zcard(key)
        pipe.zrange(keys.lanes, 0, -1)
    replies = pipe.execute()
    sizes = [[int(n) for n in replies[5 * i : 5 * i + 4]] for i in range(len(all_keys))]
    lanes = [replies[5 * i + 4] for i in range(len(all_keys))]
    if any(lanes):
        pipe = client.pipeline(transaction=False)
        for keys, queue_lanes in zip(all_keys, lanes, strict=True):
            for lane in queue_lanes:
                pipe.zcard(derived_key(keys.tag, "lane", lane.decode()))
        waiting = iter(pipe.execute())
        for size, queue_lanes in zip(sizes, lanes, strict=True):
            size[0] += sum(int(next(waiting)) for _ in queue_lanes)
    return sizes
