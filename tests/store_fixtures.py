"""Shared by store fixtures: settings per store kind; open a store, close it after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from calmq.settings import Settings
from calmq.stores import open_store
from calmq.stores.base import Store
from tests.redis_server import RedisServer, unique_prefix


def opened_store(settings: Settings) -> Iterator[Store]:
    """A store for a fixture to yield, closed after the test."""
    store = open_store(settings.url, settings)
    try:
        yield store
    finally:
        store.close()


def settings_for(request: pytest.FixtureRequest, tmp_path: object) -> Settings:
    """Settings for the store kind ``request.param`` names: redis, sqlite-file or sqlite-memory."""
    kind = request.param
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return Settings(url=server.url, key_prefix=unique_prefix(request.node.name))
    if kind == "sqlite-file":
        return Settings(url=f"sqlite:///{tmp_path}/calmq.sqlite3")
    return Settings(url="sqlite://:memory:")
