"""Invalidations that cannot be lost: recorded in PostgreSQL, replayed into Redis, fenced on read.

An invalidation sent to a Redis that is down or frozen is gone, and a process that never saw the
outage goes on serving the old value from Redis once it answers again. So:

* **recorded**: an invalidation inside a ``transaction()`` is written to ``cache_invalidations`` in
  that transaction, before its COMMIT (it commits or rolls back with the write); after COMMIT the
  writer sends it to Redis and forgets the record, or leaves it there when Redis did not take it. An
  invalidation outside a transaction (and ``set``, a write of newer truth) is recorded only when its
  Redis call failed;
* **replayed**: any process of the service that finds records under its CACHE_PREFIX sends them to
  Redis (deleting the keys, moving their versions and generations on, telling every process to drop
  its L1 copies), applies them to cache_entries once, and deletes them;
* **fenced**: a process reads Redis only while it has looked at the records within the last
  ``interval`` seconds (the L1 lifetime) and found none, or replayed all it found. The look costs one
  small query per interval per process, on the caller that finds it due; a cache hit otherwise costs
  one clock read more. Values taken from Redis or the table go into L1 for no longer than the fence
  lasts.

The bound: a value invalidated by a committed write is not served by any process later than
``interval`` seconds after the COMMIT — or after Redis answers again, for a process that could not
reach it — whatever happened to the writer or to Redis in between. When PostgreSQL itself cannot be
asked, a process keeps to what it knew and serves Redis (logged): the writes whose invalidations
could be pending need PostgreSQL too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from datalayer._acompat import ARLock, AThunk
from datalayer.cache._keys import Keys, version_key
from datalayer.cache._markers import MISSING
from datalayer.cache._redis_async import RedisLayer
from datalayer.cache._table_async import TableLayer
from datalayer.repos import cache_entries_async

__all__ = ["Invalidations"]

log = logging.getLogger("datalayer.cache")
_BATCH = 1000
_MAX_BATCHES = 10


class Invalidations:
    """Records, replays and the read fence of one cache manager."""

    def __init__(
        self,
        *,
        table: TableLayer,
        redis: RedisLayer,
        keys: Keys,
        interval: float,
        origin: str,
        on_replayed: Callable[[dict[str, Any]], None],
        base_generation: AThunk[int],
        retire_all: AThunk[bool],
        counters: dict[str, int],
    ) -> None:
        self.table = table
        self.redis = redis
        self.keys = keys
        self.interval = interval
        self.origin = origin
        self.on_replayed = on_replayed
        self.base_generation = base_generation
        self.retire_all = retire_all
        self.counters = counters
        # Redis may be read while time.monotonic() < until; the next look is due at _due.
        self.until = 0.0 if table.enabled else math.inf
        self._due = 0.0
        self._lock = ARLock()  # re-entered when a replay's Redis call ends an outage
        self._checking = False
        self._recordable: dict[tuple[Any, ...], bool] = {}
        self._warned = False

    # ------------------------------------------------------------------------------- writers

    async def record(self, tx: Any, keys: list[str], kind: str) -> list[int] | None:
        """Record ``keys`` in the open transaction of ``tx``; None when that database cannot hold them
        (its migrations or grants are behind: then only a failed Redis call is recorded, after COMMIT)."""
        if not self.table.enabled or not keys:
            return None
        info = tx.info
        where = (info.host, info.port, info.dbname, info.user)
        recordable = self._recordable.get(where)
        if recordable is None:
            recordable = self._recordable[where] = await cache_entries_async.can_record_invalidations(tx)
            if not recordable:
                log.warning(
                    "datalayer cache: database %s cannot record cache invalidations (apply migration "
                    "0006 and grant the role INSERT, UPDATE, DELETE on cache_invalidations); an "
                    "invalidation lost to a Redis outage after COMMIT may then be served until its TTL",
                    info.dbname,
                )
        if not recordable:
            return None
        return await cache_entries_async.record_invalidations(tx, keys, kind=kind)

    async def settle(self, ids: list[int] | None, keys: list[str], redis_done: bool, kind: str) -> None:
        """After COMMIT: bring cache_entries up to date (tombstones for kind 'key'; the caller has
        deleted an API endpoint's rows) and forget the records, or leave them for the replay when Redis
        did not take the invalidation."""
        tombstones = keys if kind == "key" else []
        if ids and not redis_done:
            self.counters["invalidations_left"] += 1
        if ids:
            await self.table.call(
                lambda db: cache_entries_async.settle_invalidations(db, ids, tombstones, redis_done=redis_done)
            )
            return
        if tombstones:
            await self.table.invalidate(tombstones)
        if not redis_done:
            await self.lost(keys, kind, table_done=True)

    async def tombstone_first(self, ids: list[int] | None, keys: list[str]) -> None:
        """After COMMIT, before Redis: tombstone ``keys`` in cache_entries (marking the records' table
        part done). In this order a reader that refills Redis from the table once Redis is cleared finds
        the tombstone, never the old value."""
        if ids:
            await self.table.call(lambda db: cache_entries_async.settle_invalidations(db, ids, keys, redis_done=False))
        elif keys:
            await self.table.invalidate(keys)

    async def after_redis(self, ids: list[int] | None, keys: list[str], redis_done: bool) -> None:
        """After ``tombstone_first`` and the Redis part: forget the records Redis took, else leave them
        (or record the keys) for the replay."""
        if redis_done:
            if ids:
                await self.table.call(lambda db: cache_entries_async.forget_invalidations(db, ids))
            return
        if ids:
            self.counters["invalidations_left"] += 1
        else:
            await self.lost(keys, "key", table_done=True)

    async def lost(self, keys: list[str], kind: str, *, table_done: bool) -> None:
        """Redis did not take an invalidation that no transaction recorded: record it now."""
        if keys and self.table.enabled:
            self.counters["invalidations_left"] += 1
            await self.table.call(
                lambda db: cache_entries_async.record_invalidations(db, keys, kind=kind, table_done=table_done)
            )

    # ------------------------------------------------------------------------------- readers

    async def allowed(self) -> bool:
        """May Redis be read now? Looks at the records first when the last look is ``interval`` old."""
        now = time.monotonic()
        if now < self.until:
            return True
        if now >= self._due:
            await self.check()
        return time.monotonic() < self.until

    def expire(self) -> None:
        """Look again before the next Redis read (Redis was unreachable: records may have been left)."""
        if self.table.enabled:
            self.until = 0.0
            self._due = 0.0

    async def check(self) -> None:
        """Look at the records under our prefix; replay any into Redis and the table."""
        if not await self._lock.acquire(timeout=self.table.timeout):
            return
        if self._checking:  # this thread (or task) is already looking (a replay ended an outage)
            self._lock.release()
            return
        self._checking = True
        try:
            started = time.monotonic()
            if started < self._due:  # another caller looked while we waited for the lock
                return
            self.counters["invalidation_checks"] += 1
            clear = await self._replay_all()
            if clear is None:
                # PostgreSQL could not be asked: keep to what we knew (see the module's docstring).
                self._warn("could not look for pending invalidations in PostgreSQL; serving Redis meanwhile")
                clear = True
            elif not clear:
                self._warn("pending invalidations could not be replayed into Redis; not reading Redis meanwhile")
            else:
                self._warned = False
            self._due = started + self.interval
            self.until = self._due if clear else 0.0
        finally:
            self._checking = False
            self._lock.release()

    def _warn(self, message: str) -> None:
        if not self._warned:  # once per streak, not once per interval
            log.warning("datalayer cache: %s", message)
            self._warned = True

    async def _replay_all(self) -> bool | None:
        """True when nothing is left pending, False when Redis did not take them, None when the
        database could not be asked."""
        prefix = self.keys.prefix + ":"
        for _ in range(_MAX_BATCHES):
            pending = await self.table.call(
                lambda db: cache_entries_async.pending_invalidations(db, prefix, limit=_BATCH)
            )
            if pending is MISSING:
                return None
            if not pending:
                return True
            if not await self._replay(pending):
                return False
            if len(pending) < _BATCH:
                return True
        return False

    async def _replay(self, pending: list[cache_entries_async.PendingInvalidation]) -> bool:
        todo = [p for p in pending if not p.table_done]
        for p in todo:
            if p.kind == "api" and await self.table.delete_prefix(self.keys.api_prefix_of(p.key)) is MISSING:
                return False
        if (
            todo
            and await self.table.call(
                lambda db: cache_entries_async.apply_invalidations_to_table(db, [p.id for p in todo])
            )
            is MISSING
        ):
            return False
        keys = sorted({p.key for p in pending if p.kind == "key"})
        counters = sorted({p.key for p in pending if p.kind == "api"})
        message: dict[str, Any] = {
            "k": keys,
            "apis": [[c, self.keys.api_prefix_of(c)] for c in counters],
            "o": self.origin,
        }
        base = await self.base_generation()
        bumps = tuple((c, base) for c in counters)
        done = await self.redis.invalidate([(k, version_key(k)) for k in keys], message, bumps)
        if done is None:
            # Redis refused the scripts themselves (a key it cannot hold): a replay would be refused
            # forever, and the fence would keep every process off Redis. Moving the global generation
            # on retires every value written before, these keys' included.
            if not await self.retire_all():
                return False
            self.counters["invalidations_unreplayable"] += len(pending)
            log.error(
                "datalayer cache: Redis refused to replay the invalidation of %s; moved the global "
                "generation on instead (every cached value is reloaded)",
                ", ".join(keys + counters)[:500],
            )
        elif not done:
            return False
        self.on_replayed(message)
        self.counters["invalidations_replayed"] += len(pending)
        await self.table.call(lambda db: cache_entries_async.forget_invalidations(db, [p.id for p in pending]))
        return True
