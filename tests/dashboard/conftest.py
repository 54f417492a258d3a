"""Fixtures for the dashboard tests: an App on each real store and a live dashboard."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from calmq import App, Settings
from calmq.dashboard.app import create_app
from tests.dashboard.live import LiveServer
from tests.jobs import make_app
from tests.redis_server import RedisServer, unique_prefix


@pytest.fixture(params=["sqlite-file", "redis"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    """An App with the test tasks, on a SQLite file or the session's redis-server."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = Settings(url=server.url, key_prefix=unique_prefix(request.node.name))
    else:
        settings = Settings(url=f"sqlite:///{tmp_path}/calmq.sqlite3")
    application = make_app(settings)
    try:
        yield application
    finally:
        application.close()


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[App]:
    application = make_app(Settings(url=f"sqlite:///{tmp_path}/calmq.sqlite3"))
    try:
        yield application
    finally:
        application.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """``serve(store_or_app, **create_app_kwargs)`` starts a dashboard; all stop at the end."""
    servers: list[LiveServer] = []

    def start(source: Any, **kwargs: Any) -> LiveServer:
        asgi = kwargs.pop("asgi", None) or create_app(source, **kwargs)
        server = LiveServer(asgi).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
