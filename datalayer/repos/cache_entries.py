"""cache_entries: the persistent layer of the cache (get ignores expired rows; versioned upsert)."""

from __future__ import annotations

from typing import Any

from psycopg import Connection

from datalayer._run import Bound, bind
from datalayer._sql import load_queries
from datalayer.errors import ValidationError
from datalayer.records import CacheEntry
from datalayer.repos._common import check_text, json_value

__all__ = ["count", "delete", "delete_prefix", "get", "purge_expired", "set"]

MAX_KEY_CHARS = 512

_q = load_queries("cache_entries")
_get = bind(_q, "get", CacheEntry)
_set = bind(_q, "set", CacheEntry)
_delete: Bound[None] = bind(_q, "delete", None)
_delete_prefix: Bound[None] = bind(_q, "delete_prefix", None)
_purge_expired: Bound[None] = bind(_q, "purge_expired", None)
_count = bind(_q, "count", int)


def _key(key: object) -> str:
    return check_text(key, "key", max_chars=MAX_KEY_CHARS)


def get(db: Connection[Any], key: str) -> CacheEntry | None:
    """The live (unexpired) entry for ``key``, or None."""
    return _get.maybe(db, key=_key(key))


def set(db: Connection[Any], key: str, value: Any, *, ttl: float | None = None, version: int = 0) -> CacheEntry | None:
    """Store ``value`` (any JSON value) under ``key`` for ``ttl`` seconds (None: no expiry).

    Returns the stored entry, or None when the stored entry has a newer ``version`` (the write lost).
    """
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 10**9):
        raise ValidationError({"ttl": "must be a positive number of seconds, or None"})
    if type(version) is not int or not 0 <= version < 2**63:
        raise ValidationError({"version": "must be a non-negative integer"})
    return _set.maybe(
        db,
        key=_key(key),
        value=json_value(value, "value", require_object=False),
        version=version,
        ttl_seconds=None if ttl is None else float(ttl),
    )


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
