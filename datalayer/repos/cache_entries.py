# Generated from datalayer/repos/cache_entries_async.py by tools/async_to_sync.py: edit that file, then run the tool.
"""cache_entries: the persistent layer of the cache (get ignores expired rows; versioned upsert), and
the pending invalidations of cache_invalidations (what the cache could not be sure Redis took).

One source, two APIs: ``cache_entries_async.py`` is ``datalayer.aio.cache_entry_repo`` (awaited);
``cache_entries.py``, generated from it by tools/async_to_sync.py, is ``datalayer.cache_entry_repo``.
"""

from __future__ import annotations

from typing import Any

from psycopg import Connection

from datalayer import sql
from datalayer.project import builtin_sql_dir
from datalayer.records import CacheEntry
from datalayer.repos._cache_types import Checked, PendingInvalidation
from datalayer.repos._common import (
    MAX_KEY_CHARS,
    check_flag,
    check_key,
    check_keys,
    check_kind,
    check_limit,
    check_present,
    check_record_ids,
    check_ttl,
    check_version,
    json_value,
    wrong_type,
)

__all__ = [
    "MAX_KEY_CHARS",
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

# The highest version a caller may ask for. Every write or invalidation moves a version on by one and
# bigint stops at 2^63 - 1: from here that is 2^62 moves away (146 years at a billion a second), and
# the SQL stops at the top rather than fail, so no row can be left that nothing can replace.
MAX_VERSION = 2**62
# Checked against the row's own version + 1 by the cache's loaders (never above bigint's top).
_TOP = 2**63 - 1
KINDS = ("key", "api")


_q = sql.load(builtin_sql_dir() / "cache_entries.sql")
_get = _q.bind("get", CacheEntry)
_peek = _q.bind("peek", CacheEntry)
_set = _q.bind("set", CacheEntry)
_put = _q.bind("put", CacheEntry)
_invalidate = _q.bind("invalidate")
_delete = _q.bind("delete")
_delete_prefix = _q.bind("delete_prefix")
_purge_expired = _q.bind("purge_expired")
_count = _q.bind("count", int)
_record = _q.bind("record_invalidations", int)
_settle = _q.bind("settle_invalidations")
_pending = _q.bind("pending_invalidations", PendingInvalidation)
_apply = _q.bind("apply_invalidations_to_table")
_forget = _q.bind("forget_invalidations")
_can_record = _q.bind("can_record_invalidations", bool)


def get(db: Connection[Any], key: str) -> CacheEntry | None:
    """The live (unexpired) entry for ``key``, or None."""
    return _get.maybe(db, key=check_key(key))


def _value(value: Any) -> Any:
    check_present(value, "value", "must not be None (JSON null marks an invalidated key)")
    if isinstance(value, Checked):
        return value.jsonb
    return json_value(value, "value", require_object=False)


def peek(db: Connection[Any], key: str) -> CacheEntry | None:
    """The row for ``key`` whatever its state (expired, tombstone: ``value is None``), for its version."""
    return _peek.maybe(db, key=check_key(key))


def set(db: Connection[Any], key: str, value: Any, *, ttl: float | None = None, version: int = 1) -> CacheEntry | None:
    """Store ``value`` (any JSON value) under ``key`` for ``ttl`` seconds (None: no expiry), only if
    ``version`` (0 to 2^62) is newer than the stored one.

    Returns the stored entry, or None when the stored version is as new or newer (the write lost): read
    the row's version with ``peek`` before computing a value, and write that version + 1.
    """
    return _set.maybe(
        db,
        key=check_key(key),
        value=_value(value),
        version=check_version(version, MAX_VERSION, "2**62"),
        ttl=check_ttl(ttl),
    )


def set_checked(db: Connection[Any], key: str, value: Checked, *, ttl: float | None, version: int) -> CacheEntry | None:
    """``set`` for the cache's loaders: they write the row's own version + 1, which may lie above
    MAX_VERSION but never above bigint's top (a row there keeps its value until ``put`` or
    ``invalidate`` replace it, which they can)."""
    if not isinstance(value, Checked):
        raise wrong_type("value", "a Checked envelope (use set for other values)", value)
    return _set.maybe(
        db, key=check_key(key), value=value.jsonb, version=check_version(version, _TOP, "2**63 - 1"), ttl=check_ttl(ttl)
    )


def put(db: Connection[Any], key: str, value: Any, *, ttl: float | None = None) -> CacheEntry:
    """Store ``value`` unconditionally, moving the version on."""
    return _put.one(db, key=check_key(key), value=_value(value), ttl=check_ttl(ttl))


def invalidate(db: Connection[Any], keys: list[str]) -> int:
    """Tombstone ``keys`` (moving their versions on, so that no stale writer can bring them back);
    returns how many distinct keys."""
    checked = check_keys(keys)
    return _invalidate.exec(db, keys=checked) if checked else 0


def delete(db: Connection[Any], key: str) -> bool:
    """Remove ``key``; False when it was not there."""
    return _delete.exec(db, key=check_key(key)) > 0


def delete_prefix(db: Connection[Any], prefix: str) -> int:
    """Remove every key starting with ``prefix``; returns how many."""
    return _delete_prefix.exec(db, prefix=check_key(prefix, "prefix"))


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
    kind, done = check_kind(kind, KINDS), check_flag(table_done, "table_done")
    checked = check_keys(keys)
    return _record.many(db, kind=kind, keys=checked, table_done=done) if checked else []


def settle_invalidations(db: Connection[Any], ids: list[int], keys: list[str], *, redis_done: bool) -> None:
    """After COMMIT: tombstone ``keys`` and forget records ``ids`` (``redis_done``), or mark their
    cache_entries part done and leave them for the replay."""
    _settle.exec(db, ids=check_record_ids(ids), keys=check_keys(keys), redis_done=check_flag(redis_done, "redis_done"))


def pending_invalidations(db: Connection[Any], prefix: str, *, limit: int = 1000) -> list[PendingInvalidation]:
    """The oldest pending invalidations of keys under ``prefix``."""
    return _pending.many(db, prefix=check_key(prefix, "prefix"), limit=check_limit(limit, most=10_000))


def apply_invalidations_to_table(db: Connection[Any], ids: list[int]) -> None:
    """The cache_entries part of records ``ids``, once each (tombstones; then marked done)."""
    _apply.exec(db, ids=check_record_ids(ids))


def forget_invalidations(db: Connection[Any], ids: list[int]) -> None:
    """Records ``ids`` are done (Redis took them)."""
    _forget.exec(db, ids=check_record_ids(ids))


def can_record_invalidations(db: Connection[Any]) -> bool:
    """True when this database has cache_invalidations (migrations/0006) and the role may write it."""
    return _can_record.scalar(db)
