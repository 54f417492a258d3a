"""``calmq doctor``: check the store's environment and say what to fix, and why.

Each check returns a :class:`Check` (ok / warn / fail) with an explanation and a fix. The
command exits non-zero when any check fails, so it can gate a deploy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import time
from typing import Any

import click
import redis

from calmq.settings import Settings
from calmq.stores import REDIS_SCHEMES, open_store, redact_url, sqlite_path

OK, WARN, FAIL = "ok", "warn", "fail"

#: Jobs per second above which the embedded store is the wrong tool (one writer at a time).
SQLITE_COMFORT_JOBS = 50_000


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def check_redis(url: str, settings: Settings) -> list[Check]:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()  # connects; the second one measures the round trip alone
        started = time.perf_counter()
        client.ping()
        latency_ms = (time.perf_counter() - started) * 1000
    except redis.RedisError as exc:
        return [Check("connect", FAIL, f"cannot reach {redact_url(url)}: {exc}",
                      "start Redis or fix the URL (host, port, password, TLS)")]  # fmt: skip
    try:
        return _redis_checks(client, settings, latency_ms)
    finally:
        client.close()


def _redis_checks(client: redis.Redis, settings: Settings, latency_ms: float) -> list[Check]:
    info: dict[str, Any] = client.info()
    config: dict[str, Any] = {}
    # CONFIG may be disabled (managed Redis): those checks then say "unknown".
    with contextlib.suppress(redis.ResponseError):
        config = {str(k): v for k, v in client.config_get("*").items()}
    checks = [_version(info), _latency(latency_ms), _clock(client)]
    checks += [_eviction(config), _persistence(info), _keepalive(config)]
    checks += [_maxclients(config, info, settings), _scripts(client)]
    return checks


def _version(info: dict[str, Any]) -> Check:
    version = str(info.get("redis_version", "0"))
    major = int(version.split(".")[0] or 0)
    if major < 6:
        return Check("redis version", FAIL, f"Redis {version}", "upgrade to Redis 6.2 or newer")
    return Check("redis version", OK, f"Redis {version}")


def _latency(ms: float) -> Check:
    if ms > 5:
        return Check("latency", WARN, f"PING took {ms:.1f} ms",
                     "keep workers and Redis close: every claim and ack pays this")  # fmt: skip
    return Check("latency", OK, f"PING took {ms:.2f} ms")


def _clock(client: redis.Redis) -> Check:
    seconds, micros = client.time()
    skew = abs(seconds + micros / 1e6 - time.time())
    detail = f"this machine's clock is {skew:.3f} s off the Redis server's"
    if skew > 1:
        # Leases use the server clock only, so skew is not a correctness problem: say so.
        return Check("clock skew", WARN, detail,
                     "run NTP; leases use Redis TIME, but logs and delays read oddly")  # fmt: skip
    return Check("clock skew", OK, detail)


def _eviction(config: dict[str, Any]) -> Check:
    policy = config.get("maxmemory-policy")
    if policy is None:
        return Check("maxmemory-policy", WARN, "unknown (CONFIG GET not allowed)",
                     "make sure it is noeviction")  # fmt: skip
    if policy != "noeviction":
        return Check("maxmemory-policy", FAIL,
                     f"{policy}: Redis may silently delete queued jobs when memory is full",
                     "CONFIG SET maxmemory-policy noeviction (and in redis.conf)")  # fmt: skip
    return Check("maxmemory-policy", OK, "noeviction: a full Redis refuses writes, loses nothing")


def _persistence(info: dict[str, Any]) -> Check:
    if int(info.get("aof_enabled", 0)):
        return Check("persistence", OK, "AOF on: a Redis crash keeps acknowledged jobs")
    return Check("persistence", WARN,
                 "AOF off: a restart loses every job written since the last snapshot",
                 "appendonly yes, appendfsync everysec (docs/operations.md)")  # fmt: skip


def _keepalive(config: dict[str, Any]) -> Check:
    keepalive = int(config.get("tcp-keepalive", -1))
    if keepalive == -1:
        return Check("tcp-keepalive", WARN, "unknown", "set tcp-keepalive 60")
    if keepalive == 0 or keepalive > 120:
        return Check("tcp-keepalive", WARN,
                     f"{keepalive}: dead clients hold connections (and maxclients) for long",
                     "set tcp-keepalive 60")  # fmt: skip
    return Check("tcp-keepalive", OK, f"{keepalive} s")


def _maxclients(config: dict[str, Any], info: dict[str, Any], settings: Settings) -> Check:
    maxclients = int(config.get("maxclients", 0) or 0)
    connected = int(info.get("connected_clients", 0))
    detail = (
        f"{connected} connected of maxclients {maxclients or 'unknown'}; each producer"
        f" process opens up to {settings.pool_size}, each worker process up to 6"
    )
    if maxclients and connected > 0.8 * maxclients:
        fix = "raise maxclients or lower pool_size: past it, connections are refused"
        return Check("maxclients", FAIL, detail, fix)
    return Check("maxclients", OK, detail)


def _scripts(client: redis.Redis) -> Check:
    try:
        client.eval("return redis.call('TIME')[1]", 0)
    except redis.RedisError as exc:
        return Check("lua scripts", FAIL, f"cannot run Lua scripts: {exc}",
                     "allow EVAL/EVALSHA/SCRIPT for calmq's user (ACL)")  # fmt: skip
    return Check("lua scripts", OK, "EVAL works")


def check_sqlite(url: str, settings: Settings) -> list[Check]:
    path = sqlite_path(url)
    checks = [_sqlite_version()]
    if path == ":memory:":
        return [*checks, Check("file", WARN, "in-memory store: one process, lost at exit",
                               "use sqlite:///path for anything but tests")]  # fmt: skip
    store = open_store(url, settings)  # creates and migrates, with clear errors
    try:
        counts = store.counts()
    finally:
        store.close()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    checks.append(Check("journal mode", OK if mode == "wal" else FAIL, f"{mode}",
                        "" if mode == "wal" else "calmq sets WAL; something reset it"))  # fmt: skip
    checks.append(_sqlite_location(path))
    checks.append(_sqlite_load(sum(c.ready + c.scheduled for c in counts)))
    return checks


def _sqlite_version() -> Check:
    version = sqlite3.sqlite_version
    if sqlite3.sqlite_version_info < (3, 35):
        return Check("sqlite version", FAIL, f"SQLite {version} has no RETURNING",
                     "use a Python built with SQLite 3.35 or newer")  # fmt: skip
    return Check("sqlite version", OK, f"SQLite {version}")


def _sqlite_location(path: str) -> Check:
    real = os.path.realpath(path)
    fs_type = _filesystem_type(real)
    detail = f"{real} on {fs_type or 'unknown file system'}"
    if fs_type in {"nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "9p"}:
        return Check("file location", FAIL, detail + ": SQLite locks are unsafe on network disks",
                     "keep the file on a local disk, or move to Redis")  # fmt: skip
    return Check("file location", OK, detail)


def _filesystem_type(path: str) -> str | None:
    best, best_type = "", None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                mount_point, fs_type = parts[1], parts[2]
                if path.startswith(mount_point) and len(mount_point) > len(best):
                    best, best_type = mount_point, fs_type
    except OSError:
        return None
    return best_type


def _sqlite_load(waiting: int) -> Check:
    detail = f"{waiting} jobs waiting"
    if waiting > SQLITE_COMFORT_JOBS:
        return Check("load", WARN, detail + ": a large backlog for the embedded store",
                     "move to Redis when you need several machines, sustain thousands of"
                     " jobs/s, or see QueueUnavailable(reason='busy') on enqueue")  # fmt: skip
    return Check("load", OK, detail + "; move to Redis for several machines or thousands of"
                 " jobs/s (docs/operations.md)")  # fmt: skip


@click.command()
@click.option("--url", default=None, help="Store URL (default: CALMQ_URL or SQLite).")
@click.option("--json", "as_json", is_flag=True)
def doctor(url: str | None, as_json: bool) -> None:
    """Check the store's environment and explain how to fix what is wrong."""
    settings = Settings.from_env(url=url) if url else Settings.from_env()
    resolved = settings.resolved_url()
    scheme = resolved.split("://", 1)[0]
    checks = check_redis(resolved, settings) if scheme in REDIS_SCHEMES else check_sqlite(
        resolved, settings)  # fmt: skip
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(c) for c in checks]))
    else:
        click.echo(f"calmq doctor: {redact_url(resolved)}")
        marks = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL"}
        for c in checks:
            click.echo(f"  [{marks[c.status]}] {c.name}: {c.detail}")
            if c.fix and c.status != OK:
                click.echo(f"         fix: {c.fix}")
    if any(c.status == FAIL for c in checks):
        raise SystemExit(1)
