"""The worker registry on Redis: script arguments and reply parsing for ``RedisStore``.

A heartbeat stores the worker's record (msgspec JSON) in the ``info`` HASH and its expiry
(server clock: now + ``ttl_ms``) in the ``seen`` ZSET, both under ``{<prefix>:workers}``
(:func:`~calmq.stores.redis.keys.worker_keys`). ``seen_at_ms`` is not trusted from the
record: it is derived from the stored expiry as ``expiry - ttl_ms``, the server-clock time
of the heartbeat. The Lua scripts (``heartbeat``, ``list_workers``, ``forget_worker``) drop
at most :data:`PRUNE_LIMIT` expired records per call.
"""

from __future__ import annotations

from typing import Any

import msgspec

from calmq.job import WorkerInfo
from calmq.stores.redis.scripts import Arg

#: Most expired records one heartbeat or listing drops (scripts stay O(batch)).
PRUNE_LIMIT = 100
#: Each live worker comes back as this many entries of the flat reply of list_workers.lua.
WORKER_FIELDS = 3


def heartbeat_args(worker: WorkerInfo) -> list[Arg]:
    """The ``ARGV`` of heartbeat.lua for ``worker``."""
    return [worker.id, msgspec.json.encode(worker), worker.ttl_ms, PRUNE_LIMIT]


def parse_workers(reply: list[Any]) -> list[WorkerInfo]:
    """The live workers of a list_workers.lua reply, sorted by id.

    A record that does not decode as a ``WorkerInfo``, or is filed under another id (foreign
    data), is left out rather than failing the whole listing: the registry is for
    monitoring, and the bad record still expires on schedule.
    """
    workers: list[WorkerInfo] = []
    for i in range(1, len(reply), WORKER_FIELDS):
        record, expiry = reply[i + 1], int(reply[i + 2])
        try:
            info = msgspec.json.decode(record, type=WorkerInfo)
        except msgspec.DecodeError:  # includes ValidationError
            continue
        if info.id.encode() != reply[i]:  # filed under another id: foreign too
            continue
        workers.append(msgspec.structs.replace(info, seen_at_ms=expiry - info.ttl_ms))
    workers.sort(key=lambda w: w.id)
    return workers
