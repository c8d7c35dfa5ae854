"""The global generation of the cache and the messages that keep every process's L1 in step with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from datalayer.cache._api_async import clock_generation
from datalayer.cache._markers import SKIPPED
from datalayer.errors import CacheUnavailable

if TYPE_CHECKING:
    from datalayer.cache._invalidations_async import Invalidations
    from datalayer.cache._keys import Keys
    from datalayer.cache._l1 import L1
    from datalayer.cache._redis_async import RedisLayer

__all__ = ["Generations", "dumps"]


def dumps(doc: dict[str, Any]) -> bytes:
    """A pub/sub message as JSON bytes."""
    return orjson.dumps(doc)


class Generations:
    """Mixed into the cache manager."""

    if TYPE_CHECKING:
        keys: Keys
        l1: L1
        redis: RedisLayer
        invalidations: Invalidations
        _origin: str
        _epoch: int
        _generation: int | None
        _gen_lock: Any
        _api_generations: dict[str, tuple[float, int]]

    async def _global_generation(self) -> int | None:
        """The global generation, read from Redis once and then kept up to date by pub/sub."""
        if self._generation is not None:
            return self._generation
        async with self._gen_lock:
            if self._generation is None:
                raw = await self.redis.generation(self.keys.global_generation(), clock_generation())
                if raw is SKIPPED or raw is None:
                    return None
                self._generation = int(raw)
            return self._generation

    async def _base_generation(self) -> int:
        """The global generation, or the clock's when Redis cannot say (a counter's restart point)."""
        return await self._global_generation() or clock_generation()

    async def _retire_all(self) -> bool:
        """Move the global generation on (every value written before is a miss) and tell every process;
        False when Redis did not take it."""
        try:
            new = await self.redis.bump(self.keys.global_generation(), clock_generation())
            if new is SKIPPED:
                return False
            self._generation = int(new)
            self.l1.clear()
            self._epoch += 1
            await self.redis.publish({"gen": int(new), "o": self._origin}, near=self.keys.global_generation())
        except CacheUnavailable:
            return False
        return True

    async def _recovered(self) -> None:
        # Redis is reachable again after calls failed: invalidations may have been lost meanwhile (ours
        # or other processes'). Replay the recorded ones before reading Redis again, and retire whatever
        # Redis held before by moving the generation (it may have lost its data and version counters).
        self.l1.clear()
        self._epoch += 1
        self._api_generations.clear()
        self.invalidations.expire()
        try:  # runs in the prober or inside a caller's call: strict mode must not raise here
            new = await self.redis.bump(self.keys.global_generation(), clock_generation())
            if new is SKIPPED:
                self._generation = None
                return
            self._generation = int(new)
            await self.redis.publish({"gen": int(new), "o": self._origin}, near=self.keys.global_generation())
            await self.invalidations.check()
        except CacheUnavailable:
            self._generation = None

    def _message(self, msg: dict[str, Any]) -> None:
        self._epoch += 1
        if not isinstance(msg, dict):  # not one of ours: nothing to drop
            return
        if "resubscribed" in msg:
            self.l1.clear()
            self._generation = None
            self._api_generations.clear()
            return
        if "k" in msg and isinstance(msg["k"], list):
            self.l1.delete(*[k for k in msg["k"] if isinstance(k, str)])
        if "gen" in msg and isinstance(msg["gen"], int):
            self._generation = msg["gen"]
            self.l1.clear()
        if "api" in msg and isinstance(msg["api"], str):  # the message of earlier versions
            self._api_generations.pop(msg["api"], None)
        for item in msg.get("apis") or ():
            if isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) for part in item):
                self._api_generations.pop(item[0], None)
                self.l1.delete_prefix(item[1])
        if "flush" in msg and isinstance(msg["flush"], str):
            self.l1.delete_prefix(msg["flush"])
