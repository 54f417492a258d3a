"""Load the named SQL statements of ``queries.sql`` (a tiny aiosql-style loader).

Each statement follows a ``-- name: <query_name>`` marker and runs until the next marker.
Keeping SQL in one ``.sql`` file means it is reviewed as SQL and business code never builds
statements by concatenation. The file ships inside the package and is read with
``importlib.resources`` so it works from a wheel or a zip as well as from a checkout.
"""

from __future__ import annotations

import re
from importlib import resources

_MARKER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


def parse_queries(text: str) -> dict[str, str]:
    """Split ``text`` into ``{name: sql}``; a duplicate or empty query is an error."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "-- name: _end_"]:
        match = _MARKER.match(line.strip())
        if match is None:
            lines.append(line)
            continue
        if name is not None:
            queries[name] = _body(name, lines, queries)
        name, lines = match.group(1), []
    return queries


def _body(name: str, lines: list[str], known: dict[str, str]) -> str:
    # Only the statement itself: drop comment lines (they would describe the NEXT query).
    sql = "\n".join(ln for ln in lines if not ln.lstrip().startswith("--")).strip()
    if name in known:
        raise ValueError(f"duplicate query name {name!r} in queries.sql")
    if not sql:
        raise ValueError(f"query {name!r} in queries.sql is empty")
    return sql.rstrip(";").strip()


def load_queries() -> dict[str, str]:
    """The store's queries, read from the packaged ``queries.sql``."""
    text = resources.files("calmq.stores.sqlite").joinpath("queries.sql").read_text("utf-8")
    return parse_queries(text)
