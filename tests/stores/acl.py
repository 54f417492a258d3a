"""The minimum Redis ACL of docs/scaling.md, applied to a test server for one key prefix.

The rule is read from the documentation itself (between the ``calmq-acl`` markers), so the
tests check exactly what users are told to configure.
"""

from __future__ import annotations

import re
from pathlib import Path

import redis

from calmq.settings import Settings
from tests.redis_server import RedisServer

SCALING_DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
_BLOCK = re.compile(r"<!-- calmq-acl:(\w+) -->\s*```[a-z]*\n(.*?)```", re.S)


def documented_rules() -> dict[str, str]:
    """``{"base": "ACL SETUSER calmq ...", "cluster": "..."}`` from docs/scaling.md."""
    return {name: body.strip() for name, body in _BLOCK.findall(SCALING_DOC.read_text())}


def documented_commands(rule: str) -> set[str]:
    """The commands (lower case, ``script|load`` style) a rule allows with ``+``."""
    return {token[1:].lower() for token in rule.split() if token.startswith("+")}


def rule_for(prefix: str, user: str, password: str, *, cluster: bool = False) -> list[str]:
    """The documented rule as ACL SETUSER arguments, for ``user`` and key ``prefix``."""
    rules = documented_rules()
    tokens = rules["base"].split()[3:]  # drop "ACL SETUSER calmq"
    if cluster:
        tokens += rules["cluster"].split()[3:]
    out = []
    for token in tokens:
        if token.startswith(">"):
            token = ">" + password
        elif token.startswith("~"):
            token = token.replace("calmq", prefix)
        out.append(token)
    return [user, "reset", *out]


def create_user(client: redis.Redis, prefix: str, *, cluster: bool = False) -> tuple[str, str]:
    """Create the documented user for ``prefix``; return (user, password)."""
    user, password = f"u-{prefix}"[:60], f"pw-{prefix}"[:60]
    client.execute_command("ACL", "SETUSER", *rule_for(prefix, user, password, cluster=cluster))
    return user, password


def acl_user_settings(server: RedisServer, prefix: str) -> Settings:
    """Settings that reach ``server`` as the documented restricted user of ``prefix``."""
    admin = server.client()
    try:
        user, password = create_user(admin, prefix)
    finally:
        admin.close()
    url = f"redis://{user}:{password}@127.0.0.1:{server.port}/0"
    return Settings(url=url, key_prefix=prefix)
