"""``RedisStore``: the :class:`~calmq.stores.base.Store` contract on Redis.

Every state-changing method is one Lua script (``lua/*.lua``), so each is atomic and costs
one round trip; replies are flat arrays, decoded by :mod:`.replies` (which also classifies
error replies). Key names come from :mod:`.keys` only.

Connection discipline is the point of calmq: producers share a *blocking* pool of
``settings.pool_size`` connections with short timeouts and no retries, so when Redis is slow
or gone a call fails with :class:`~calmq.errors.QueueUnavailable` within
``settings.enqueue_bound`` instead of piling up connections or threads. ``wait_for_work``
blocks on its own connections, never on the producers' pool.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, cast

from redis.exceptions import (
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from calmq.errors import CalmqError, QueueUnavailable, StoreError
from calmq.job import (
    SCHEMA_VERSION,
    CancelOutcome,
    ClaimedJob,
    ClaimResult,
    EnqueueResult,
    FailOutcome,
    JobInfo,
    JobState,
    Lease,
    NewJob,
    QueueConfig,
    QueueCounts,
    QueueOverflow,
    RescueResult,
    WorkerInfo,
)
from calmq.settings import Settings
from calmq.stores import redact_url
from calmq.stores.base import (
    CAP_BLOCKING_WAIT,
    CAP_CLAIM_WITH_WAIT,
    CAP_MULTI_PROCESS,
    OnStored,
    enqueue_in_one_call,
    wait_then_claim_in_two_calls,
)
from calmq.stores.redis import browse, registry
from calmq.stores.redis.connection import open_connection
from calmq.stores.redis.keys import (
    QueueKeys,
    WorkerKeys,
    queue_keys,
    queues_key,
    worker_keys,
)
from calmq.stores.redis.replies import (
    corrupt_info,
    enqueue_args,
    enqueue_results,
    flatten,
    job_info,
    score,
    unavailable_reason,
)
from calmq.stores.redis.scripts import Arg, Scripts, read_reply

MAX_ERROR_CHARS = 2_000
MAX_TRACEBACK_CHARS = 20_000
#: Jobs per script call when replaying or purging a whole dead-letter store (scripts stay
#: O(batch): one call never blocks Redis for long).
ADMIN_BATCH = 1_000
#: Each claimed job comes back as this many entries of the flat reply of claim.lua.
CLAIM_FIELDS = 10
#: Most lanes (keys with limits or fairness) one claim visits; the round robin goes on in
#: the next claim.
LANE_SCAN = 200


class _Connection(Protocol):
    """The part of redis-py's (unannotated) ``Connection`` that ``wait_for_work`` uses."""

    def send_command(self, *args: Arg) -> None: ...
    def read_response(self, *, timeout: float) -> Any: ...
    def disconnect(self) -> None: ...


