"""Shared fixtures: a private redis-server per test session and a fresh store per test.

Nothing is mocked: Redis tests talk to a redis-server this session started on a free port,
SQLite tests to a real file under ``tmp_path``. Each Redis test gets its own key prefix, so
tests never see each other's keys and need no FLUSHALL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from calmq import App
from calmq.settings import Settings
from calmq.stores.base import Store
from tests.jobs import make_app
from tests.redis_server import RedisServer, unique_prefix
from tests.store_fixtures import opened_store, settings_for


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> str:
    return unique_prefix(request.node.name)


@pytest.fixture
def redis_settings(redis_server: RedisServer, key_prefix: str) -> Settings:
    return Settings(url=redis_server.url, key_prefix=key_prefix)


@pytest.fixture
def redis_store(redis_settings: Settings) -> Iterator[Store]:
    yield from opened_store(redis_settings)


@pytest.fixture
def sqlite_settings(tmp_path: pytest.TempPathFactory) -> Settings:
    return Settings(url=f"sqlite:///{tmp_path}/calmq.sqlite3")


@pytest.fixture
def sqlite_store(sqlite_settings: Settings) -> Iterator[Store]:
    yield from opened_store(sqlite_settings)


STORE_KINDS = ["redis", "sqlite-file", "sqlite-memory"]


@pytest.fixture(params=STORE_KINDS)
def store_settings(request: pytest.FixtureRequest, tmp_path: object) -> Settings:
    """Settings for each store kind; tests using it run once per store."""
    return settings_for(request, tmp_path)


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    yield from opened_store(store_settings)


@pytest.fixture
def app(store_settings: Settings) -> Iterator[App]:
    """An app of tests.jobs on each store kind (closed after the test)."""
    application = make_app(store_settings)
    try:
        yield application
    finally:
        application.close()
