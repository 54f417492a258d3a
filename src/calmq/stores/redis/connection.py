"""Redis connections for every topology: URL parsing and client/pool construction.

One function, :func:`open_connection`, turns a store URL into a :class:`RedisConnection`:
the client producers share, the pool behind it, and a factory for the private blocking
connections of ``wait_for_work``. Four URL forms::

    redis://[user:password@]host:port/db          one server (or a proxy)
    rediss://...                                  the same over TLS
    unix:///path/to/socket                        a local socket
    redis+sentinel://[user:password@]h1:p1,h2:p2/master_name[/db]
    redis+cluster://[user:password@]h1:p1,h2:p2   seed nodes of a Redis Cluster

``rediss+sentinel://`` and ``rediss+cluster://`` use TLS to the data nodes (and to the
sentinels). TLS files come from query parameters (``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``) or the ``redis_tls_*`` settings;
the ACL user and password from the URL or ``redis_username`` / ``redis_password``.
Sentinels may have their own credentials: ``?sentinel_username=...&sentinel_password=...``
or ``redis_sentinel_password``.

Connection discipline is the same on every topology: ``settings.pool_size`` connections per
node at most, callers beyond it wait ``pool_timeout`` and then fail, the same connect and
command timeouts, and no redis-py retries (``Retry(NoBackoff(), 0)``). On a cluster, redis-py
still follows MOVED/ASK redirections (a bounded number) and refreshes its slot map after a
connection error: that is routing, not a retry of a failed command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import redis
from redis.backoff import NoBackoff
from redis.connection import ConnectionPool, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from calmq.errors import ConfigurationError
from calmq.settings import Settings
from calmq.stores import redact_url

if TYPE_CHECKING:
    from calmq.stores.redis.cluster import BoundedCluster

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: Query parameters accepted by sentinel and cluster URLs (plain URLs go to redis-py as is).
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclasses.dataclass(frozen=True)
class RedisTarget:
    """A parsed sentinel or cluster URL (never printed: it holds the password)."""

    topology: str  # "sentinel" or "cluster"
    hosts: tuple[tuple[str, int], ...]
    service: str | None = None  # the sentinel master name
    db: int = 0
    username: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False
    options: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)


def parse_multi_host_url(url: str) -> RedisTarget:
    """Parse a ``redis+sentinel://`` or ``redis+cluster://`` URL; raise ConfigurationError."""
    shown = redact_url(url)
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hostlist = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    hosts = tuple(_host_port(item, shown) for item in hostlist.split(",") if item)
    if not hosts:
        raise ConfigurationError(f"bad Redis URL {shown!r}: no host:port")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(options) - set(TLS_OPTIONS) - set(SENTINEL_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"bad Redis URL {shown!r}: unknown option(s) {', '.join(sorted(unknown))}; known: "
            + ", ".join(TLS_OPTIONS + SENTINEL_OPTIONS)
        )
    parts = [p for p in path.split("/") if p]
    tls = scheme.startswith("rediss")
    if scheme in SENTINEL_SCHEMES:
        if not 1 <= len(parts) <= 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ConfigurationError(
                f"bad Sentinel URL {shown!r}: use redis+sentinel://host:port,host:port/"
                "master_name[/db]"
            )
        db = int(parts[1]) if len(parts) == 2 else 0
        return RedisTarget(
            "sentinel", hosts, unquote(parts[0]), db, username, password, tls, options
        )
    if parts not in ([], ["0"]) or set(options) & set(SENTINEL_OPTIONS):
        raise ConfigurationError(
            f"bad Cluster URL {shown!r}: use redis+cluster://host:port,host:port (no database"
            " number and no sentinel options: a cluster has only db 0)"
        )
    return RedisTarget("cluster", hosts, None, 0, username, password, tls, options)


def _host_port(item: str, shown: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep:
        host, port = item, "26379" if "sentinel" in shown.split("://")[0] else "6379"
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"bad Redis URL {shown!r}: {item!r} is not host:port")
    return host, int(port)


