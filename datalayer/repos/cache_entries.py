"""cache_entries: the persistent layer of the cache (get ignores expired rows; versioned upsert), and
the pending invalidations of cache_invalidations (what the cache could not be sure Redis took)."""

from __future__ import annotations

from typing import Any

import attrs
from psycopg import Connection
from psycopg.types.json import Jsonb

from datalayer._run import Bound, bind
from datalayer._sql import load_queries
from datalayer.errors import ValidationError
from datalayer.records import CacheEntry
from datalayer.repos._common import check_text, json_value

__all__ = [
    "MAX_VERSION",
    "Checked",
    "PendingInvalidation",
    "apply_invalidations_to_table",
    "can_record_invalidations",
    "count",
    "delete",
    "delete_prefix",
    "forget_invalidations",
    "get",
    "invalidate",
    "peek",
    "pending_invalidations",
    "purge_expired",
    "put",
    "record_invalidations",
    "set",
    "set_checked",
    "settle_invalidations",
]

MAX_KEY_CHARS = 512
# The highest version a caller may ask for. Every write or invalidation moves a version on by one and
# bigint stops at 2^63 - 1: from here that is 2^62 moves away (146 years at a billion a second), and
# the SQL stops at the top rather than fail, so no row can be left that nothing can replace.
MAX_VERSION = 2**62
# Checked against the row's own version + 1 by the cache's loaders (never above bigint's top).
_TOP = 2**63 - 1
KINDS = ("key", "api")


@attrs.frozen
class PendingInvalidation:
    """An invalidation the cache recorded because its Redis part may not have happened."""

    id: int
    kind: str
    key: str
    table_done: bool


_q = load_queries("cache_entries")
_get = bind(_q, "get", CacheEntry)
_peek = bind(_q, "peek", CacheEntry)
_set = bind(_q, "set", CacheEntry)
_put = bind(_q, "put", CacheEntry)
_invalidate: Bound[None] = bind(_q, "invalidate", None)
_delete: Bound[None] = bind(_q, "delete", None)
_delete_prefix: Bound[None] = bind(_q, "delete_prefix", None)
_purge_expired: Bound[None] = bind(_q, "purge_expired", None)
_count = bind(_q, "count", int)
_record = bind(_q, "record_invalidations", int)
_settle: Bound[None] = bind(_q, "settle_invalidations", None)
_pending = bind(_q, "pending_invalidations", PendingInvalidation)
_apply: Bound[None] = bind(_q, "apply_invalidations_to_table", None)
_forget: Bound[None] = bind(_q, "forget_invalidations", None)
_can_record = bind(_q, "can_record_invalidations", bool)


def _key(key: object, name: str = "key") -> str:
    return check_text(key, name, max_chars=MAX_KEY_CHARS)


def _keys(keys: object) -> list[str]:
    if isinstance(keys, str | bytes) or not isinstance(keys, list | tuple):
        raise ValidationError({"keys": "must be a list of keys"})
    return [_key(k, "keys") for k in keys]


def _ids(ids: object) -> list[int]:
    if not isinstance(ids, list | tuple) or not all(type(i) is int and 0 < i <= _TOP for i in ids):
        raise ValidationError({"ids": "must be a list of record ids"})
    return list(ids)


def get(db: Connection[Any], key: str) -> CacheEntry | None:
    """The live (unexpired) entry for ``key``, or None."""
    return _get.maybe(db, key=_key(key))


def _value(value: Any) -> Any:
    if value is None:
        raise ValidationError({"value": "must not be None (JSON null marks an invalidated key)"})
    if isinstance(value, Checked):
        return value.jsonb
    return json_value(value, "value", require_object=False)


class Checked:
    """A cache envelope (JSON text) whose value already passed the JSON-column rules: the cache checks
    each value once, on its way in, and stores the same text in Redis and here."""

    __slots__ = ("jsonb",)

    def __init__(self, text: bytes) -> None:
        self.jsonb = Jsonb(None, dumps=lambda _obj: text)


def _ttl(ttl: object) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 10**9:
        raise ValidationError({"ttl": "must be a positive number of seconds, or None"})
    return float(ttl)


def peek(db: Connection[Any], key: str) -> CacheEntry | None:
    """The row for ``key`` whatever its state (expired, tombstone: ``value is None``), for its version."""
    return _peek.maybe(db, key=_key(key))


