"""Reading through the layers: L1, then Redis, then the cache_entries table, filling the faster ones."""

from __future__ import annotations

import math
import random
import time
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import attrs
import orjson

from datalayer import tracing
from datalayer.cache._envelope import (
    _UNREADABLE,
    Envelope,
    decode_doc,
    decode_wire,
    encode_wire,
    hit_prefix,
    read_hit,
    schema_of,
)
from datalayer.cache._keys import check_key, version_key
from datalayer.cache._loading_async import HIT, Miss
from datalayer.cache._markers import MISSING, SKIPPED
from datalayer.cache._table_async import expired
from datalayer.errors import ValidationError

if TYPE_CHECKING:
    from datalayer.cache._invalidations_async import Invalidations
    from datalayer.cache._l1 import L1
    from datalayer.cache._redis_async import RedisLayer
    from datalayer.cache._table_async import TableLayer

__all__ = ["Reading"]

T = TypeVar("T")
# Our own generator: jitter never moves the global random state a service (or its tests) may seed.
_rng = random.Random()  # noqa: S311 - jitter, not secrets


class Reading:
    """Mixed into the cache manager."""

    if TYPE_CHECKING:
        l1: L1
        redis: RedisLayer
        table: TableLayer
        invalidations: Invalidations
        stats_counters: dict[str, int]
        default_ttl: float
        xfetch_beta: float
        _epoch: int
        _generation: int | None

        async def _global_generation(self) -> int | None: ...

    def _ttl(self, ttl: float | None) -> float:
        base = self.default_ttl if ttl is None else ttl
        if isinstance(base, bool) or not isinstance(base, int | float) or not 0 < base <= 10**8:
            raise ValidationError({"ttl": "must be a positive number of seconds"})
        return float(base) * _rng.uniform(0.9, 1.0)  # jitter: keys cached together do not expire together

    @overload
    async def get(self, key: str, record_type: None = None) -> Any: ...

    @overload
    async def get(self, key: str, record_type: type[T]) -> T | None: ...

    async def get(self, key: str, record_type: type[T] | None = None) -> T | None:
        """The cached value of ``key`` from the fastest layer that has it, or None (with ``record_type``,
        a record of that type)."""
        schema = schema_of(record_type)
        raw = SKIPPED
        generation = self._generation
        if generation is not None and not self.l1.size and time.monotonic() < self.invalidations.until:
            # The Redis hit, on the hot path: one GET, one startswith, then only the value is parsed.
            check_key(key)
            raw = await self.redis.get(key)
            if raw is not None and raw is not SKIPPED and raw.startswith(hit_prefix(schema, generation)):
                value = read_hit(raw, record_type, schema)
                if value is not _UNREADABLE:
                    self.redis.stats["hits"] += 1
                    if tracing._tracers:
                        tracing.cache_lookup("redis", True)
                    return value  # type: ignore[no-any-return]
        env, _ = await self._lookup(key, schema, record_type, refresh=False, prefetched=raw)
        return None if env is None or env.negative else cast(T, env.value)

    async def _lookup(
        self, key: str, schema: str, record_type: type[Any] | None, *, refresh: bool, prefetched: Any = SKIPPED
    ) -> tuple[Envelope | None, Miss]:
        """(envelope or None, what a miss learnt: the versions a loader's write must not race)."""
        counters = self.stats_counters
        if self.l1.size:
            found, item = self.l1.get(key)
            if found and item[0] == schema:
                counters["l1_hits"] += 1
                if tracing._tracers:
                    tracing.cache_lookup("l1", True, refresh)
                env = item[1]
                if item[2] is not None:  # plain JSON values are kept encoded: each caller gets its own copy
                    env = env.with_value(orjson.loads(item[2]))
                return env, HIT
            counters["l1_misses"] += 1
            if tracing._tracers:
                tracing.cache_lookup("l1", False, refresh)
        check_key(key)  # past L1, the key goes to Redis and PostgreSQL
        epoch = self._epoch
        generation: int | None = None
        if await self.invalidations.allowed():  # nothing pending that Redis has not taken
            generation = self._generation if self._generation is not None else await self._global_generation()
        if generation is not None:
            raw = await self.redis.get(key) if prefetched is SKIPPED else prefetched
            if raw is not SKIPPED:
                env = decode_wire(raw, schema=schema, record_type=record_type, generation=generation)
                if env is not None:
                    self.redis.stats["hits"] += 1
                    if tracing._tracers:
                        tracing.cache_lookup("redis", True, refresh)
                    if refresh and self._refresh_early(env):
                        self.stats_counters["early_refreshes"] += 1
                        ver = await self.redis.get(version_key(key))
                        return None, Miss(key, schema, record_type, ver, None, generation)
                    self._fill_l1(key, schema, env, epoch, fenced=True)
                    return env, HIT
                self.redis.stats["misses"] += 1
                if tracing._tracers:
                    tracing.cache_lookup("redis", False, refresh)
        redis_version = await self.redis.get(version_key(key)) if generation is not None else SKIPPED
        row = await self.table.peek(key)
        table_version = None if row is MISSING else (row.version if row is not None else 0)
        if row is not MISSING and row is not None and row.value is not None and not expired(row):
            env = decode_doc(row.value, schema=schema, record_type=record_type)
            if env is not None:
                self.stats_counters["table_hits"] += 1
                if tracing._tracers:
                    tracing.cache_lookup("table", True, refresh)
                if redis_version is not SKIPPED:
                    remaining = max(env.expires_at - time.time(), 0.001)
                    payload = encode_wire(
                        orjson.dumps(row.value["v"]),
                        schema=schema,
                        generation=generation or 0,
                        ttl=remaining,
                        load_seconds=env.load_seconds,
                        negative=False,
                    )
                    await self.redis.cas_set(key, version_key(key), redis_version, payload, int(remaining * 1000))
                self._fill_l1(key, schema, env, epoch, fenced=True)
                return env, HIT
        self.stats_counters["table_misses"] += 1
        if tracing._tracers:
            tracing.cache_lookup("table", False, refresh)
        return None, Miss(key, schema, record_type, redis_version, table_version, generation)

    def _refresh_early(self, env: Envelope) -> bool:
        # XFetch (Vattani et al.): refresh before expiry with a probability that grows as expiry nears,
        # weighted by how long the value takes to load, so one caller refreshes a hot key in time.
        if env.load_seconds <= 0:
            return False
        gap = -env.load_seconds * self.xfetch_beta * math.log(max(_rng.random(), 1e-12))
        return time.time() + gap >= env.expires_at

    def _fill_l1(
        self, key: str, schema: str, env: Envelope, epoch: int, *, fenced: bool, data: bytes | None = None
    ) -> None:
        if self.l1.size and epoch == self._epoch:
            life = env.expires_at - time.time()
            if fenced:  # taken from Redis or the table: no longer than this process's look at pending ones
                life = min(life, self.invalidations.until - time.monotonic())
            if life <= 0:
                return
            # Records are frozen and shared; plain JSON values (dicts, lists) are stored encoded.
            if env.negative or attrs.has(type(env.value)):
                raw = None
            else:
                raw = data if data is not None else orjson.dumps(env.value)
            self.l1.put(key, (schema, env, raw), life)
