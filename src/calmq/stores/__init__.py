"""Open a store from a URL. Store modules are imported lazily, by scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from calmq.errors import ConfigurationError
from calmq.settings import Settings
from calmq.stores.base import Store

REDIS_SCHEMES = ("redis", "rediss", "unix")
SQLITE_SCHEMES = ("sqlite",)


def open_store(url: str | None = None, settings: Settings | None = None) -> Store:
    """Open the store a URL names.

    ``sqlite:///path/to/file``, ``sqlite:///:memory:`` or ``sqlite://:memory:`` for the
    embedded store; ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
    ``unix:///path/to/socket`` for Redis. With no URL, ``settings.resolved_url()`` decides.
    """
    settings = settings or Settings()
    url = url or settings.resolved_url()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in SQLITE_SCHEMES:
        from calmq.stores.sqlite.store import SqliteStore

        return SqliteStore(sqlite_path(url), settings=settings)
    if scheme in REDIS_SCHEMES:
        from calmq.stores.redis.store import RedisStore

        return RedisStore(url, settings=settings)
    raise ConfigurationError(
        f"unsupported store URL {redact_url(url)!r}: use sqlite:///path, redis://host:port/db,"
        " rediss://... or unix:///path"
    )


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:`` URL (``:memory:`` for an in-memory store)."""
    rest = url.split("://", 1)[1]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise ConfigurationError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path, sqlite:////absolute/path"
            " or sqlite://:memory:"
        )
    return rest[1:]


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{user}:***@{host}{port}"
    return parts._replace(netloc=netloc).geturl()
