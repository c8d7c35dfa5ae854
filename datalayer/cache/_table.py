# Generated from datalayer/cache/_table_async.py by tools/async_to_sync.py: edit that file, then run the tool.
"""The cache's third layer: the cache_entries table, reached through a pool of the caller's choice.

Every call is bounded (the pool's connection wait) and never raises: a database that fails counts
as an error and the caller carries on as if the table had missed. The table is the layer Redis
outages fall back on, and the place pending invalidations are kept (see ``_invalidations``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

import psycopg

from datalayer._acompat import Job
from datalayer.cache._markers import MISSING
from datalayer.defaults import connection
from datalayer.errors import DataLayerError
from datalayer.repos import cache_entries

__all__ = ["MISSING", "TableLayer", "expired"]

log = logging.getLogger("datalayer.cache")
T = TypeVar("T")


class TableLayer:
    """``call(fn)`` runs ``fn(db)`` on a pooled connection of ``pool`` (None: the default pool)."""

    def __init__(self, pool: Any, enabled: bool, counters: dict[str, int], timeout: float = 2.0) -> None:
        self.pool = pool
        self.enabled = enabled
        self.counters = counters
        self.timeout = timeout

    def call(self, fn: Job[Any, T]) -> Any:
        """``fn(db)``, or MISSING when the table is off or the database failed."""
        if not self.enabled:
            return MISSING
        try:
            with connection(self.pool, timeout=self.timeout) as db:
                return fn(db)
        except (DataLayerError, psycopg.Error) as e:
            self.counters["table_errors"] += 1
            log.debug("datalayer cache: the cache_entries table failed (%s: %s)", type(e).__name__, e)
            return MISSING

    def peek(self, key: str) -> Any:
        return self.call(lambda db: cache_entries.peek(db, key))

    def store(self, key: str, doc: bytes, ttl: float, version: int) -> Any:
        """Write ``doc`` if ``version`` beats the row's: the entry, None when it lost, MISSING on failure."""
        checked = cache_entries.Checked(doc)
        return self.call(lambda db: cache_entries.set_checked(db, key, checked, ttl=ttl, version=version))

    def put(self, key: str, doc: bytes, ttl: float) -> Any:
        checked = cache_entries.Checked(doc)
        return self.call(lambda db: cache_entries.put(db, key, checked, ttl=ttl))

    def invalidate(self, keys: list[str]) -> Any:
        return self.call(lambda db: cache_entries.invalidate(db, keys))

    def delete_prefix(self, prefix: str) -> Any:
        return self.call(lambda db: cache_entries.delete_prefix(db, prefix))

    def count(self) -> Any:
        return self.call(cache_entries.count)


def expired(row: Any) -> bool:
    """True when a cache_entries row is past its expiry."""
    return row.expires_at is not None and row.expires_at.timestamp() <= time.time()
