"""Open a store from a URL. Store modules are imported lazily, by scheme."""

from __future__ import annotations

import re

from calmq.errors import ConfigurationError
from calmq.settings import Settings
from calmq.stores.base import Store

REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)
SQLITE_SCHEMES = ("sqlite",)


def open_store(url: str | None = None, settings: Settings | None = None) -> Store:
    """Open the store a URL names.

    ``sqlite:///path/to/file``, ``sqlite:///:memory:`` or ``sqlite://:memory:`` for the
    embedded store. For Redis:

    * ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
      ``unix:///path/to/socket``: one server;
    * ``redis+sentinel://[user:password@]host1:port1,host2:port2/master_name[/db]``: the
      primary Sentinel names, followed across failovers;
    * ``redis+cluster://[user:password@]host1:port1,host2:port2``: a Redis Cluster, from
      any of its nodes (one queue lives in one hash slot).

    ``rediss+sentinel://`` and ``rediss+cluster://`` use TLS. TLS files come from query
    parameters (``?ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...&ssl_cert_reqs=required``)
    or the ``redis_tls_*`` settings; the user and password from the URL or the
    ``redis_username`` / ``redis_password`` settings. See docs/scaling.md.
    With no URL, ``settings.resolved_url()`` decides.
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
        " rediss://..., unix:///path, redis+sentinel://host:port,.../master or"
        " redis+cluster://host:port,..."
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


_USERINFO = re.compile(r"^([a-z0-9+.-]+://)([^/?#]*)@", re.IGNORECASE)  # greedy: last @
_SECRET_QUERY = re.compile(r"([?&][^=&#]*password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with every password (in the user info, or a ``...password=`` query parameter)
    replaced by ``***``, safe for logs and error messages. Works on multi-host URLs."""
    match = _USERINFO.match(url)
    if match is not None and ":" in match.group(2):
        user = match.group(2).split(":", 1)[0]
        url = f"{match.group(1)}{user}:***@{url[match.end() :]}"
    return _SECRET_QUERY.sub(r"\1***", url)
