"""Numbered, forward-only schema migrations for the SQLite store.

Migrations are ``NNNN_description.sql`` files in the ``migrations`` package directory,
numbered from 0001 without gaps. ``migrate`` applies the missing ones in ONE ``BEGIN
IMMEDIATE`` transaction (SQLite DDL is transactional, so a failure leaves the file as it
was) and records each in ``calmq_migrations (version, applied_at)``. Several processes may
open a new file at once: the write lock serialises them and the second finds nothing to do.
A file migrated by a newer calmq (a version this one does not know) is refused, because
this code cannot know what the newer schema means.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import time
from importlib import resources
from importlib.resources.abc import Traversable

from calmq.errors import ConfigurationError
from calmq.stores.sqlite.queries import load_queries

_FILE_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its version number, file name and SQL script."""

    version: int
    name: str
    sql: str


def default_directory() -> Traversable:
    """The migrations shipped with this calmq."""
    return resources.files("calmq.stores.sqlite").joinpath("migrations")


def discover(directory: Traversable | None = None) -> list[Migration]:
    """The migrations in ``directory``, by version; gaps or duplicates are an error."""
    folder = directory if directory is not None else default_directory()
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is not None:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    expected = list(range(1, len(found) + 1))
    if [m.version for m in found] != expected:
        names = ", ".join(m.name for m in found)
        raise ConfigurationError(f"SQLite migrations must be numbered 0001.. without gaps: {names}")
    return found


def split_statements(script: str) -> list[str]:
    """Split a script into statements (``sqlite3.complete_statement`` handles triggers).

    ``executescript`` cannot be used: it COMMITs any open transaction first, which would
    break the all-or-nothing upgrade.
    """
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not _only_comments(buffer):
        raise ConfigurationError(f"incomplete SQL statement in migration: {buffer.strip()[:80]}")
    return statements


def _only_comments(text: str) -> bool:
    return all(not ln.strip() or ln.strip().startswith("--") for ln in text.splitlines())


def migrate(conn: sqlite3.Connection, directory: Traversable | None = None) -> list[int]:
    """Bring the database on ``conn`` (autocommit mode) up to date; return versions applied."""
    queries = load_queries()
    migrations = discover(directory)
    if _applied(conn, queries) == {m.version for m in migrations}:
        return []  # the common case, decided without taking the write lock
    conn.execute("BEGIN IMMEDIATE")
    try:
        applied = _apply_missing(conn, queries, migrations)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied


def _applied(conn: sqlite3.Connection, queries: dict[str, str]) -> set[int]:
    if not conn.execute(queries["migrations_table_exists"]).fetchone()[0]:
        return set()
    return {int(row[0]) for row in conn.execute(queries["applied_versions"])}


def _apply_missing(
    conn: sqlite3.Connection, queries: dict[str, str], migrations: list[Migration]
) -> list[int]:
    # Re-read under the write lock: another process may have migrated meanwhile.
    conn.execute(queries["create_migrations_table"])
    applied = _applied(conn, queries)
    known = len(migrations)
    newer = sorted(v for v in applied if v > known)
    if newer:
        raise ConfigurationError(
            f"this SQLite file was written by a newer calmq (schema version {newer[-1]};"
            f" this calmq knows versions up to {known}): upgrade calmq to open it"
        )
    done: list[int] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        for statement in split_statements(migration.sql):
            conn.execute(statement)
        now = time.time_ns() // 1_000_000
        conn.execute(queries["record_migration"], {"version": migration.version, "applied_at": now})
        done.append(migration.version)
    return done