class RedisStore:
    """Jobs, leases and dead letters in Redis (one hash tag per queue, Cluster-safe)."""

    capabilities: frozenset[str]

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.display_url = redact_url(url)
        # Plain, TLS, Sentinel or Cluster: connection.py builds the bounded client and pool.
        self._conn = open_connection(url, self.settings)
        self.capabilities = frozenset({CAP_BLOCKING_WAIT, CAP_MULTI_PROCESS})
        if self._conn.cluster is None:  # a cluster's wait fans out per shard: no joined claim
            self.capabilities |= {CAP_CLAIM_WITH_WAIT}
        self._pool = self._conn.pool  # None on a cluster (one pool per node)
        self._client = self._conn.client
        self._scripts = Scripts(self._client)
        self._prefix = self.settings.key_prefix
        self._keys: dict[str, QueueKeys] = {}
        self._worker_keys = worker_keys(self._prefix)
        # Queues this instance already SADDed to <prefix>:queues (one SADD per queue).
        self._known_queues: set[str] = set()
        # Idle connections for wait_for_work, reused across threads; never the producers'.
        self._waiters: list[_Connection] = []
        self._waiters_lock = threading.Lock()
        self._waiters_pid = os.getpid()
        self._closed = False
        # Store calls in flight, each holding one pooled connection (a gauge for metrics).
        self._in_use = 0

    # --- plumbing -------------------------------------------------------------------
    def _queue(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = queue_keys(self._prefix, queue)
        return keys

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Map every redis-py error to a calmq error, keeping it as ``__cause__``."""
        self._in_use += 1
        try:
            yield
        except (RedisError, RedisClusterException) as exc:
            raise self._translate(exc) from exc
        finally:
            self._in_use -= 1

    def connections_in_use(self) -> int:
        """Store calls in flight right now, each holding one pooled connection."""
        return max(0, self._in_use)

    def _translate(self, exc: RedisError | RedisClusterException) -> CalmqError:
        message = str(exc)
        reason = unavailable_reason(exc, message)
        if reason is not None:
            return QueueUnavailable(
                f"Redis store {self.display_url} unavailable ({reason}): {message}",
                reason=reason,
            )
        if message.startswith("calmq:"):
            # Redis appends " script: <sha>, on @user_script:N." to errors raised in Lua.
            return StoreError(message.split(" script: ", 1)[0])
        return StoreError(f"Redis store {self.display_url}: {message}")

    def _run(self, name: str, keys: QueueKeys | WorkerKeys, args: Sequence[Arg]) -> Any:
        with self._guard():
            return self._scripts.run(name, keys.for_script(name), args)

    @staticmethod
    def _raise_errors(replies: list[Any]) -> None:
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply

    # --- producers -------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """Store new jobs; one script call per queue, all in one round trip."""
        if not jobs:
            return []
        queue = jobs[0].queue
        if self._pool is not None and queue in self._known_queues:
            for job in jobs:
                if job.queue != queue:
                    break
            else:
                return self._enqueue_one_queue(queue, jobs)
        by_queue: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(i)
        calls: list[tuple[str, Sequence[str], Sequence[Arg]]] = [
            ("enqueue", self._queue(q).for_script("enqueue"), enqueue_args([jobs[i] for i in p]))
            for q, p in by_queue.items()
        ]
        new_queues = [q for q in by_queue if q not in self._known_queues]
        with self._guard():
            if len(calls) == 1 and not new_queues:
                replies = [self._scripts.run(*calls[0])]
            else:
                before = [("SADD", queues_key(self._prefix), *new_queues)] if new_queues else []
                replies = self._scripts.run_many(calls, before=before)
                self._raise_errors(replies)
                self._known_queues.update(new_queues)
        results: list[EnqueueResult | None] = [None] * len(jobs)
        for positions, reply in zip(by_queue.values(), replies, strict=True):
            mine = enqueue_results([jobs[i] for i in positions], reply)
            for i, result in zip(positions, mine, strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _enqueue_one_queue(self, queue: str, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """The common case on one server: jobs of one queue this store has seen, so no
        SADD rides along; one EVALSHA on the lean path. ``_guard`` is written out here: the
        generator-based context manager costs about 1 µs, a few percent of an enqueue."""
        assert self._pool is not None
        keys = self._queue(queue).for_script("enqueue")
        args = enqueue_args(jobs)
        self._in_use += 1
        try:
            reply = self._scripts.run_pooled(self._pool, "enqueue", keys, args)
        except (RedisError, RedisClusterException) as exc:
            raise self._translate(exc) from exc
        finally:
            self._in_use -= 1
        return enqueue_results(jobs, reply)

    def enqueue_chunks(self, chunks: Iterable[Sequence[NewJob]], stored: OnStored) -> None:
        """``enqueue`` for each chunk, one round trip in all (two the first time this store
        sees the queue: it is registered first). On the lean path (one server, every chunk
        of one queue) each chunk is its own EVALSHA, written as soon as ``chunks`` yields
        it, so the caller builds chunk k+1 while Redis runs chunk k. Elsewhere (a cluster,
        several queues) the chunks go through ``enqueue`` together, as one batch."""
        it = iter(chunks)
        first = next(it, None)
        if first is None:
            return
        queue = first[0].queue if first else ""
        if self._pool is None or not queue:
            enqueue_in_one_call(self.enqueue, [first, *it], stored)
            return
        if queue not in self._known_queues:
            # Registered first, in a round trip of its own (once per queue and store), so
            # that a first bulk enqueue too overlaps its chunks with the server's work.
            with self._guard():
                self._client.sadd(queues_key(self._prefix), queue)
            self._known_queues.add(queue)
        keys = self._queue(queue).for_script("enqueue")
        sent: list[Sequence[NewJob]] = []
        rest: list[Sequence[NewJob]] = []  # from a chunk not all of `queue` on: sent after

        def calls() -> Iterator[tuple[Sequence[str], Sequence[Arg]]]:
            for chunk in itertools.chain((first,), it):
                if rest or not chunk or any(job.queue != queue for job in chunk):
                    rest.append(chunk)
                    continue
                sent.append(chunk)
                yield keys, enqueue_args(chunk)

        failed: list[ResponseError] = []

        def reply(i: int, value: Any) -> None:
            if isinstance(value, ResponseError):
                failed.append(value)  # that chunk changed nothing; the others stand
            else:
                stored(sent[i], enqueue_results(sent[i], value))

        self._in_use += 1
        try:
            self._scripts.run_pipelined(self._pool, "enqueue", calls(), reply)
            if failed:
                raise failed[0]
        except (RedisError, RedisClusterException) as exc:
            raise self._translate(exc) from exc
        finally:
            self._in_use -= 1
        if rest:
            enqueue_in_one_call(self.enqueue, rest, stored)

    # --- workers ---------------------------------------------------------------------
    def claim(self, queue: str, *, limit: int, lease_ms: int) -> ClaimResult:
        """Lease up to ``limit`` ready jobs (promoting due scheduled jobs first)."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        reply = self._run("claim", self._queue(queue), _claim_args(limit, lease_ms))
        return _claim_result(queue, reply)

    def extend_leases(self, queue: str, leases: Sequence[Lease], *, lease_ms: int) -> list[str]:
        """Push lease deadlines to now + ``lease_ms``; return the ids no longer ours."""
        if not leases:
            return []
        reply = self._run("extend_leases", self._queue(queue), [lease_ms, *flatten(leases)])
        return [raw.decode() for raw in reply]

    def complete(self, queue: str, leases: Sequence[Lease]) -> list[bool]:
        """Mark jobs succeeded where the lease is still ours."""
        if not leases:
            return []
        ttl_ms = math.ceil(self.settings.completed_ttl * 1000)
        reply = self._run("complete", self._queue(queue), [ttl_ms, *flatten(leases)])
        return [bool(flag) for flag in reply]

    def fail(
        self,
        queue: str,
        lease: Lease,
        *,
        error: str,
        traceback: str | None = None,
        retry_in_ms: int | None = None,
    ) -> FailOutcome:
        """Schedule a retry in ``retry_in_ms``, or dead-letter the job when it is None."""
        args: list[Arg] = [
            lease.id,
            lease.token,
            error[:MAX_ERROR_CHARS],
            (traceback or "")[:MAX_TRACEBACK_CHARS],
            "" if retry_in_ms is None else max(retry_in_ms, 0),
        ]
        args.append(math.ceil(self.settings.completed_ttl * 1000))
        reply = self._run("fail", self._queue(queue), args)
        return FailOutcome(reply.decode())

    def release(self, queue: str, leases: Sequence[Lease]) -> int:
        """Give leased jobs back to ready without spending an attempt."""
        if not leases:
            return 0
        ttl_ms = math.ceil(self.settings.completed_ttl * 1000)
        return int(self._run("release", self._queue(queue), [ttl_ms, *flatten(leases)]))

    def promote_due(self, queue: str, *, limit: int = 1000) -> int:
        """Move up to ``limit`` due scheduled jobs to ready."""
        if limit < 1:
            return 0
        return int(self._run("promote_due", self._queue(queue), [limit]))

    def rescue_expired(self, queue: str, *, limit: int = 1000) -> RescueResult:
        """Requeue (or dead-letter) jobs whose lease passed; drop dead jobs past dead_ttl."""
        if limit < 1:
            return RescueResult([], [])
        ttl_ms = math.ceil(self.settings.dead_ttl * 1000)
        done_ms = math.ceil(self.settings.completed_ttl * 1000)
        args = [limit, ttl_ms, SCHEMA_VERSION, done_ms]
        reply = self._run("rescue_expired", self._queue(queue), args)
        requeued = int(reply[0])
        ids = [raw.decode() for raw in reply[1:]]
        return RescueResult(ids[:requeued], ids[requeued:])

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """BLPOP the wake lists of ``queues`` for up to ``timeout`` seconds.

        Runs on a connection of its own (never the producers' pool) whose read timeout is
        the BLPOP timeout plus ``command_timeout`` + 1 s. BLPOP 0 would block forever, so
        the timeout is rounded up to whole milliseconds, at least one.
        """
        if not queues:
            raise ValueError("wait_for_work needs at least one queue")
        wake_keys = [self._queue(q).wake for q in queues]
        seconds = max(math.ceil(timeout * 1000), 1) / 1000
        if self._conn.cluster is not None:  # one BLPOP per slot, in parallel (cluster.py)
            with self._guard():
                slack = self.settings.command_timeout + 1
                return self._conn.cluster.wait_for_wake(wake_keys, seconds, slack)
        woken, _ = self._blpop(wake_keys, seconds)
        return woken is not None

    def wait_then_claim(
        self, queues: Sequence[str], timeout: float, queue: str, *, limit: int, lease_ms: int
    ) -> ClaimResult:
        """:meth:`wait_for_work`'s BLPOP and the claim's EVALSHA in one round trip.

        Redis keeps a blocked client's next commands until its BLPOP returns, so the claim
        runs on the server the moment a wake-up (or the timeout) ends the wait: a woken
        worker gets its jobs without another round trip. After a script-cache flush
        (NOSCRIPT: the claim did not run) it claims again through :meth:`claim`, which loads
        the script. On a cluster (the wait fans out per shard) the wait, then the claim.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        if CAP_CLAIM_WITH_WAIT not in self.capabilities:
            return wait_then_claim_in_two_calls(
                self, queues, timeout, queue, limit=limit, lease_ms=lease_ms
            )
        if not queues:
            raise ValueError("wait_then_claim needs at least one queue")
        keys = self._queue(queue).for_script("claim")
        _, reply = self._blpop(
            [self._queue(q).wake for q in queues],
            max(math.ceil(timeout * 1000), 1) / 1000,
            lambda conn: self._scripts.send(conn, "claim", keys, _claim_args(limit, lease_ms)),
        )
        if isinstance(reply, NoScriptError):
            return self.claim(queue, limit=limit, lease_ms=lease_ms)
        return _claim_result(queue, reply)

    def _blpop(
        self,
        wake_keys: Sequence[str],
        seconds: float,
        send_next: Callable[[Any], None] | None = None,
    ) -> tuple[Any, Any]:
        """BLPOP ``wake_keys`` on a waiter connection; ``send_next(conn)`` may write one
        more command behind it (Redis runs it when the BLPOP returns). Returns both replies
        (the second ``None`` without ``send_next``; NOSCRIPT as its error, another error
        reply raised)."""
        conn = self._take_waiter()
        try:
            with self._guard():
                conn.send_command("BLPOP", *wake_keys, f"{seconds:.3f}")
                if send_next is not None:
                    send_next(conn)
                woken = conn.read_response(timeout=seconds + self.settings.command_timeout + 1)
                if send_next is None:
                    return woken, None
                reply = read_reply(conn)
                if isinstance(reply, ResponseError) and not isinstance(reply, NoScriptError):
                    raise reply
                return woken, reply
        except BaseException:
            # An interrupted call leaves a reply in flight: the connection is unusable.
            conn.disconnect()
            raise
        finally:
            self._return_waiter(conn)

    def _take_waiter(self) -> _Connection:
        with self._waiters_lock:
            if self._waiters_pid != os.getpid():
                # Forked: those sockets belong to the parent. Forget them, don't close them.
                self._waiters, self._waiters_pid = [], os.getpid()
            if self._waiters:
                return self._waiters.pop()
        # Same URL and options as the pool, but outside it: a BLPOP must never hold a
        # connection producers are waiting for.
        return cast(_Connection, self._conn.new_connection())

    def _return_waiter(self, conn: _Connection) -> None:
        with self._waiters_lock:
            if not self._closed:
                self._waiters.append(conn)
                return
        conn.disconnect()

    # --- admin -----------------------------------------------------------------------
    def get_job(self, queue: str, job_id: str) -> JobInfo | None:
        """The job with that id in that queue, or None."""
        keys = self._queue(queue)
        with self._guard():
            fields = cast(dict[bytes, bytes], self._client.hgetall(keys.job(job_id)))
        return job_info(queue, job_id, fields) if fields else None

    def list_jobs(
        self, queue: str, state: JobState, *, offset: int = 0, limit: int = 100
    ) -> list[JobInfo]:
        """Jobs of one state, in claim / due / deadline order, or newest first for dead."""
        keys = self._queue(queue)
        with self._guard():
            ids = browse.list_ids(self._client, keys, state, max(offset, 0), limit)
            pipe = self._client.pipeline(transaction=False)
            for raw in ids:
                pipe.hgetall(keys.job(raw.decode()))
            hashes = pipe.execute(raise_on_error=False) if ids else []
        jobs = []
        for raw, fields in zip(ids, hashes, strict=True):
            job_id = raw.decode()
            if isinstance(fields, dict) and fields.get(b"state") and b"payload" in fields:
                jobs.append(job_info(queue, job_id, fields))
            else:  # missing or foreign record: show it, with the reason, rather than hide it
                jobs.append(corrupt_info(queue, job_id, state, fields))
        return jobs

    def counts(self, queues: Sequence[str] | None = None) -> list[QueueCounts]:
        """Jobs per state, for the given queues or every known queue."""
        names = self.queues() if queues is None else list(queues)
        with self._guard():
            sizes = browse.state_sizes(self._client, [self._queue(q) for q in names])
        return [QueueCounts(name, *size) for name, size in zip(names, sizes, strict=True)]

    def queues(self) -> list[str]:
        """Names of every queue that ever received a job, sorted."""
        with self._guard():
            members = cast(set[bytes], self._client.smembers(queues_key(self._prefix)))
        return sorted(raw.decode() for raw in members)

    def pause(self, queue: str) -> None:
        """Stop claims from ``queue`` (claim.lua returns nothing while the key exists)."""
        with self._guard():
            self._client.set(self._queue(queue).paused, 1)

    def resume(self, queue: str) -> None:
        """Let claims start again and wake one idle worker (it chains the wake-up on)."""
        keys = self._queue(queue)
        with self._guard():
            self._client.delete(keys.paused)
            # The wake list holds at most one element; a racing second one is only a
            # spurious wake-up, which wait_for_work allows.
            if not self._client.llen(keys.wake):
                self._client.rpush(keys.wake, 1)

    def cancel(self, queue: str, job_id: str) -> CancelOutcome:
        """Remove a queued job, or revoke the lease of a running one (cancel.lua)."""
        ttl_ms = math.ceil(self.settings.completed_ttl * 1000)
        reply = self._run("cancel", self._queue(queue), [job_id, ttl_ms])
        return CancelOutcome(reply.decode())

    def set_queue_limit(
        self, queue: str, max_ready: int | None, overflow: QueueOverflow = QueueOverflow.REJECT
    ) -> None:
        """Bound the ready jobs of ``queue`` (``None`` removes the bound)."""
        keys = self._queue(queue)
        with self._guard():
            if max_ready is None:
                self._client.delete(keys.config)
                return
            mapping = {"max_ready": max_ready, "overflow": overflow.value}
            self._client.hset(keys.config, mapping=mapping)
            self._client.sadd(queues_key(self._prefix), queue)

    def queue_config(self, queue: str) -> QueueConfig:
        """The queue's paused state and bound."""
        keys = self._queue(queue)
        with self._guard():
            pipe = self._client.pipeline(transaction=False)
            pipe.exists(keys.paused)
            pipe.hmget(keys.config, ["max_ready", "overflow"])
            paused, (max_ready, overflow) = pipe.execute()
        if max_ready is None:
            return QueueConfig(queue, bool(paused))
        return QueueConfig(queue, bool(paused), int(max_ready), QueueOverflow(overflow.decode()))

    def replay_dead(self, queue: str, job_ids: Sequence[str] | None = None) -> int:
        """Put dead jobs back to ready with fresh attempts; ``None`` means all."""
        return self._dead_batches("replay_dead", queue, job_ids)

    def purge_dead(self, queue: str, job_ids: Sequence[str] | None = None) -> int:
        """Delete dead jobs for good; ``None`` means all."""
        return self._dead_batches("purge_dead", queue, job_ids)

    def _dead_batches(self, name: str, queue: str, job_ids: Sequence[str] | None) -> int:
        """Run a dead-letter script in batches of ``ADMIN_BATCH`` so each call stays short."""
        keys = self._queue(queue)
        if job_ids is not None:
            ids = list(job_ids)
            calls: list[tuple[str, Sequence[str], Sequence[Arg]]] = [
                (name, keys.for_script(name), [ADMIN_BATCH, *ids[i : i + ADMIN_BATCH]])
                for i in range(0, len(ids), ADMIN_BATCH)
            ]
            if not calls:
                return 0
            with self._guard():
                replies = self._scripts.run_many(calls)
                self._raise_errors(replies)
            return sum(int(n) for n in replies)
        total = 0
        while True:  # "all": the oldest ADMIN_BATCH dead jobs per call until none are left
            done = int(self._run(name, keys, [ADMIN_BATCH]))
            total += done
            if done < ADMIN_BATCH:
                return total

    # --- worker registry ---------------------------------------------------------------
    def heartbeat(self, worker: WorkerInfo) -> None:
        """Record ``worker`` until ``worker.ttl_ms`` from now on Redis's clock (heartbeat.lua,
        which also drops a few expired records)."""
        self._run("heartbeat", self._worker_keys, registry.heartbeat_args(worker))

    def workers(self) -> list[WorkerInfo]:
        """Live workers sorted by id, ``seen_at_ms`` from the stored expiry (list_workers.lua)."""
        reply = self._run("list_workers", self._worker_keys, [registry.PRUNE_LIMIT])
        return registry.parse_workers(reply)

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker's record at once (forget_worker.lua). Idempotent."""
        self._run("forget_worker", self._worker_keys, [worker_id])

    def now_ms(self) -> int:
        """Redis's clock (TIME), in ms since the epoch."""
        with self._guard():
            seconds, micros = self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def close(self) -> None:
        """Disconnect the pool and the wait connections. Idempotent."""
        with self._waiters_lock:
            self._closed = True
            waiters, self._waiters = self._waiters, []
        for conn in waiters:
            conn.disconnect()
        self._conn.close()


def _claim_args(limit: int, lease_ms: int) -> tuple[int, int, int, int, int]:
    """claim.lua's ARGV: limit, lease, promote limit, schema version, lane scan."""
    return (limit, lease_ms, max(limit, 100), SCHEMA_VERSION, LANE_SCAN)


def _claim_result(queue: str, reply: Any) -> ClaimResult:
    """claim.lua's reply as a :class:`ClaimResult`."""
    now, next_due, deadline = int(reply[0]), reply[1], int(reply[2])
    jobs = [
        ClaimedJob(
            id=reply[i].decode(),
            queue=queue,
            task=reply[i + 1].decode(),
            payload=reply[i + 2],
            token=str(reply[i + 3]),
            attempt=int(reply[i + 4]),
            max_attempts=int(reply[i + 5]),
            priority=int(reply[i + 6]),
            enqueued_at_ms=int(reply[i + 7]),
            lease_deadline_ms=deadline,
            claimed_at_ms=now,
            ready_at_ms=int(reply[i + 8]),
            schema_version=int(reply[i + 9]),
        )
        for i in range(3, len(reply), CLAIM_FIELDS)
    ]
    return ClaimResult(jobs, next_due_ms=score(next_due) if next_due else None, now_ms=now)
