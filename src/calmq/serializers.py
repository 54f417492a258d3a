"""How job arguments become bytes: JSON (msgspec) by default, pickle only when asked for.

The encoded form is an :class:`Envelope`: positional and keyword arguments plus the per-call
options the worker needs (timeout, retry policy). The store never looks inside it.
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol

import msgspec

from calmq.errors import ConfigurationError, SerializationError


class Envelope(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """What a job carries: its arguments and per-call options (short field names: every
    byte is stored once per job)."""

    a: list[Any] = []  # positional arguments
    k: dict[str, Any] = {}  # keyword arguments
    t: float | None = None  # timeout in seconds (None: the task's)
    b: list[float] | None = None  # backoff override: [base, cap] seconds


class Serializer(Protocol):
    """Turns an :class:`Envelope` into bytes and back."""

    name: str

    def encode(self, envelope: Envelope) -> bytes:
        """Bytes for the store; raises SerializationError for unencodable arguments."""
        ...

    def decode(self, data: bytes) -> Envelope:
        """The envelope back; raises SerializationError for undecodable bytes."""
        ...


class JsonSerializer:
    """JSON via msgspec: fast, safe with untrusted stores, readable in redis-cli."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Envelope)

    def encode(self, envelope: Envelope) -> bytes:
        try:
            return self._encoder.encode(envelope)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"job arguments are not JSON-serialisable: {exc}. Pass plain data (str, int,"
                " float, bool, None, list, dict, datetime, UUID, Decimal), or opt in to"
                " Settings(serializer='pickle')"
            ) from exc

    def decode(self, data: bytes) -> Envelope:
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SerializationError(f"stored payload is not a calmq JSON job: {exc}") from exc


class PickleSerializer:
    """Pickle: any Python object, but decoding runs code. Use only when nobody else can
    write to the store."""

    name = "pickle"

    def encode(self, envelope: Envelope) -> bytes:
        try:
            return pickle.dumps((envelope.a, envelope.k, envelope.t, envelope.b), protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(f"job arguments cannot be pickled: {exc}") from exc

    def decode(self, data: bytes) -> Envelope:
        try:
            args, kwargs, timeout, backoff = pickle.loads(data)  # noqa: S301 - explicit opt-in
            return Envelope(a=list(args), k=dict(kwargs), t=timeout, b=backoff)
        except Exception as exc:
            raise SerializationError(f"stored payload is not a calmq pickle job: {exc}") from exc


def make_serializer(name: str) -> Serializer:
    """The serializer a settings name stands for."""
    if name == "json":
        return JsonSerializer()
    if name == "pickle":
        return PickleSerializer()
    raise ConfigurationError(f"unknown serializer {name!r}: use 'json' or 'pickle'")
