"""Redis key names: the only place in calmq that builds them.

Every key of a queue shares the hash tag ``{<prefix>:<queue>}``, so a queue lives in one
Redis Cluster slot and each Lua script touches one slot only. Per-job hashes are
``{<prefix>:<queue>}:job:<id>``; scripts derive them from the tag (``KEYS[1]``) so the
job id never has to be passed as a key.

Keys per control value are derived the same way, from the tag, by the scripts that use
them (their Lua headers say which); :func:`derived_key` builds the same names for tools and
tests: ``:uniq:<unique key>`` (STRING ``"<scope>:<job id>"``), ``:throttle:<key>`` and
``:rate:<key>`` (sliding-window ZSETs), ``:conc:<key>`` (ZSET job id -> lease deadline) and
``:lane:<lane>`` (ZSET of the ready jobs of one lane).

The worker registry is not per queue: its two keys share the hash tag
``{<prefix>:workers}`` (:func:`worker_keys`). A queue named ``workers`` shares that slot,
which is harmless: no queue key is named ``info`` or ``seen``.

The keys each script receives are listed here too (:meth:`QueueKeys.for_script`,
:meth:`WorkerKeys.for_script`), next to the names, so the order in ``KEYS`` and the
``-- KEYS[i]`` header of the Lua file can be checked against each other by a test.
"""

from __future__ import annotations

import dataclasses

from calmq.errors import ConfigurationError

MAX_QUEUE_NAME = 200


def validate_queue_name(queue: str) -> str:
    """Return ``queue`` if it can be part of a hash tag, else raise ``ConfigurationError``.

    Braces would break the hash tag (and so Cluster slot locality); whitespace makes keys
    hard to handle in redis-cli and logs.
    """
    if not isinstance(queue, str) or not queue:
        raise ConfigurationError(f"queue name must be a non-empty string, got {queue!r}")
    if len(queue) > MAX_QUEUE_NAME:
        raise ConfigurationError(f"queue name longer than {MAX_QUEUE_NAME} characters")
    if "{" in queue or "}" in queue or any(c.isspace() for c in queue):
        raise ConfigurationError(f"queue name must not contain braces or whitespace: {queue!r}")
    return queue


#: Kinds of per-value keys the scripts derive from a queue's tag.
DERIVED_KINDS = ("job", "uniq", "throttle", "rate", "conc", "lane")


def derived_key(tag: str, kind: str, value: str) -> str:
    """The key a script derives from ``tag`` for one value (a job id, a limit key, a lane)."""
    if kind not in DERIVED_KINDS:
        raise ValueError(f"unknown derived key kind {kind!r}")
    return f"{tag}:{kind}:{value}"


def queues_key(prefix: str) -> str:
    """The SET of every queue name (outside any hash tag: scripts never touch it)."""
    return f"{prefix}:queues"


@dataclasses.dataclass(frozen=True, slots=True)
class QueueKeys:
    """All key names of one queue, built once and cached by the store."""

    queue: str
    tag: str  # "{prefix:queue}": prefix of every key below, and of per-job hashes
    ready: str
    scheduled: str
    leases: str
    dead: str
    wake: str
    seq: str
    token: str
    paused: str
    lanes: str  # ZSET lane -> turn: lanes with ready jobs, in round-robin order
    config: str  # HASH max_ready, overflow: the queue's bound
    _scripts: dict[str, tuple[str, ...]] = dataclasses.field(repr=False, compare=False)

    def job(self, job_id: str) -> str:
        """The HASH of one job (scripts build the same name from ``tag``)."""
        return f"{self.tag}:job:{job_id}"

    def for_script(self, name: str) -> tuple[str, ...]:
        """The ``KEYS`` of script ``name``, in the order its Lua header declares."""
        return self._scripts[name]

    @property
    def all_keys(self) -> tuple[str, ...]:
        """Every fixed key of the queue (not the per-job hashes)."""
        return (
            self.ready,
            self.scheduled,
            self.leases,
            self.dead,
            self.wake,
            self.seq,
            self.token,
            self.paused,
            self.lanes,
            self.config,
        )


def queue_keys(prefix: str, queue: str) -> QueueKeys:
    """Build (and validate) the key names of ``queue`` under ``prefix``."""
    validate_queue_name(queue)
    tag = f"{{{prefix}:{queue}}}"
    ready, scheduled, leases, dead = (
        f"{tag}:{n}" for n in ("ready", "scheduled", "leases", "dead")
    )
    wake, seq, token, paused = (f"{tag}:{n}" for n in ("wake", "seq", "token", "paused"))
    lanes, config = f"{tag}:lanes", f"{tag}:config"
    # Each tuple mirrors the "-- KEYS[i]" lines of lua/<name>.lua; a test checks the counts.
    scripts = {
        "enqueue": (tag, ready, scheduled, wake, seq, lanes, config, dead),
        "claim": (tag, ready, scheduled, leases, dead, wake, seq, token, paused, lanes),
        "extend_leases": (tag, leases),
        "complete": (tag, leases, wake),
        "fail": (tag, leases, scheduled, dead, wake),
        "release": (tag, leases, ready, wake, lanes),
        "promote_due": (tag, scheduled, ready, wake, seq, lanes),
        "rescue_expired": (tag, leases, ready, dead, wake, lanes),
        "replay_dead": (tag, dead, ready, wake, seq, lanes),
        "purge_dead": (tag, dead),
        "cancel": (tag, ready, scheduled, lanes),
    }
    return QueueKeys(
        queue=queue,
        tag=tag,
        ready=ready,
        scheduled=scheduled,
        leases=leases,
        dead=dead,
        wake=wake,
        seq=seq,
        token=token,
        paused=paused,
        lanes=lanes,
        config=config,
        _scripts=scripts,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerKeys:
    """The keys of the worker registry, in one slot of their own (``{<prefix>:workers}``)."""

    tag: str
    info: str  # HASH worker id -> WorkerInfo as msgspec JSON
    seen: str  # ZSET worker id -> expiry ms (server clock): last heartbeat + its ttl_ms
    _scripts: dict[str, tuple[str, ...]] = dataclasses.field(repr=False, compare=False)

    def for_script(self, name: str) -> tuple[str, ...]:
        """The ``KEYS`` of registry script ``name``, in the order its Lua header declares."""
        return self._scripts[name]


def worker_keys(prefix: str) -> WorkerKeys:
    """The key names of the worker registry under ``prefix``."""
    tag = f"{{{prefix}:workers}}"
    info, seen = f"{tag}:info", f"{tag}:seen"
    # Mirrors the "-- KEYS[i]" lines of lua/<name>.lua; a test checks the counts.
    scripts: dict[str, tuple[str, ...]] = {
        name: (info, seen) for name in ("heartbeat", "list_workers", "forget_worker")
    }
    return WorkerKeys(tag=tag, info=info, seen=seen, _scripts=scripts)
