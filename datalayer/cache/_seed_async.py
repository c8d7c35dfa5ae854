"""The seed project's cache API (``cache_user_data`` …), kept as thin names over get / set / delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from datalayer.cache._keys import Keys

__all__ = ["SeedAPI"]


class SeedAPI:
    """Mixed into the cache manager: each method names its key through ``self.keys``."""

    if TYPE_CHECKING:
        keys: Keys

        async def get(self, key: str) -> Any: ...

        async def set(self, key: str, value: Any, ttl: float | None = None) -> None: ...

        async def delete(self, *keys: str, db: psycopg.AsyncConnection[Any] | None = None) -> None: ...

    async def cache_analysis_result(self, analysis_id: int | str, result: Any, ttl: float = 3600) -> None:
        await self.set(self.keys.analysis_result(analysis_id), result, ttl)

    async def get_cached_analysis_result(self, analysis_id: int | str) -> Any:
        return await self.get(self.keys.analysis_result(analysis_id))

    async def cache_user_data(self, user_id: int | str, data: Any, ttl: float = 1800) -> None:
        await self.set(self.keys.user(user_id), data, ttl)

    async def get_cached_user_data(self, user_id: int | str) -> Any:
        return await self.get(self.keys.user(user_id))

    async def cache_user_analyses(self, user_id: int | str, analyses: Any, ttl: float = 600) -> None:
        await self.set(self.keys.user_analyses(user_id), analyses, ttl)

    async def get_cached_user_analyses(self, user_id: int | str) -> Any:
        return await self.get(self.keys.user_analyses(user_id))

    async def cache_tool_generation(self, generation_id: int | str, data: Any, ttl: float = 3600) -> None:
        await self.set(self.keys.tool_generation(generation_id), data, ttl)

    async def get_cached_tool_generation(self, generation_id: int | str) -> Any:
        return await self.get(self.keys.tool_generation(generation_id))

    async def cache_system_stats(self, stats: Any, ttl: float = 60) -> None:
        await self.set(self.keys.system_stats(), stats, ttl)

    async def get_cached_system_stats(self) -> Any:
        return await self.get(self.keys.system_stats())

    async def invalidate_user_cache(
        self, user_id: int | str, *, db: psycopg.AsyncConnection[Any] | None = None
    ) -> None:
        """Remove ``user:{id}``, ``user_analyses:{id}`` and the system stats derived from them."""
        await self.delete(self.keys.user(user_id), self.keys.user_analyses(user_id), self.keys.system_stats(), db=db)

    async def invalidate_analysis(
        self,
        analysis_id: int | str,
        *,
        user_id: int | str | None = None,
        db: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        """Remove ``analysis_result:{id}``, the system stats and, given ``user_id``, the user's analyses."""
        keys = [self.keys.analysis_result(analysis_id), self.keys.system_stats()]
        if user_id is not None:
            keys.append(self.keys.user_analyses(user_id))
        await self.delete(*keys, db=db)

    async def invalidate_tool_generation(
        self, generation_id: int | str, *, db: psycopg.AsyncConnection[Any] | None = None
    ) -> None:
        """Remove ``tool_generation:{id}``."""
        await self.delete(self.keys.tool_generation(generation_id), db=db)
