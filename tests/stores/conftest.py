"""Session fixtures for the Redis topologies: a 6-node Cluster and a Sentinel group.

Started on first use only (``-k`` runs that do not need them pay nothing) and torn down at
the end of the session. Tests that kill servers start private topologies of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import RedisServer
from tests.redis_topologies import RedisClusterProcesses, SentinelGroup


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    cluster = RedisClusterProcesses().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    group = SentinelGroup().start()
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the session's redis-server, to look at and tamper with raw keys."""
    client = redis_server.client()
    try:
        yield client
    finally:
        client.close()
