"""The store conformance suite against a Redis Cluster, a Sentinel group and an ACL user.

``store_settings`` and ``store`` are overridden here (the defaults in tests/conftest.py cover
one plain server and SQLite): ``cluster`` is a real 3 primaries + 3 replicas cluster,
``sentinel`` a primary + replica behind 3 sentinels, and ``acl`` a plain server reached as
the restricted user documented in docs/scaling.md (tests/stores/acl.py applies it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from calmq.settings import Settings
from calmq.stores.base import Store
from calmq.testing.conformance import *  # noqa: F403
from tests.redis_server import RedisServer, unique_prefix
from tests.redis_topologies import RedisClusterProcesses, SentinelGroup
from tests.store_fixtures import opened_store
from tests.stores.acl import acl_user_settings


@pytest.fixture(params=["cluster", "sentinel", "acl"])
def store_settings(request: pytest.FixtureRequest) -> Settings:
    prefix = unique_prefix(request.node.name)
    if request.param == "cluster":
        cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
        return Settings(url=cluster.url, key_prefix=prefix)
    if request.param == "sentinel":
        group: SentinelGroup = request.getfixturevalue("sentinel_group")
        return Settings(url=group.url, key_prefix=prefix)
    server: RedisServer = request.getfixturevalue("redis_server")
    return acl_user_settings(server, prefix)


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    yield from opened_store(store_settings)
