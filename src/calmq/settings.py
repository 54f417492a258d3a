"""Settings: one frozen dataclass with every default in one place.

``Settings.from_env()`` reads ``CALMQ_*`` variables and fails loudly on unknown ones, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from calmq.errors import ConfigurationError

DEFAULT_SQLITE_URL = "sqlite:///calmq.sqlite3"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything tunable about an :class:`~calmq.App` and its stores.

    The producer-side timeouts bound how long ``enqueue`` can take when the store is slow
    or gone: at most ``pool_timeout + connect_timeout + command_timeout`` (0.75 s by
    default), after which :class:`~calmq.QueueUnavailable` is raised. See docs/operations.md.
    """

    #: Store URL; None means ``CALMQ_URL`` or, failing that, the embedded SQLite file.
    url: str | None = None
    #: Prefix of every Redis key (inside the per-queue hash tag).
    key_prefix: str = "calmq"
    #: Encoded jobs larger than this are refused before they reach the store.
    max_payload_bytes: int = 512 * 1024
    #: "json" (default) or "pickle" (explicit opt-in: unsafe if others can write the store).
    serializer: str = "json"

    # Producer connection discipline (the lesson of the incident calmq exists for).
    #: Connections per process and store; callers beyond it wait ``pool_timeout`` at most.
    pool_size: int = 16
    pool_timeout: float = 0.1
    connect_timeout: float = 0.25
    command_timeout: float = 0.4

    #: Succeeded jobs are remembered this long so a late duplicate enqueue stays a no-op.
    completed_ttl: float = 60.0
    #: Dead jobs are kept this long (7 days) for inspection and replay.
    dead_ttl: float = 7 * 24 * 3600.0

    #: SQLite: how long a writer waits for the file lock before ``QueueUnavailable``.
    sqlite_busy_timeout: float = 0.5

    # Redis auth and TLS, for when they should not sit in the URL (the URL wins when both
    # say something). Passwords are never shown in repr, logs or error messages.
    # Alerts: thresholds that raise ALERT events (logged, counted in calmq_alerts_total and
    # flagged in calmq_alert_active). None switches an alert off.
    #: The oldest ready job of a queue has waited longer than this (seconds).
    alert_oldest_ready: float | None = None
    #: More than this many jobs died in a queue within one ``alert_window``.
    alert_dead_growth: int | None = None
    #: The 99th percentile of this process's enqueue calls over one window exceeds this (ms).
    alert_enqueue_p99_ms: float | None = None
    #: Seconds per alert evaluation window.
    alert_window: float = 60.0

    #: Redis ACL user (``CALMQ_REDIS_USERNAME``).
    redis_username: str | None = None
    #: Redis password (``CALMQ_REDIS_PASSWORD``).
    redis_password: str | None = dataclasses.field(default=None, repr=False)
    #: Password of the Sentinel processes themselves, when they require one.
    redis_sentinel_password: str | None = dataclasses.field(default=None, repr=False)
    #: CA bundle that signed the servers' certificates (``rediss://``).
    redis_tls_ca_certs: str | None = None
    #: Client certificate and key, for servers that verify clients (``tls-auth-clients``).
    redis_tls_certfile: str | None = None
    redis_tls_keyfile: str | None = None
    #: ``required`` (default of redis-py), ``optional`` or ``none`` (no verification).
    redis_tls_cert_reqs: str | None = None

    def __post_init__(self) -> None:
        for name in ("pool_timeout", "connect_timeout", "command_timeout", "sqlite_busy_timeout"):
            value = getattr(self, name)
            if not 0 < value <= 60:
                raise ConfigurationError(f"{name} must be in (0, 60] seconds, got {value!r}")
        if self.pool_size < 1:
            raise ConfigurationError(f"pool_size must be >= 1, got {self.pool_size!r}")
        if self.max_payload_bytes < 64:
            raise ConfigurationError(
                f"max_payload_bytes must be >= 64, got {self.max_payload_bytes!r}"
            )
        if self.serializer not in ("json", "pickle"):
            raise ConfigurationError(
                f"serializer must be 'json' or 'pickle', got {self.serializer!r}"
            )
        if self.alert_window <= 0:
            raise ConfigurationError(f"alert_window must be > 0 seconds, got {self.alert_window!r}")
        if self.completed_ttl < 0 or self.dead_ttl <= 0:
            raise ConfigurationError("completed_ttl must be >= 0 and dead_ttl > 0")
        if not self.key_prefix or any(c in self.key_prefix for c in "{} \n"):
            raise ConfigurationError(
                f"key_prefix must be non-empty without braces or spaces, got {self.key_prefix!r}"
            )

    @property
    def enqueue_bound(self) -> float:
        """The longest a producer call can take before raising ``QueueUnavailable``."""
        return self.pool_timeout + self.connect_timeout + self.command_timeout

    def resolved_url(self) -> str:
        """The store URL to use: explicit, then ``CALMQ_URL``, then the SQLite default."""
        return self.url or os.environ.get("CALMQ_URL") or DEFAULT_SQLITE_URL

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``CALMQ_<FIELD>`` variables; unknown ``CALMQ_`` names are an error."""
        env = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in env.items():
            if not key.startswith("CALMQ_"):
                continue
            name = key[len("CALMQ_") :].lower()
            if name not in fields:
                known = ", ".join("CALMQ_" + n.upper() for n in fields)
                raise ConfigurationError(f"unknown setting {key}; known: {known}")
            values[name] = _parse(name, fields[name].type, raw)
        values.update(overrides)
        return cls(**values)


def _parse(name: str, annotation: object, raw: str) -> Any:
    kind = str(annotation).replace(" | None", "")
    if raw == "" and " | None" in str(annotation):
        return None
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigurationError(f"CALMQ_{name.upper()} must be a number, got {raw!r}") from None
    return raw
