"""How values travel through Redis and the cache_entries table: versioned JSON, never pickle.

In Redis a value is one line of metadata and the JSON value::

    4f1c0a9b|1732560000000|0|1732563600.000|0.0012
    {"id":42,"username":"ann",...}

``schema|generation|negative|expires_at|load_seconds``: the schema (as 8 hex digits of the hash of
``module.Record:version``) names the record type and its version
(a value of an older ``__cache_version__`` reads as a miss), the generation is the global one the value
was written under (bumped after a Redis outage, so nothing older is served), ``negative`` marks a cached
"not found", and expiry and load time feed the early-refresh decision (XFetch). A hit checks schema,
generation and sign with one ``startswith`` and parses only the value.

In the table (a jsonb column) the same envelope is a JSON object: ``{"s", "x", "d", "n", "v"}``; the
table keeps its own versions and needs no generation.

A value is checked once, on its way in, by the JSON-column rules of the repositories (``json_text``:
JSON-serialisable, finite numbers, 64-bit integers, text PostgreSQL can store, at most 1 MB, no NUL),
and the same JSON text goes to every layer: what one layer would refuse, none holds.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import attrs
import orjson

from datalayer.convert import converter
from datalayer.errors import ValidationError
from datalayer.repos._common import json_text

__all__ = [
    "NEGATIVE",
    "PLAIN",
    "Envelope",
    "decode_doc",
    "decode_wire",
    "encode_doc",
    "encode_value",
    "encode_wire",
    "hit_prefix",
    "read_hit",
    "schema_of",
    "structure_hook",
]

PLAIN = "json:1"
_schemas: dict[Any, str] = {}
_prefixes: dict[tuple[str, int], bytes] = {}


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


_tags: dict[str, str] = {}


def _tag(schema: str) -> str:
    # On the wire the schema travels as 8 hex digits of its hash: every hit carries it.
    tag = _tags.get(schema)
    if tag is None:
        tag = _tags[schema] = hashlib.sha1(schema.encode(), usedforsecurity=False).hexdigest()[:8]
    return tag


def hit_prefix(schema: str, generation: int) -> bytes:
    """The bytes every live, positive value of ``schema`` under ``generation`` starts with."""
    prefix = _prefixes.get((schema, generation))
    if prefix is None:
        prefix = _prefixes[(schema, generation)] = f"{_tag(schema)}|{generation}|0|".encode()
    return prefix


_UNREADABLE = object()


def read_hit(raw: bytes, record_type: type[Any] | None, schema: str) -> Any:
    """The value of a Redis value already matched by ``hit_prefix``, or ``_UNREADABLE``."""
    try:
        return _value(memoryview(raw)[raw.index(b"\n") + 1 :], record_type, schema)
    except Exception:  # a value we cannot read is a miss, never a crash
        return _UNREADABLE


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


NEGATIVE = b"null"  # the data of a cached "not found"


def encode_value(value: Any) -> bytes:
    """The JSON text of ``value`` (a record unstructured first), checked by the JSON-column rules:
    ValidationError({"value": ...}) for anything one of the layers could not hold or give back."""
    data = value
    if attrs.has(type(value)):
        try:
            data = converter.unstructure(value)
        except (AttributeError, TypeError, ValueError) as e:  # a field not of its declared type
            raise ValidationError(
                {"value": f"a {type(value).__name__} whose fields do not match their types ({type(e).__name__}: {e})"}
            ) from None
    return json_text(data, "value", require_object=False).encode()


_hooks: dict[Any, Any] = {}


def structure_hook(record_type: type[Any]) -> Any:
    """The converter's structure function for ``record_type``, looked up once (not per cache hit)."""
    hook = _hooks.get(record_type)
    if hook is None:
        hook = _hooks[record_type] = converter.get_structure_hook(record_type)
    return hook


def _value(data: Any, record_type: type[Any] | None, schema: str) -> Any:
    value = orjson.loads(data)
    if record_type is not None and schema is not PLAIN:
        value = structure_hook(record_type)(value, record_type)
    return value


def encode_wire(data: bytes, *, schema: str, generation: int, ttl: float, load_seconds: float, negative: bool) -> bytes:
    """The Redis value: the envelope's head line and ``data`` (from ``encode_value``, or NEGATIVE)."""
    head = f"{_tag(schema)}|{generation}|{int(negative)}|{time.time() + ttl:.3f}|{load_seconds:.4f}\n"
    return head.encode() + data


def decode_wire(raw: Any, *, schema: str, record_type: type[Any] | None, generation: int) -> Envelope | None:
    """The envelope of a Redis value, or None when absent, unreadable, of another schema or generation."""
    if raw is None:
        return None
    try:
        nl = raw.index(b"\n")
        head = raw[:nl].split(b"|")
        if len(head) != 5 or head[0].decode() != _tag(schema) or int(head[1]) != generation:
            return None
        negative = head[2] == b"1"
        value = None if negative else _value(memoryview(raw)[nl + 1 :], record_type, schema)
        return Envelope(value, negative, generation, float(head[3]), float(head[4]))
    except Exception:  # a value we cannot read is a miss, never a crash
        return None


def encode_doc(data: bytes, *, schema: str, ttl: float, load_seconds: float) -> bytes:
    """The envelope as JSON object text for the table, around ``data`` (from ``encode_value``)."""
    head = orjson.dumps({"s": schema, "x": time.time() + ttl, "d": load_seconds, "n": False})
    return head[:-1] + b',"v":' + data + b"}"


def decode_doc(doc: Any, *, schema: str, record_type: type[Any] | None) -> Envelope | None:
    """The envelope of a table row's value, or None when unreadable or of another schema."""
    try:
        if doc["s"] != schema:
            return None
        value = doc["v"]
        if record_type is not None and schema is not PLAIN:
            value = converter.structure(value, record_type)
        return Envelope(value, doc["n"] is True, 0, float(doc["x"]), float(doc["d"]))
    except Exception:
        return None
