"""The Lua scripts of the Redis store: loading, header parsing and calling.

Each ``lua/<name>.lua`` file is one atomic store operation. Its header declares every
``KEYS[i]`` it takes; :func:`declared_key_count` parses that so a test (and a cheap check
on every call) can prove the Python side passes exactly that many keys.

Helpers shared by several scripts live in ``lua/lib/<name>.lua``, one ``local function``
each. A script line ``-- @include lib/<name>.lua`` is replaced by that file's text when the
script is loaded (:func:`expand_includes`), so every loaded script is still one
self-contained text run with one EVALSHA. A helper may include another; each file's text
appears once per script, at its first include.

Scripts run with EVALSHA. After ``SCRIPT FLUSH`` or a Redis restart the server answers
NOSCRIPT; the script is then loaded and the call retried once. That is safe because a
NOSCRIPT reply means the script did not run at all.

:meth:`Scripts.run_pooled` is the lean path for the hottest call (enqueue on one server):
it takes a connection from the store's bounded pool itself, sends the packed EVALSHA and
reads the reply, skipping redis-py's generic command machinery (per-call retry wrapper,
observability hooks, argument re-encoding), which cost more than the script itself.
:meth:`Scripts.run_pipelined` does the same for several calls of one script in one round
trip, each written as soon as the caller has built it (bulk enqueue).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any

import hiredis
import redis
from redis.commands.core import Script
from redis.connection import ConnectionPool
from redis.exceptions import DataError, NoScriptError, ResponseError

from calmq.stores.redis.connection import give_back, take_connection

#: Scripts of one queue: their KEYS come from ``QueueKeys.for_script``.
QUEUE_SCRIPTS = (
    "enqueue",
    "claim",
    "extend_leases",
    "complete",
    "fail",
    "release",
    "promote_due",
    "rescue_expired",
    "replay_dead",
    "purge_dead",
    "cancel",
)
#: Scripts of the worker registry: their KEYS come from ``WorkerKeys.for_script``.
REGISTRY_SCRIPTS = ("heartbeat", "list_workers", "forget_worker")
SCRIPT_NAMES = QUEUE_SCRIPTS + REGISTRY_SCRIPTS

_KEY_LINE = re.compile(r"^--\s*KEYS\[(\d+)\]", re.MULTILINE)
_INCLUDE_LINE = re.compile(r"^-- @include (\S+)[ \t]*(?:\n|\Z)", re.MULTILINE)
_LIB_NAME = re.compile(r"lib/[a-z0-9_]+\.lua")

Arg = str | bytes | int | float


def script_source(name: str) -> str:
    """The text of ``lua/<name>.lua`` as loaded: read from the installed package, with its
    ``-- @include`` lines expanded."""
    lua = resources.files("calmq.stores.redis").joinpath("lua")
    source = lua.joinpath(f"{name}.lua").read_text("utf-8")

    def read(include: str) -> str:
        folder, file = include.split("/")  # expand_includes accepts only lib/<name>.lua
        return lua.joinpath(folder).joinpath(file).read_text("utf-8")

    return expand_includes(source, read, where=f"{name}.lua")


def expand_includes(source: str, read: Callable[[str], str], *, where: str = "script") -> str:
    """``source`` with each ``-- @include lib/<name>.lua`` line replaced by that file's text.

    ``read`` returns a helper's text by its path under ``lua/``. Includes in helpers are
    expanded too; a file already included (here or in a helper) is not repeated. Raises
    ``ValueError`` for a malformed or unknown include, an include cycle, or a helper that
    touches ``KEYS`` (keys arrive through the including script's header only).
    """
    return _expand(source, read, where, done=set(), active=())


def _expand(
    source: str, read: Callable[[str], str], where: str, done: set[str], active: tuple[str, ...]
) -> str:
    def include(match: re.Match[str]) -> str:
        path = match.group(1)
        if not _LIB_NAME.fullmatch(path):
            raise ValueError(f"{where}: bad include {path!r} (expected lib/<name>.lua)")
        if path in active:
            raise ValueError(f"{where}: include cycle through {path}")
        if path in done:
            return ""
        try:
            text = read(path)
        except (FileNotFoundError, OSError):
            raise ValueError(f"{where}: unknown include {path!r}") from None
        if "KEYS[" in text:
            raise ValueError(f"{where}: helper {path} uses KEYS; pass keys as arguments")
        done.add(path)
        return _expand(text, read, path, done, (*active, path)).rstrip("\n") + "\n"

    return _INCLUDE_LINE.sub(include, source)


def declared_key_count(source: str) -> int:
    """How many ``KEYS`` a script's header declares (``-- KEYS[1] ...`` lines).

    Raises ``ValueError`` when the header numbers keys with gaps or duplicates, so a
    mis-edited header fails loudly instead of skewing the count.
    """
    numbers = [int(n) for n in _KEY_LINE.findall(source)]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"KEYS in the header are not numbered 1..n: {numbers}")
    return len(numbers)


class Scripts:
    """One redis-py :class:`Script` per Lua file, owned by one store instance."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._scripts: dict[str, Script] = {}
        self._key_counts: dict[str, int] = {}
        #: Scripts a pipelined run has found loaded on the server (run_pipelined).
        self._seen_loaded: set[str] = set()
        for name in SCRIPT_NAMES:
            source = script_source(name)
            self._scripts[name] = client.register_script(source)
            self._key_counts[name] = declared_key_count(source)

    def key_count(self, name: str) -> int:
        """The number of ``KEYS`` script ``name`` declares."""
        return self._key_counts[name]

    def run(self, name: str, keys: Sequence[str], args: Iterable[Arg]) -> Any:
        """Run a script in one round trip (two more, once, after a script cache flush)."""
        self._check_keys(name, keys)
        # Script.__call__ does EVALSHA and, on NOSCRIPT, SCRIPT LOAD + EVALSHA again.
        return self._scripts[name](keys=keys, args=list(args), client=self._client)

    def run_pooled(
        self, pool: ConnectionPool, name: str, keys: Sequence[str], args: Sequence[Arg]
    ) -> Any:
        """:meth:`run`, on a connection taken from ``pool`` and given back
        (:func:`~calmq.stores.redis.connection.take_connection`), with what redis-py's own
        client does for a command: the pool's bounded wait and its check that a reused
        connection is clean, the connection's socket timeouts and health check, and no
        retry; a connection or timeout error leaves the connection disconnected. NOSCRIPT
        loads the script and retries once (it means the script did not run)."""
        self._check_keys(name, keys)
        script = self._scripts[name]
        conn, shortcut = take_connection(pool)
        try:
            try:
                return _evalsha(conn, script.sha, keys, args)
            except NoScriptError:
                _load(conn, script)
                return _evalsha(conn, script.sha, keys, args)
        finally:
            give_back(pool, conn, shortcut=shortcut)

    def send(self, conn: Any, name: str, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Write one EVALSHA on ``conn`` behind a command already sent (no health check:
        a PING now would read the earlier command's reply); the caller reads the reply
        (:func:`read_reply`) and handles NOSCRIPT."""
        self._check_keys(name, keys)
        _send_evalsha(conn, self._scripts[name].sha, keys, args, check_health=False)

    def run_pipelined(
        self,
        pool: ConnectionPool,
        name: str,
        calls: Iterable[tuple[Sequence[str], Sequence[Arg]]],
        reply: Callable[[int, Any], object],
    ) -> None:
        """:meth:`run_pooled` for several calls, pipelined on one connection: each call is
        written as soon as ``calls`` yields it (a lazy iterable overlaps its own work with the
        server's), and the replies are read once all are sent. ``reply(i, value)`` gets each
        call's reply in order, or the ``ResponseError`` it answered with (the other calls
        ran regardless). Calls answered NOSCRIPT did not run: they are sent again after
        ``SCRIPT LOAD`` (so after a script-cache flush on the server, a later call of the
        same batch may have run before an earlier one is redone). The first pipelined run
        of a script in this process writes its ``SCRIPT LOAD`` ahead of the calls, in the
        same round trip: a fresh server would answer every call NOSCRIPT, and redoing them
        one by one cost a first bulk enqueue a third of its time. A connection or timeout
        error, or an exception from ``calls`` or ``reply``, leaves the connection
        disconnected (replies may still be in flight; calls already sent may have run
        without being reported, which only an interrupt can cause: building and packing a
        checked call cannot fail)."""
        script = self._scripts[name]
        conn, shortcut = take_connection(pool)
        sent: list[tuple[Sequence[str], Sequence[Arg]]] = []
        unread = 0
        try:
            preload = name not in self._seen_loaded
            if preload:  # health-checked: it goes first
                conn.send_command("SCRIPT", "LOAD", script.script)
                unread += 1
            for keys, args in calls:
                self._check_keys(name, keys)
                # One health check per round trip, before anything is in flight: a PING
                # later on would read a script's reply as its own.
                _send_evalsha(conn, script.sha, keys, args, check_health=not sent and not preload)
                sent.append((keys, args))
                unread += 1
            if preload:
                # Refused (an ACL without SCRIPT LOAD)? The calls still run if the script is
                # loaded already, and a NOSCRIPT among them is handled as always below.
                if not isinstance(read_reply(conn), ResponseError):
                    self._seen_loaded.add(name)
                unread -= 1
            held: dict[int, Any] = {}  # replies after the first NOSCRIPT, kept in order
            for i in range(len(sent)):
                value = read_reply(conn)
                unread -= 1
                if held or isinstance(value, NoScriptError):
                    held[i] = value
                else:
                    reply(i, value)
            if not held:
                return
            _load(conn, script)
            for i, value in held.items():  # rare: one round trip per call to redo
                if isinstance(value, NoScriptError):
                    _send_evalsha(conn, script.sha, *sent[i], check_health=False)
                    value = read_reply(conn)
                reply(i, value)
        finally:
            if unread:
                conn.disconnect()
            give_back(pool, conn, shortcut=shortcut)

    def run_many(
        self,
        calls: Sequence[tuple[str, Sequence[str], Sequence[Arg]]],
        *,
        before: Sequence[tuple[Arg, ...]] = (),
    ) -> list[Any]:
        """Run several scripts in one pipelined round trip; results (or errors) in order.

        ``before`` are plain commands sent first in the same round trip (their replies are
        dropped, errors included: they must be harmless to lose). redis-py's pipeline would
        ask ``SCRIPT EXISTS`` before every execution (an extra round trip), so the EVALSHAs
        are queued directly and only the calls answered with NOSCRIPT are loaded and rerun.
        """
        pipe = self._client.pipeline(transaction=False)
        untyped: Any = pipe  # redis-py leaves execute_command unannotated
        for command in before:
            untyped.execute_command(*command)
        for name, keys, args in calls:
            self._check_keys(name, keys)
            # execute_command, not pipe.evalsha: the cluster pipeline blocks the method (but
            # routes the command by its keys' slot, which is all calmq needs).
            untyped.execute_command("EVALSHA", self._scripts[name].sha, len(keys), *keys, *args)
        results: list[Any] = pipe.execute(raise_on_error=False)[len(before) :]
        for i, result in enumerate(results):
            if isinstance(result, NoScriptError):
                name, keys, args = calls[i]
                results[i] = self.run(name, keys, args)
        return results

    def _check_keys(self, name: str, keys: Sequence[str]) -> None:
        if len(keys) != self._key_counts[name]:
            # A programming error, but refusing beats letting Lua index a missing KEYS[i].
            raise ResponseError(
                f"calmq: {name}.lua declares {self._key_counts[name]} keys, got {len(keys)}"
            )


def _evalsha(conn: Any, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
    """One EVALSHA on ``conn``: pack, send, read the reply (a ResponseError is raised)."""
    _send_evalsha(conn, sha, keys, args, check_health=True)
    return conn.read_response()


def _send_evalsha(
    conn: Any, sha: str, keys: Sequence[str], args: Sequence[Arg], *, check_health: bool
) -> None:
    command = ("EVALSHA", sha, len(keys), *keys, *args)
    pack: Any = hiredis.pack_command  # its stub types the tuple as one element long
    try:
        packed = pack(command)
    except TypeError as exc:  # what redis-py raises for an argument it cannot encode
        raise DataError(str(exc)) from exc
    conn.send_packed_command((packed,), check_health=check_health)  # a sequence of buffers


def _load(conn: Any, script: Script) -> None:
    """Load ``script`` on ``conn`` after a NOSCRIPT (the server's script cache was
    flushed) and keep the sha it answers."""
    conn.send_command("SCRIPT", "LOAD", script.script)
    sha = conn.read_response()
    script.sha = sha.decode() if isinstance(sha, bytes) else sha


def read_reply(conn: Any) -> Any:
    """The next reply on ``conn``, an error reply as its ``ResponseError`` (it was read in
    full, so the replies after it are still in step)."""
    try:
        return conn.read_response()
    except ResponseError as exc:
        return exc
