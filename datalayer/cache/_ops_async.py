"""Observability and operator actions of the cache: ``stats()``, ``flush()``, ``close()``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from datalayer.cache._keys import check_key
from datalayer.cache._markers import MISSING, SKIPPED
from datalayer.errors import CacheUnavailable, ValidationError

if TYPE_CHECKING:
    from datalayer.cache._keys import Keys
    from datalayer.cache._l1 import L1
    from datalayer.cache._redis_async import RedisLayer
    from datalayer.cache._table_async import TableLayer

__all__ = ["Operations"]


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class Operations:
    """Mixed into the cache manager."""

    if TYPE_CHECKING:
        keys: Keys
        l1: L1
        redis: RedisLayer
        table: TableLayer
        stats_counters: dict[str, int]
        _origin: str
        _epoch: int
        _generation: int | None

        @property
        def use_table(self) -> bool: ...

    async def stats(self, *, probe: bool = False) -> dict[str, Any]:
        """Hits, misses and errors per layer, the breaker's state, the generation, pending invalidations.

        ``probe=True`` also pings Redis (``redis.ping``) and counts the table's live entries.
        """
        c = self.stats_counters
        ping = await self.redis.call(lambda r: r.ping()) is True if probe else None
        b = self.redis.breaker  # after the ping: its failure opens the breaker
        out: dict[str, Any] = {
            "l1": {"hits": c["l1_hits"], "misses": c["l1_misses"], "size": len(self.l1)},
            "redis": {**self.redis.stats, "url": self.redis.target.display},
            "table": {
                "hits": c["table_hits"],
                "misses": c["table_misses"],
                "errors": c["table_errors"],
                "enabled": self.use_table,
            },
            "loads": c["loads"],
            "negative_hits": c["negative_hits"],
            "early_refreshes": c["early_refreshes"],
            "stale_writes_refused": c["stale_writes_refused"],
            "invalidations": {
                "checks": c["invalidation_checks"],
                "left_for_replay": c["invalidations_left"],
                "replayed": c["invalidations_replayed"],
                "unreplayable": c["invalidations_unreplayable"],  # Redis refused them: settled by a new generation
            },
            "breaker": {"state": b.state, "failures": b.failures, "opened": b.opened},
            "generation": self._generation,
            "subscribed": self.redis.subscribed.is_set(),
        }
        if probe:
            out["redis"]["ping"] = ping
            entries = await self.table.count()
            out["table"]["entries"] = None if entries is MISSING else entries
        return out

    async def flush(self, prefix: str | None = None) -> int:
        """Delete every key under ``prefix`` (default: the whole CACHE_PREFIX) in Redis and the table and
        retire every process's L1; returns how many Redis keys were deleted. For operators (uses SCAN)."""
        base = f"{self.keys.prefix}:"
        full = base + (prefix or "")
        if prefix is not None and ("*" in prefix or "?" in prefix or "[" in prefix):
            raise ValidationError({"prefix": "must be a plain prefix (no * ? [ wildcards)"})
        check_key(full)

        async def run(c: Any) -> int:
            n = 0
            # Untagged keys keep their version counter and lock as "{key}:ver" / "{key}:lock".
            for pattern in (_glob_escape(full) + "*", _glob_escape("{" + full) + "*"):
                batch: list[Any] = []
                async for k in c.scan_iter(match=pattern, count=1000):
                    batch.append(k)
                    if len(batch) >= 500:
                        n += int(await c.unlink(*batch))
                        batch = []
                if batch:
                    n += int(await c.unlink(*batch))
            await c.publish(self.keys.channel(), orjson.dumps({"flush": full, "o": self._origin}))
            return n

        deleted = await self.redis.call(run)
        if deleted is SKIPPED:
            # Flushing only the table would leave Redis serving what the operator meant to remove.
            raise CacheUnavailable(
                f"Redis at {self.redis.target.display} is unavailable; nothing was flushed (run it again once "
                "Redis answers)"
            )
        self.l1.delete_prefix(full)
        self._epoch += 1
        await self.table.delete_prefix(full)
        return int(deleted)

    async def close(self) -> None:
        """Stop the subscriber and close the Redis connections."""
        await self.redis.close()