def set(db: Connection[Any], key: str, value: Any, *, ttl: float | None = None, version: int = 1) -> CacheEntry | None:
    """Store ``value`` (any JSON value) under ``key`` for ``ttl`` seconds (None: no expiry), only if
    ``version`` (0 to 2^62) is newer than the stored one.

    Returns the stored entry, or None when the stored version is as new or newer (the write lost): read
    the row's version with ``peek`` before computing a value, and write that version + 1.
    """
    if type(version) is not int or not 0 <= version <= MAX_VERSION:
        raise ValidationError({"version": "must be an integer from 0 to 2**62"})
    return _set.maybe(db, key=_key(key), value=_value(value), version=version, ttl_seconds=_ttl(ttl))


def set_checked(db: Connection[Any], key: str, doc: Checked, *, ttl: float | None, version: int) -> CacheEntry | None:
    """``set`` for the cache's loaders: they write the row's own version + 1, which may lie above
    MAX_VERSION but never above bigint's top (a row there keeps its value until ``put`` or
    ``invalidate`` replace it, which they can)."""
    if not isinstance(doc, Checked):
        raise ValidationError({"doc": "must be a Checked envelope (use set for other values)"})
    if type(version) is not int or not 0 <= version <= _TOP:
        raise ValidationError({"version": "must be an integer from 0 to 2**63 - 1"})
    return _set.maybe(db, key=_key(key), value=doc.jsonb, version=version, ttl_seconds=_ttl(ttl))


def put(db: Connection[Any], key: str, value: Any, *, ttl: float | None = None) -> CacheEntry:
    """Store ``value`` unconditionally, moving the version on."""
    return _put.one(db, key=_key(key), value=_value(value), ttl_seconds=_ttl(ttl))


def invalidate(db: Connection[Any], keys: list[str]) -> int:
    """Tombstone ``keys`` (moving their versions on, so that no stale writer can bring them back);
    returns how many distinct keys."""
    checked = _keys(keys)
    return _invalidate.exec(db, keys=checked) if checked else 0


def delete(db: Connection[Any], key: str) -> bool:
    """Remove ``key``; False when it was not there."""
    return _delete.exec(db, key=_key(key)) > 0


def delete_prefix(db: Connection[Any], prefix: str) -> int:
    """Remove every key starting with ``prefix``; returns how many."""
    return _delete_prefix.exec(db, prefix=_key(prefix, "prefix"))


def purge_expired(db: Connection[Any]) -> int:
    """Remove expired entries; returns how many."""
    return _purge_expired.exec(db)


def count(db: Connection[Any]) -> int:
    """How many live entries."""
    return _count.scalar(db)


# ------------------------------------------------------------------------- pending invalidations


def record_invalidations(
    db: Connection[Any], keys: list[str], *, kind: str = "key", table_done: bool = False
) -> list[int]:
    """Record invalidations of ``keys`` (in the caller's transaction: they commit with the write);
    returns the record ids, for ``settle_invalidations``."""
    if kind not in KINDS:
        raise ValidationError({"kind": f"must be one of {', '.join(KINDS)}"})
    if type(table_done) is not bool:
        raise ValidationError({"table_done": "must be true or false"})
    checked = _keys(keys)
    return _record.many(db, kind=kind, keys=checked, table_done=table_done) if checked else []


def settle_invalidations(db: Connection[Any], ids: list[int], keys: list[str], *, redis_done: bool) -> None:
    """After COMMIT: tombstone ``keys`` and forget records ``ids`` (``redis_done``), or mark their
    cache_entries part done and leave them for the replay."""
    _settle.exec(db, ids=_ids(ids), keys=_keys(keys), redis_done=redis_done is True)


def pending_invalidations(db: Connection[Any], prefix: str, *, limit: int = 1000) -> list[PendingInvalidation]:
    """The oldest pending invalidations of keys under ``prefix``."""
    if type(limit) is not int or not 1 <= limit <= 10_000:
        raise ValidationError({"limit": "must be an integer from 1 to 10,000"})
    return _pending.many(db, prefix=_key(prefix, "prefix"), limit=limit)


def apply_invalidations_to_table(db: Connection[Any], ids: list[int]) -> None:
    """The cache_entries part of records ``ids``, once each (tombstones; then marked done)."""
    _apply.exec(db, ids=_ids(ids))


def forget_invalidations(db: Connection[Any], ids: list[int]) -> None:
    """Records ``ids`` are done (Redis took them)."""
    _forget.exec(db, ids=_ids(ids))


def can_record_invalidations(db: Connection[Any]) -> bool:
    """True when this database has cache_invalidations (migrations/0006) and the role may write it."""
    return _can_record.scalar(db)
