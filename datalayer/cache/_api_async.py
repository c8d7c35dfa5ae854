"""Cached API responses, grouped by endpoint: one generation counter per endpoint, part of every key,
so that ``invalidate_api(endpoint)`` retires them all at once without a SCAN."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from datalayer.cache._markers import SKIPPED

if TYPE_CHECKING:
    import psycopg

    from datalayer._acompat import AThunk
    from datalayer.cache._invalidations_async import Invalidations
    from datalayer.cache._keys import Keys
    from datalayer.cache._l1 import L1
    from datalayer.cache._redis_async import RedisLayer
    from datalayer.cache._table_async import TableLayer

__all__ = ["ApiResponses", "clock_generation"]


def clock_generation() -> int:
    """A generation to start from: the clock in ms (above every earlier life of a lost counter)."""
    return int(time.time() * 1000)


def _counter(raw: Any, default: int) -> int:
    """A generation counter read from Redis, or ``default`` when it is missing or not a sane integer."""
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return default
    return value if 0 < value < 10**18 else default


class ApiResponses:
    """Mixed into the cache manager."""

    if TYPE_CHECKING:
        keys: Keys
        l1: L1
        redis: RedisLayer
        table: TableLayer
        invalidations: Invalidations
        _origin: str
        _api_generations: dict[str, tuple[float, int]]

        async def _global_generation(self) -> int | None: ...

        async def get(self, key: str) -> Any: ...

        async def set(self, key: str, value: Any, ttl: float | None = None) -> None: ...

        async def _record(
            self, db: psycopg.AsyncConnection[Any] | None, keys: list[str], kind: str
        ) -> list[int] | None: ...

        async def _after_commit(self, db: psycopg.AsyncConnection[Any] | None, hook: AThunk[None]) -> None: ...

    async def _api_generation(self, endpoint: Any) -> int | None:
        gen_key = self.keys.api_generation(endpoint)
        if not await self.invalidations.allowed():
            return None
        cached = self._api_generations.get(gen_key)
        if cached is not None and time.monotonic() - cached[0] < self.l1.max_ttl:
            return cached[1]
        base = await self._global_generation()
        if base is None:
            return None
        raw = await self.redis.call(lambda c: c.get(gen_key))
        if raw is SKIPPED:
            return None
        gen = _counter(raw, base)  # a lost (or unusable) counter restarts above every earlier life
        self._api_generations[gen_key] = (time.monotonic(), gen)
        return gen

    async def _api_key(self, endpoint: Any, request: Any) -> str | None:
        gen = await self._api_generation(endpoint)
        return None if gen is None else self.keys.api(endpoint, request, gen)

    async def cache_api_response(self, endpoint: str, request: Any, response: Any, ttl: float = 300) -> bool:
        """Cache ``response`` for ``(endpoint, request)``; False when Redis is unavailable (API entries
        depend on the endpoint's generation, which lives in Redis)."""
        key = await self._api_key(endpoint, request)
        if key is None:
            return False
        await self.set(key, response, ttl)
        return True

    async def get_cached_api_response(self, endpoint: str, request: Any) -> Any:
        """The cached response for ``(endpoint, request)``, or None."""
        key = await self._api_key(endpoint, request)
        return None if key is None else await self.get(key)

    async def invalidate_api(self, endpoint: str, *, db: psycopg.AsyncConnection[Any] | None = None) -> None:
        """Retire every cached response of ``endpoint`` at once (its generation moves; no SCAN)."""
        gen_key = self.keys.api_generation(endpoint)
        prefix = self.keys.api_prefix_of(gen_key)
        ids = await self._record(db, [gen_key], "api")

        async def run() -> None:
            self._api_generations.pop(gen_key, None)
            base = await self._global_generation() or clock_generation()
            message = {"apis": [[gen_key, prefix]], "o": self._origin}
            redis_done = await self.redis.invalidate([], message, ((gen_key, base),)) is True
            self.l1.delete_prefix(prefix)
            await self.table.delete_prefix(prefix)
            await self.invalidations.settle(ids, [gen_key], redis_done, "api")

        await self._after_commit(db, run)
