"""cache_entries: the persistent layer of the cache (get ignores expired rows; versioned upsert)."""

from __future__ import annotations

from typing import Any

from psycopg import Connection

from datalayer._run import Bound, bind
from datalayer._sql import load_queries
from datalayer.errors import ValidationError
from datalayer.records import CacheEntry
from datalayer.repos._common import check_text, json_value

__all__ = ["count", "delete", "delete_prefix", "get", "invalidate", "peek", "purge_expired", "put", "set"]

MAX_KEY_CHARS = 512

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


def _key(key: object) -> str:
    return check_text(key, "key", max_chars=MAX_KEY_CHARS)


def get(db: Connection[Any], key: str) -> CacheEntry | None:
    """The live (unexpired) entry for ``key``, or None."""
    return _get.maybe(db, key=_key(key))


def _value(value: Any) -> Any:
    if value is None:
        raise ValidationError({"value": "must not be None (JSON null marks an invalidated key)"})
    return json_value(value, "value", require_object=False)


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
    ``version`` is newer than the stored one.

    Returns the stored entry, or None when the stored version is as new or newer (the write lost): read
    the row's version with ``peek`` before computing a value, and write that version + 1.
    """
    if type(version) is not int or not 0 <= version < 2**63:
        raise ValidationError({"version": "must be a non-negative integer"})
    return _set.maybe(
        db,
        key=_key(key),
        value=_value(value),
        version=version,
        ttl_seconds=_ttl(ttl),
    )


def put(db: Connection[Any], key: str, value: Any, *, ttl: float | None = None) -> CacheEntry:
    """Store ``value`` unconditionally, moving the version on."""
    return _put.one(db, key=_key(key), value=_value(value), ttl_seconds=_ttl(ttl))


def invalidate(db: Connection[Any], keys: list[str]) -> int:
    """Tombstone ``keys`` (moving their versions on, so that no stale writer can bring them back)."""
    checked = [_key(k) for k in keys]
    return _invalidate.exec(db, keys=checked) if checked else 0


def delete(db: Connection[Any], key: str) -> bool:
    """Remove ``key``; False when it was not there."""
    return _delete.exec(db, key=_key(key)) > 0


def delete_prefix(db: Connection[Any], prefix: str) -> int:
    """Remove every key starting with ``prefix``; returns how many."""
    return _delete_prefix.exec(db, prefix=_key(prefix))


def purge_expired(db: Connection[Any]) -> int:
    """Remove expired entries; returns how many."""
    return _purge_expired.exec(db)


def count(db: Connection[Any]) -> int:
    """How many live entries."""
    return _count.scalar(db)