def base_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every topology: short timeouts, no retries."""
    return {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.command_timeout,
        "health_check_interval": 30,
        # No retries: a retry would silently double the documented bound.
        "retry": Retry(NoBackoff(), 0),
        # No CLIENT SETINFO on connect: two round trips each new connection would pay.
        "driver_info": None,
    }


def tls_options(settings: Settings, options: dict[str, str], shown: str) -> dict[str, Any]:
    """redis-py ``ssl_*`` keyword arguments: URL query parameters win over settings."""
    found: dict[str, Any] = {
        "ssl_ca_certs": settings.redis_tls_ca_certs,
        "ssl_certfile": settings.redis_tls_certfile,
        "ssl_keyfile": settings.redis_tls_keyfile,
        "ssl_cert_reqs": settings.redis_tls_cert_reqs,
    }
    found.update({k: v for k, v in options.items() if k in TLS_OPTIONS})
    if "ssl_check_hostname" in found:
        found["ssl_check_hostname"] = str(found["ssl_check_hostname"]).lower() in (
            "1",
            "true",
            "yes",
        )
    check_tls_files(found, shown)
    return {k: v for k, v in found.items() if v is not None}


def check_tls_files(options: dict[str, Any], shown: str) -> None:
    """Fail at open time, with the file named, rather than on the first connect."""
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        path = options.get(name)
        if path and not os.path.isfile(path):
            raise ConfigurationError(f"Redis store {shown}: {name} file {path!r} does not exist")
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None and str(reqs).lower() not in ("none", "optional", "required"):
        raise ConfigurationError(
            f"Redis store {shown}: ssl_cert_reqs must be none, optional or required, got {reqs!r}"
        )


def take_connection(pool: ConnectionPool) -> tuple[Any, bool]:
    """A connection from a blocking pool, as ``BlockingConnectionPool.get_connection``
    gives it, without its per-call bookkeeping (deprecation shim, observability records),
    which costs more than a whole enqueue script on the server.

    The same guarantees: at most ``max_connections``, a wait of at most ``pool.timeout``
    ending in ``ConnectionError("No connection available.")``, fork safety, and a connection
    that is connected and has no unread data (else it is reconnected once). Pools in a mode
    the shortcut does not cover (maintenance, client-side cache, RESP3) take redis-py's own
    path. Returns the connection and whether the shortcut took it: hand both to
    :func:`give_back`, so a connection goes back the way it came even if the pool's mode
    changed meanwhile.
    """
    untyped: Any = pool  # redis-py leaves the pool's attributes unannotated
    if not _plain(untyped):
        return untyped.get_connection(), False
    untyped._checkpid()
    try:
        conn = untyped.pool.get(block=True, timeout=untyped.timeout)
    except queue.Empty:
        raise ConnectionError("No connection available.") from None
    try:
        if conn is None:  # a free slot: open a connection in it
            conn = untyped.make_connection()
        conn.connect()
        try:
            if conn.can_read():  # leftover reply, or closed by the server
                raise ConnectionError("Connection has data")
        except (ConnectionError, TimeoutError, OSError):
            conn.disconnect()
            conn.connect()
            if conn.can_read():
                raise ConnectionError("Connection not ready") from None
    except BaseException:
        give_back(pool, conn, shortcut=True)
        raise
    return conn, True


def give_back(pool: ConnectionPool, conn: Any, *, shortcut: bool) -> None:
    """Return a connection from :func:`take_connection` (``None``: its slot only), as
    ``BlockingConnectionPool.release`` does; ``shortcut``: what take_connection said."""
    untyped: Any = pool
    if not shortcut:
        untyped.release(conn)
        return
    untyped._checkpid()
    if conn is not None and not untyped.owns_connection(conn):
        # Another process's (or, with Sentinel, an old primary's): drop it, keep the slot.
        conn.disconnect()
        conn = None
    elif conn is not None and getattr(conn, "should_reconnect", _never)():
        conn.disconnect()  # told to by a server push (redis-py >= 6)
    with contextlib.suppress(queue.Full):
        untyped.pool.put_nowait(conn)


def _never() -> bool:
    return False


def _plain(pool: Any) -> bool:
    """True for a pool the shortcut covers: not in maintenance, no client-side cache, RESP2
    (with RESP3, redis-py >= 8 may enable maintenance notifications, whose pushes can wait on
    an idle connection: the shortcut would take them for unread data)."""
    if getattr(pool, "_in_maintenance", False) or getattr(pool, "cache", None):
        return False
    return str(pool.connection_kwargs.get("protocol") or 2) == "2"


class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """A Sentinel-managed pool that *blocks* (up to ``timeout``) when all connections are
    taken, like the plain store's pool, instead of opening more."""


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary Sentinel names *now*, however it (re)connects.

    redis-py asks the sentinels only in ``connect()``; a connection that reconnects on its
    own (``send_command`` on a closed socket, as ``wait_for_work``'s private connections
    do) would otherwise dial its last address, or ``localhost:6379`` if it never had one.
    """

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self._sock:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health, retry_socket_connect)

    def _connect_retry(self) -> None:
        # The address is resolved above; redis-py's version would ask the sentinels twice.
        self.connect_check_health(self.connection_pool.check_connection, False)


class PrimarySSLConnection(PrimaryConnection, SSLConnection):
    """:class:`PrimaryConnection` over TLS."""


class RedisConnection:
    """The producers' client and pool, plus private connections for blocking waits."""

    #: The client store methods call (``redis.Redis``, or a bounded cluster client).
    client: Any
    #: The producers' pool (standalone and Sentinel); None on a cluster (one pool per node).
    pool: ConnectionPool | None
    #: The cluster client, on a cluster only (``wait_for_work`` fans out with it).
    cluster: BoundedCluster | None = None

    def __init__(
        self, client: Any, pool: ConnectionPool | None, closers: Sequence[Callable[[], object]]
    ) -> None:
        self.client = client
        self.pool = pool
        self._closers = list(closers)

    def new_connection(self) -> Any:
        """A connection outside the producers' pool (same address, TLS, auth, timeouts)."""
        assert self.pool is not None, "cluster waits use BoundedCluster.wait_connection"
        return self.pool.connection_class(**self.pool.connection_kwargs)

    def close(self) -> None:
        """Disconnect everything. Idempotent."""
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer()


