"""How values travel through Redis and the cache_entries table: a versioned JSON envelope, never pickle.

``{"s": schema, "g": generation, "x": expires_at, "d": load_seconds, "n": negative, "v": value}``:
``s`` names the record type and its schema version (an older one reads as a miss), ``g`` the global
generation the value was written under (bumped after a Redis outage, so nothing older is served),
``x``/``d`` feed the early-refresh decision (XFetch), ``n`` marks a cached "not found".
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import orjson

from datalayer.convert import converter

__all__ = ["Envelope", "decode", "encode", "schema_of"]

PLAIN = "json:1"


_schemas: dict[Any, str] = {}


def schema_of(record_type: type[Any] | None) -> str:
    """``module.Name:version`` for attrs records (``__cache_version__``, default 1), ``json:1`` otherwise."""
    schema = _schemas.get(record_type)
    if schema is None:
        if record_type is None or not attrs.has(record_type):
            schema = PLAIN
        else:
            version = getattr(record_type, "__cache_version__", 1)
            schema = f"{record_type.__module__}.{record_type.__qualname__}:{version}"
        _schemas[record_type] = schema
    return schema


class Envelope:
    """A decoded cache value and its metadata (a plain slotted class: built on every cache hit)."""

    __slots__ = ("expires_at", "generation", "load_seconds", "negative", "value")

    def __init__(self, value: Any, negative: bool, generation: int, expires_at: float, load_seconds: float) -> None:
        self.value = value
        self.negative = negative
        self.generation = generation
        self.expires_at = expires_at
        self.load_seconds = load_seconds

    def with_value(self, value: Any) -> Envelope:
        return Envelope(value, self.negative, self.generation, self.expires_at, self.load_seconds)


def encode(value: Any, *, schema: str, generation: int, ttl: float, load_seconds: float, negative: bool) -> bytes:
    data = None if negative else (converter.unstructure(value) if attrs.has(type(value)) else value)
    return orjson.dumps(
        {"s": schema, "g": generation, "x": time.time() + ttl, "d": load_seconds, "n": negative, "v": data}
    )


def decode(
    raw: bytes | str | None, *, schema: str, record_type: type[Any] | None, generation: int | None
) -> Envelope | None:
    """The envelope, or None when absent, unreadable, of another schema or an older generation."""
    if raw is None:
        return None
    try:
        doc = raw if isinstance(raw, dict) else orjson.loads(raw)
        if doc["s"] != schema or (generation is not None and doc["g"] != generation):
            return None
        negative = bool(doc["n"])
        value = doc["v"]
        if not negative and record_type is not None and attrs.has(record_type):
            value = converter.structure(value, record_type)
        return Envelope(
            value=value,
            negative=negative,
            generation=int(doc["g"]),
            expires_at=float(doc["x"]),
            load_seconds=float(doc["d"]),
        )
    except Exception:  # a value we cannot read is a miss, never a crash
        return None
