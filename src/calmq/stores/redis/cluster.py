"""Redis Cluster: a lazily built, bounded ``RedisCluster`` and the fan-out ``wait_for_work``.

:class:`BoundedCluster` stands where ``redis.Redis`` stands for one server. It builds the
redis-py ``RedisCluster`` on first use (opening a store contacts no server, as for one
server; a cluster that cannot be reached surfaces as ``QueueUnavailable`` on the first call)
and gives every node a *blocking* pool of ``pool_size`` connections with ``pool_timeout``,
the short timeouts and no retries. redis-py still follows MOVED/ASK redirections and
refreshes its slot map after a connection error or MOVED.

No command calmq sends crosses slots: each script touches one queue's ``{prefix:queue}``
keys, the queue registry is one key, and multi-queue calls (``enqueue`` batches,
``counts``) go through redis-py's cluster pipeline, which splits them per node.

``wait_for_work`` on a cluster: BLPOP takes several keys only when they share a slot, and
each queue has its own slot. So :meth:`BoundedCluster.wait_for_wake` groups the wake lists
by slot and, when there is more than one group, sends one BLPOP per slot at once, each on a
private connection to the node that owns the slot, then waits (``select``) for the first
reply. Wake-up latency is the same as on one server (no rotation, no polling); the cost is
one connection per distinct slot per waiting thread, and the BLPOPs still in flight when one
answers are dropped by closing their connections. A wake-up token such a BLPOP may have
popped at that moment is lost, which is harmless: the worker claims from all its queues after
any wake-up and ``claim`` refills the wake list while jobs remain.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis._parsers.encoders import Encoder
from redis.backoff import NoBackoff
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.exceptions import AskError, ConnectionError, RedisError, TimeoutError
from redis.retry import Retry

from calmq.settings import Settings


class BoundedCluster:
    """A ``RedisCluster`` built on first use, with bounded blocking pools per node."""

    def __init__(
        self, hosts: Sequence[tuple[str, int]], options: dict[str, Any], settings: Settings
    ) -> None:
        self._hosts = list(hosts)
        self._options = dict(options)
        self._settings = settings
        self._lock = threading.Lock()
        self._cluster: RedisCluster | None = None
        # Scripts hash their source with the client's encoder; give them one that needs
        # no server (redis-py's default: utf-8, strict, bytes replies).
        untyped_encoder: Any = Encoder  # redis-py leaves it unannotated
        self._encoder: Encoder = untyped_encoder("utf-8", "strict", False)
        self._waiters: dict[str, list[Any]] = {}
        self._waiters_pid = os.getpid()
        self._closed = False

    # --- the client ------------------------------------------------------------------
    def get_encoder(self) -> Encoder:
        """The encoder scripts use to hash their source (no server needed)."""
        return self._encoder

    def register_script(self, source: str) -> Script:
        """A redis-py Script bound to this client; EVALSHA goes to the keys' slot, and
        SCRIPT LOAD (after NOSCRIPT) to every primary."""
        return Script(self, source)  # type: ignore[arg-type]  # duck-typed client

    @property
    def cluster(self) -> RedisCluster:
        """The redis-py cluster client, built (and the slot map read) on first use."""
        cluster = self._cluster
        if cluster is None:
            with self._lock:
                if self._cluster is None:
                    self._cluster = self._build()
                cluster = self._cluster
        return cluster

    def _build(self) -> RedisCluster:
        options = dict(self._options)
        retry = options.pop("retry", None) or Retry(NoBackoff(), 0)
        tls = options.pop("ssl", False)
        host, port = self._hosts[0]
        scheme = "rediss" if tls else "redis"
        return _Cluster(
            # With a URL, redis-py builds node pools from connection_pool_class: the only
            # way to get blocking (bounded, waiting pool_timeout) pools on every node.
            url=f"{scheme}://{_url_host(host)}:{port}",
            startup_nodes=[_cluster_node(h, p) for h, p in self._hosts[1:]],
            connection_pool_class=redis.BlockingConnectionPool,
            max_connections=self._settings.pool_size,
            timeout=self._settings.pool_timeout,
            retry=retry,
            # A slot without an owner fails that queue only, not the whole client.
            require_full_coverage=False,
            # Refresh the whole slot map on the first MOVED: after a failover every slot
            # of the failed primary moved at once.
            reinitialize_steps=1,
            **options,
        )

    def __getattr__(self, name: str) -> Any:
        # Everything else (evalsha, pipeline, hgetall, time, ...) is the cluster client's.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.cluster, name)

    def close(self) -> None:
        """Disconnect every node pool and wait connection. Idempotent."""
        with self._lock:
            self._closed = True
            cluster, self._cluster = self._cluster, None
            waiters, self._waiters = self._waiters, {}
        for conns in waiters.values():
            for conn in conns:
                conn.disconnect()
        if cluster is not None:
            cluster.close()

    # --- wait_for_work ---------------------------------------------------------------
    def wait_for_wake(self, keys: Sequence[str], seconds: float, slack: float) -> bool:
        """BLPOP ``keys`` (wake lists of any slots) for up to ``seconds``; True if one had a
        token. One BLPOP per slot, all in flight at once; the first reply wins."""
        cluster: Any = self.cluster  # redis-py leaves keyslot & co unannotated
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(int(cluster.keyslot(key)), []).append(key)
        pending: list[tuple[str, Any]] = []
        try:
            for slot, group in groups.items():
                node = cluster.nodes_manager.get_node_from_slot(slot)
                conn = self._take(node)
                pending.append((node.name, conn))
                conn.send_command("BLPOP", *group, f"{seconds:.3f}")
            return self._first_reply(pending, seconds + slack)
        except (ConnectionError, TimeoutError, AskError):
            # A node died or a slot moved (AskError covers MOVED): drop the connections and
            # reread the slot map so the next wait goes to the new owner.
            for _, conn in pending:
                conn.disconnect()
            pending = []
            with contextlib.suppress(RedisError, redis.RedisClusterException):
                cluster.nodes_manager.initialize()
            raise
        except BaseException:
            for _, conn in pending:
                conn.disconnect()
            pending = []
            raise
        finally:
            for name, conn in pending:
                self._give_back(name, conn)

    def _first_reply(self, pending: list[tuple[str, Any]], limit: float) -> bool:
        """Read replies as they come until one is a token (True) or all timed out (False).

        Connections whose BLPOP is still in flight when this returns True are disconnected
        (removed from ``pending``): their replies would otherwise be read by the next call.
        """
        waiting = list(pending)
        deadline = time.monotonic() + limit
        with selectors.DefaultSelector() as selector:
            for entry in waiting:
                selector.register(_socket_of(entry[1]), selectors.EVENT_READ, entry)
            while waiting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("BLPOP reply did not arrive in time")
                ready = [key.data for key, _ in selector.select(remaining)]
                woke = False
                for entry in ready:
                    selector.unregister(_socket_of(entry[1]))
                    waiting.remove(entry)
                    woke = entry[1].read_response(timeout=max(remaining, 0.001)) is not None or woke
                if woke:
                    for entry in waiting:
                        entry[1].disconnect()
                        pending.remove(entry)
                    return True
        return False

    def _take(self, node: Any) -> Any:
        with self._lock:
            if self._waiters_pid != os.getpid():
                # Forked: those sockets belong to the parent. Forget them, don't close them.
                self._waiters, self._waiters_pid = {}, os.getpid()
            idle = self._waiters.get(node.name)
            if idle:
                conn = idle.pop()
                if conn.host == node.host and conn.port == node.port:
                    return conn
                conn.disconnect()
        pool = node.redis_connection.connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        conn.connect()  # so the socket exists for select()
        return conn

    def _give_back(self, name: str, conn: Any) -> None:
        with self._lock:
            if not self._closed:
                self._waiters.setdefault(name, []).append(conn)
                return
        conn.disconnect()


class _EvalKeys:
    """Read the keys of EVAL/EVALSHA from the command itself.

    redis-py's cluster pipeline asks a node (``COMMAND GETKEYS``) for the keys of every
    EVALSHA it queues: one extra round trip per script call, made while the pipeline may
    hold that node's connection (with ``pool_size=1`` it waits for itself and fails).
    """

    def _get_command_keys(self, *args: Any) -> Any:
        if str(args[0]).upper() in ("EVAL", "EVALSHA") and len(args) > 2:
            return list(args[3 : 3 + int(args[2])])
        return super()._get_command_keys(*args)  # type: ignore[misc]


class _Pipeline(_EvalKeys, ClusterPipeline):
    """The cluster pipeline, with EVALSHA keys read locally."""


class _Cluster(_EvalKeys, RedisCluster):
    """The cluster client, with EVALSHA keys read locally (in its pipelines too)."""

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        # Same object, one overridden method: cheaper than copying redis-py's constructor
        # call (a dozen internal arguments) and safe, _Pipeline adds no state.
        pipe.__class__ = _Pipeline
        return pipe


def _socket_of(conn: Any) -> Any:
    sock = conn._sock  # redis-py keeps the socket there; select() needs it
    if sock is None:
        raise ConnectionError("wait connection lost its socket")
    return sock


def _cluster_node(host: str, port: int) -> Any:
    from redis.cluster import ClusterNode

    untyped: Any = ClusterNode  # redis-py leaves it unannotated
    return untyped(host, port)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