def open_connection(url: str, settings: Settings) -> RedisConnection:
    """The connections for ``url``; nothing is contacted until the first command."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in SENTINEL_SCHEMES:
        return _sentinel(parse_multi_host_url(url), settings, redact_url(url))
    if scheme in CLUSTER_SCHEMES:
        from calmq.stores.redis.cluster import BoundedCluster

        target = parse_multi_host_url(url)
        options = _node_options(target, settings, redact_url(url))
        cluster = BoundedCluster(target.hosts, options, settings)
        conn = RedisConnection(cluster, None, [cluster.close])
        conn.cluster = cluster
        return conn
    return _standalone(url, settings)


def _standalone(url: str, settings: Settings) -> RedisConnection:
    shown = redact_url(url)
    options = base_options(settings)
    options["max_connections"] = settings.pool_size
    options["timeout"] = settings.pool_timeout  # wait for a free connection at most this long
    try:
        pool = redis.BlockingConnectionPool.from_url(url, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"bad Redis URL {shown!r}: {redact_url(str(exc))}") from None
    kwargs = pool.connection_kwargs
    if issubclass(pool.connection_class, UnixDomainSocketConnection):
        _fill_auth(kwargs, settings)
        return RedisConnection(redis.Redis(connection_pool=pool), pool, [pool.disconnect])
    kwargs["socket_keepalive"] = True  # TCP only
    _fill_auth(kwargs, settings)
    if scheme_is_tls(url):
        # URL query parameters were parsed by redis-py; settings only fill what is missing.
        for key, value in tls_options(settings, {}, shown).items():
            kwargs.setdefault(key, value)
        check_tls_files(kwargs, shown)
    return RedisConnection(redis.Redis(connection_pool=pool), pool, [pool.disconnect])


def scheme_is_tls(url: str) -> bool:
    """Whether the URL asks for TLS to the data nodes."""
    return url.split("://", 1)[0].lower().startswith("rediss")


def _fill_auth(kwargs: dict[str, Any], settings: Settings) -> None:
    if kwargs.get("username") is None and settings.redis_username:
        kwargs["username"] = settings.redis_username
    if kwargs.get("password") is None and settings.redis_password:
        kwargs["password"] = settings.redis_password


def _node_options(target: RedisTarget, settings: Settings, shown: str) -> dict[str, Any]:
    """Keyword arguments for connections to data nodes (primary, replicas, cluster nodes)."""
    options = base_options(settings)
    options["socket_keepalive"] = True
    options["username"] = target.username
    options["password"] = target.password
    _fill_auth(options, settings)
    if target.tls:
        options["ssl"] = True
        options.update(tls_options(settings, target.options, shown))
    return {k: v for k, v in options.items() if v is not None or k == "driver_info"}


def _sentinel(target: RedisTarget, settings: Settings, shown: str) -> RedisConnection:
    assert target.service is not None
    node = _node_options(target, settings, shown)
    sentinel_kwargs: dict[str, Any] = {
        k: v for k, v in node.items() if k not in ("username", "password")
    }
    sentinel_kwargs["max_connections"] = settings.pool_size
    sentinel_kwargs["username"] = target.options.get("sentinel_username")
    sentinel_kwargs["password"] = (
        target.options.get("sentinel_password") or settings.redis_sentinel_password
    )
    sentinel_kwargs.pop("ssl", None)
    if target.tls:
        sentinel_kwargs["ssl"] = True
    untyped_sentinel: Any = Sentinel  # redis-py leaves these unannotated
    untyped_pool: Any = BlockingSentinelConnectionPool
    sentinel = untyped_sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs)
    pool = untyped_pool(
        target.service,
        sentinel,
        connection_class=PrimarySSLConnection if target.tls else PrimaryConnection,
        max_connections=settings.pool_size,
        timeout=settings.pool_timeout,
        db=target.db,
        **node,
    )
    client = redis.Redis(connection_pool=pool)
    return RedisConnection(client, pool, [pool.disconnect, sentinel.close])
