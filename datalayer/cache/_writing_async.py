"""Writing and invalidating: every layer, and after COMMIT when a transaction is open."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import psycopg

from datalayer._acompat import AThunk
from datalayer.cache._envelope import encode_doc, encode_value, encode_wire, schema_of
from datalayer.cache._keys import check_key, version_key
from datalayer.cache._markers import SKIPPED
from datalayer.errors import CacheUnavailable, ValidationError

if TYPE_CHECKING:
    from datalayer.cache._invalidations_async import Invalidations
    from datalayer.cache._keys import Keys
    from datalayer.cache._l1 import L1
    from datalayer.cache._redis_async import RedisLayer
    from datalayer.cache._table_async import TableLayer

__all__ = ["Writing"]


class Writing:
    """Mixed into the cache manager."""

    if TYPE_CHECKING:
        keys: Keys
        l1: L1
        redis: RedisLayer
        table: TableLayer
        invalidations: Invalidations
        _origin: str
        _epoch: int

        async def _global_generation(self) -> int | None: ...
        def _ttl(self, ttl: float | None) -> float: ...

    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, record_type: type[Any] | None = None
    ) -> None:
        """Store ``value`` under ``key`` in every layer (the newest truth: it wins over in-flight loaders).

        The value follows the JSON-column rules of the repositories (JSON-serialisable, finite numbers,
        64-bit integers, text PostgreSQL can store, at most 1 MB as JSON, no NUL): anything else is a
        ValidationError and no layer is written.
        """
        check_key(key)
        if value is None:
            raise ValidationError({"value": "must not be None (use delete to forget a key)"})
        schema = schema_of(record_type or (type(value) if attrs.has(type(value)) else None))
        life = self._ttl(ttl)
        data = encode_value(value)
        self._epoch += 1
        self.l1.delete(key)
        generation = await self._global_generation()
        redis_done = False
        if generation is not None:
            payload = encode_wire(
                data, schema=schema, generation=generation, ttl=life, load_seconds=0.0, negative=False
            )
            if await self.redis.put(key, version_key(key), payload, int(life * 1000)) is not SKIPPED:
                redis_done = True
                self.redis.stats["writes"] += 1
                await self.redis.publish({"k": [key], "o": self._origin}, near=key)
        await self.table.put(key, encode_doc(data, schema=schema, ttl=life, load_seconds=0.0), life)
        if not redis_done:  # Redis still holds the older value: have it replayed away
            await self.invalidations.lost([key], "key", table_done=True)

    async def delete(self, *keys: str, db: psycopg.AsyncConnection[Any] | None = None) -> None:
        """Invalidate ``keys`` in every layer and in every process's L1 — after COMMIT when a
        ``transaction()`` is open (found through ``db`` or the current context), never on rollback.

        Inside a transaction the invalidation is also recorded in it (cache_invalidations), so that it
        survives a Redis outage or the end of this process after COMMIT; see ``_invalidations``.
        """
        checked = [check_key(k) for k in keys]
        ids = await self._record(db, checked, "key")
        await self._after_commit(db, lambda: self._invalidate_now(checked, ids))

    async def _record(self, db: psycopg.AsyncConnection[Any] | None, keys: list[str], kind: str) -> list[int] | None:
        from datalayer.transactions_async import current_transaction, in_transaction

        tx = db if db is not None else current_transaction()
        if tx is None or not in_transaction(tx):
            return None
        return await self.invalidations.record(tx, keys, kind)

    async def _after_commit(self, db: psycopg.AsyncConnection[Any] | None, hook: AThunk[None]) -> None:
        from datalayer.transactions_async import current_transaction, in_transaction, on_commit

        tx = db if db is not None else current_transaction()
        if tx is None or not in_transaction(tx):
            await hook()  # no transaction: now, and a strict cache's CacheUnavailable reaches the caller
            return
        await on_commit(hook, tx, also_if_unknown=True)

    async def _invalidate_now(self, keys: list[str], ids: list[int] | None) -> None:
        self._epoch += 1
        self.l1.delete(*keys)
        await self.invalidations.tombstone_first(ids, keys)
        message: dict[str, Any] = {"k": keys, "o": self._origin}
        try:
            # Refused (None) is left for the replay too, which settles it.
            redis_done = await self.redis.invalidate([(k, version_key(k)) for k in keys], message) is True
        except CacheUnavailable:  # strict: the caller hears of it, and the replay still happens
            await self.invalidations.after_redis(ids, keys, False)
            raise
        await self.invalidations.after_redis(ids, keys, redis_done)
