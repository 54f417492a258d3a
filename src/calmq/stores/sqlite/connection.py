"""Connections of the SQLite store: opening, pragmas, one per thread, errors mapped.

:class:`Connections` hands each thread its own autocommit connection (or, for
``":memory:"``, the one shared connection under a lock with a bounded wait), wraps writes in
``BEGIN IMMEDIATE`` ... ``COMMIT``, and turns ``sqlite3`` errors into calmq's
``QueueUnavailable`` / ``StoreError`` / ``ConfigurationError`` with the path and the action
in the message. :func:`check_environment` gives clear start-up errors before the first open.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from calmq.errors import CalmqError, ConfigurationError, QueueUnavailable, StoreError

MEMORY = ":memory:"
#: RETURNING (used by claim and rescue) arrived in SQLite 3.35.0.
MIN_SQLITE_VERSION = (3, 35, 0)

# SQLite primary result codes (the low byte of an extended code).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


class Connections:
    """The connections one :class:`~calmq.stores.sqlite.store.SqliteStore` opened."""

    def __init__(self, path: str, busy_timeout: float, queries: dict[str, str]) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._q = queries
        self.closed = False
        self._in_use = 0  # store calls in flight (a gauge for metrics)
        self._local = threading.local()
        self._registry_lock = threading.Lock()
        self._registry: list[tuple[threading.Thread, sqlite3.Connection]] = []
        # Connections inside a store call right now, with how many calls deep (under
        # _registry_lock): close() leaves them to their threads, which close them when the
        # call ends. Closing a connection while another thread runs a statement on it can
        # crash the process.
        self._busy: dict[sqlite3.Connection, int] = {}
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.Lock()

    def open_first(self, prepare: Callable[[sqlite3.Connection], object]) -> None:
        """Open the first connection and run ``prepare`` (the migrations) on it."""
        try:
            conn = self.open_connection()
            prepare(conn)
        except sqlite3.Error as exc:
            self.close()
            raise _startup_error(self._path, exc) from exc
        except BaseException:
            self.close()
            raise
        if self._path == MEMORY:
            self._shared = conn
        else:
            self._register(conn)

    def open_connection(self) -> sqlite3.Connection:
        """A new configured connection (WAL, synchronous=NORMAL), not yet registered."""
        # isolation_level=None: autocommit, so the only transactions are our explicit
        # BEGIN IMMEDIATE ones (the sqlite3 module's implicit BEGIN DEFERRED would upgrade
        # read locks to write locks mid-transaction and fail with SQLITE_BUSY at once).
        # check_same_thread=False: a connection is used by its own thread only (or under
        # the lock for :memory:), but close() must be able to close it from any thread.
        # timeout=: SQLite's busy_timeout, the bound on waiting for another writer.
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(self._q["schema_probe"]).fetchall()  # "not a database" surfaces here
        if self._path != MEMORY:
            # WAL is persistent in the file: set it once, read it back on later opens.
            mode = conn.execute(self._q["get_journal_mode"]).fetchone()[0]
            if str(mode).lower() != "wal":
                mode = self._switch_to_wal(conn)
            if str(mode).lower() != "wal":
                raise ConfigurationError(
                    f"could not put {self._path} in WAL mode (got {mode!r}); SQLite WAL"
                    " needs a local file system that supports shared memory"
                )
        conn.execute(self._q["set_synchronous_normal"])

    def _switch_to_wal(self, conn: sqlite3.Connection) -> object:
        """``PRAGMA journal_mode = WAL``, tried again while the file is locked, up to the busy
        timeout: several processes opening a new file at once can meet SQLITE_BUSY here
        without SQLite's busy handler waiting for them (seen in CI: 8 processes creating
        one file)."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                return conn.execute(self._q["set_journal_mode_wal"]).fetchone()[0]
            except sqlite3.OperationalError as exc:
                if _code(exc) not in (_BUSY, _LOCKED) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)  # another process holds the lock for a moment: try again

    def _register(self, conn: sqlite3.Connection) -> None:
        with self._registry_lock:
            if self.closed:
                conn.close()
                raise QueueUnavailable("the SQLite store is closed", reason="closed")
            # Threads come and go (web servers); close connections of finished threads.
            alive = [(t, c) for t, c in self._registry if t.is_alive()]
            for thread, old in self._registry:
                if not thread.is_alive():
                    old.close()
            self._registry = [*alive, (threading.current_thread(), conn)]
        self._local.conn = conn

    def thread_connection(self) -> sqlite3.Connection:
        """This thread's connection, opened and registered on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.open_connection()
            self._register(conn)
        return conn

    @contextlib.contextmanager
    def use(self, action: str) -> Iterator[sqlite3.Connection]:
        """A connection for this thread, with SQLite errors mapped to calmq errors."""
        if self.closed:
            raise QueueUnavailable("the SQLite store is closed", reason="closed")
        self._in_use += 1
        try:
            if self._shared is None:
                yield from self._use_own(action)
                return
            yield from self._use_shared(action)
        finally:
            self._in_use -= 1

    def _use_own(self, action: str) -> Iterator[sqlite3.Connection]:
        # This thread's connection, marked busy for the call so that a close() from another
        # thread leaves it open until the call ends.
        with self._map_errors(action):
            conn = self.thread_connection()
        with self._registry_lock:
            if self.closed:
                raise QueueUnavailable("the SQLite store is closed", reason="closed")
            self._busy[conn] = self._busy.get(conn, 0) + 1
        try:
            with self._map_errors(action):
                yield conn
        finally:
            with self._registry_lock:
                depth = self._busy.pop(conn) - 1
                if depth:
                    self._busy[conn] = depth
                orphaned = self.closed and not depth
            if orphaned:  # close() came during the call and left this one to us
                conn.close()

    def in_use(self) -> int:
        """Store calls in flight right now (each on its thread's connection)."""
        return max(0, self._in_use)

    def _use_shared(self, action: str) -> Iterator[sqlite3.Connection]:
        # :memory: has one connection; bound the wait for it like a file's busy_timeout.
        if not self._shared_lock.acquire(timeout=self._busy_timeout):
            raise QueueUnavailable(
                f"in-memory SQLite store busy for more than {self._busy_timeout}s"
                f" while trying to {action}",
                reason="busy",
            )
        try:
            assert self._shared is not None
            with self._map_errors(action):
                yield self._shared
        finally:
            self._shared_lock.release()

    @contextlib.contextmanager
    def write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One short write transaction: BEGIN IMMEDIATE, the body, COMMIT (or ROLLBACK)."""
        with self.use(action) as conn:
            # IMMEDIATE takes the write lock now (waiting at most busy_timeout), so the
            # transaction never fails half-way on a read-to-write lock upgrade.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    @contextlib.contextmanager
    def _map_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _runtime_error(self._path, self._busy_timeout, action, exc) from exc

    def close(self) -> None:
        """Close every connection this store opened; one inside a call on another thread
        is closed by that thread when the call ends (new calls are refused). Idempotent."""
        with self._registry_lock:
            self.closed = True
            registry, self._registry = self._registry, []
            idle = [conn for _thread, conn in registry if conn not in self._busy]
        for conn in idle:
            conn.close()
        if self._shared is not None and self._shared_lock.acquire(timeout=5):
            try:
                self._shared.close()
            finally:
                self._shared_lock.release()


def _rollback(conn: sqlite3.Connection) -> None:
    # Some errors (SQLITE_FULL, IOERR) already rolled the transaction back.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def _runtime_error(path: str, busy: float, action: str, exc: sqlite3.Error) -> CalmqError:
    """The calmq error for a SQLite error raised while serving a call."""
    code = _code(exc)
    if code in (_BUSY, _LOCKED):
        return QueueUnavailable(
            f"SQLite file {path} stayed locked by another writer for more than"
            f" busy_timeout={busy}s while trying to {action}; retrying with the same job id"
            " is safe",
            reason="busy",
        )
    if code == _FULL:
        return QueueUnavailable(
            f"disk full: SQLite could not write to {path} while trying to {action}; the"
            " transaction was rolled back and stored jobs are intact. Free disk space.",
            reason="disk_full",
        )
    if code in (_IOERR, _READONLY, _CANTOPEN):
        return QueueUnavailable(
            f"SQLite I/O error on {path} while trying to {action}: {exc}", reason="io_error"
        )
    return StoreError(f"SQLite error on {path} while trying to {action}: {exc}")


def _startup_error(path: str, exc: sqlite3.Error) -> CalmqError:
    """The calmq error for a SQLite error raised while opening the store."""
    code = _code(exc)
    if code in (_BUSY, _LOCKED):
        return QueueUnavailable(
            f"SQLite file {path} stayed locked while opening it: {exc}", reason="busy"
        )
    if code in (_NOTADB, _CORRUPT):
        return ConfigurationError(f"{path} is not a calmq SQLite database (or is damaged): {exc}")
    if code in (_READONLY, _CANTOPEN, _IOERR):
        return ConfigurationError(f"cannot open {path} for writing: {exc}")
    return ConfigurationError(f"cannot open SQLite store {path}: {exc}")


def check_environment(path: str) -> None:
    """Clear start-up errors instead of obscure failures at the first write."""
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        need = ".".join(map(str, MIN_SQLITE_VERSION))
        raise ConfigurationError(
            f"calmq needs SQLite >= {need} (for RETURNING); this Python links SQLite"
            f" {sqlite3.sqlite_version}. Use a newer Python build, or the Redis store."
        )
    if path == MEMORY:
        return
    file = Path(path).absolute()
    if not file.parent.is_dir():
        raise ConfigurationError(f"directory {file.parent} for the SQLite store does not exist")
    if file.is_dir():
        raise ConfigurationError(f"SQLite store path {file} is a directory, not a file")
    if file.exists() and not os.access(file, os.R_OK | os.W_OK):
        raise ConfigurationError(f"SQLite store file {file} is not readable and writable")
    if not os.access(file.parent, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"directory {file.parent} is not writable: SQLite needs to create its -wal and"
            " -shm files next to the database"
        )
