# Generated from datalayer/cache/manager_async.py by tools/async_to_sync.py: edit that file, then run the tool.
"""The cache manager: read-through over three layers, typed values, invalidation tied to COMMIT.

One source, two APIs: ``manager_async.py`` is ``datalayer.aio.get_cache_manager()``
(``AsyncCacheManager``, on ``redis.asyncio``, every method awaited); ``manager.py``, generated from it
by tools/async_to_sync.py, is ``datalayer.get_cache_manager()`` (``CacheManager``).

Reads go L1 (in-process) → Redis → the cache_entries table → the loader, filling the faster layers on
the way back. Writes and invalidations reach every layer; invalidations requested inside a
``transaction()`` are recorded in that transaction, run after its COMMIT and are dropped on rollback.

Correctness under concurrency:

* every value is checked once, on its way in, by the JSON-column rules (``_envelope.encode_value``),
  and the same JSON text goes to every layer;
* every key has a version, in Redis (a counter beside it) and in the table (the row's version). A
  loader reads the versions before it reads the database and writes only if they have not moved, so a
  value read before a concurrent invalidation is never written back after it;
* one loader per key at a time: single-flight within the process, a short Redis lock across
  processes; hot keys are refreshed early with probability rising towards expiry (XFetch), TTLs are
  jittered; a loader's ``None`` ("not found") is cached too, with its own short TTL;
* API responses are grouped by endpoint: ``invalidate_api(endpoint)`` moves a generation counter that
  is part of every key of the endpoint, so no SCAN is ever needed;
* an invalidation Redis did not take is kept in PostgreSQL and replayed, and no process reads Redis
  while one may be pending (``_invalidations``): a value is served at most ``l1_max_ttl`` after the
  COMMIT that invalidated it, whatever happened to Redis or to the writer;
* after a Redis outage the global generation is bumped too (Redis may have lost its data, and with it
  the version counters).

Redis that is down, refusing or hung costs a call at most ``redis_timeout`` (50 ms by default) once;
the circuit breaker then skips Redis until a probe succeeds. Nothing raises unless ``strict=True``,
except a value or key no layer can hold (ValidationError). The prober and the invalidation listener
are daemon threads of the sync cache and tasks of the async one's event loop; an async cache serves
the loop it is first used in (``get_cache_manager()`` keeps one per loop).

This module builds the cache and keeps the process-wide one; reading (``_reading``), writing and
invalidating (``_writing``), generations (``_generations``), loading, API responses, seeded keys and
operator actions are mixins of their own modules.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from datalayer._acompat import Lock, Shared
from datalayer.cache._api import ApiResponses
from datalayer.cache._flight import Flights
from datalayer.cache._generations import Generations
from datalayer.cache._invalidations import Invalidations
from datalayer.cache._keys import Keys
from datalayer.cache._l1 import L1
from datalayer.cache._loading import Loading
from datalayer.cache._ops import Operations
from datalayer.cache._reading import Reading
from datalayer.cache._redis import RedisLayer
from datalayer.cache._seed import SeedAPI
from datalayer.cache._table import TableLayer
from datalayer.cache._writing import Writing
from datalayer.config import RedisTarget, Settings
from datalayer.errors import ValidationError

__all__ = ["CacheManager", "close_cache_manager", "get_cache_manager", "set_cache_manager"]

_COUNTERS = (  # noqa: SIM905 - a few names a line
    "l1_hits l1_misses table_hits table_misses table_errors loads negative_hits early_refreshes "
    "stale_writes_refused invalidation_checks invalidations_left invalidations_replayed "
    "invalidations_unreplayable"
).split()


class CacheManager(Reading, Writing, Generations, Loading, ApiResponses, Operations, SeedAPI):
    """The cache. Build it with ``get_cache_manager()`` (process-wide) or directly (tests, services
    that want their own settings).

    >>> cache = get_cache_manager()                                      # doctest: +SKIP
    >>> cache.cache_user_data(42, {"name": "Ann"}, ttl=1800)           # awaited in datalayer.aio
    >>> cache.get_or_load(cache.keys.user(42), lambda: user_repo.get_by_id(db, 42), User, ttl=600)

    The async cache's ``loader`` may also be an ``async def`` (or return an awaitable).
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        redis_target: RedisTarget | None = None,
        pool: Any = None,
        use_table: bool = True,
        l1_size: int = 10_000,
        l1_max_ttl: float = 5.0,
        default_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        redis_timeout: float = 0.05,
        breaker_cooldown: float = 1.0,
        lock_ttl: float = 5.0,
        xfetch_beta: float = 1.0,
        strict: bool = False,
    ) -> None:
        if isinstance(l1_max_ttl, bool) or not isinstance(l1_max_ttl, int | float) or not 0.05 <= l1_max_ttl <= 3600:
            raise ValidationError({"l1_max_ttl": "must be 0.05 to 3600 seconds (it bounds how stale a value gets)"})
        self.settings = settings or Settings.from_env()
        if redis_target is None:
            redis_target = self.settings.redis
        if redis_target is None:
            from datalayer.embedded import start_embedded_redis

            redis_target = start_embedded_redis(self.settings)
        self.keys = Keys(self.settings.cache_prefix)
        self.pool = pool
        self.default_ttl = default_ttl
        self.negative_ttl = negative_ttl
        self.lock_ttl = lock_ttl
        self.xfetch_beta = xfetch_beta
        self.strict = strict
        self.l1 = L1(l1_size, l1_max_ttl)
        self._origin = uuid.uuid4().hex
        self._epoch = 0  # moves on every invalidation seen: an L1 fill that started before one is dropped
        self._generation: int | None = None
        self._gen_lock = Lock()
        self._api_generations: dict[str, tuple[float, int]] = {}
        self._flights = Flights()
        self.stats_counters = dict.fromkeys(_COUNTERS, 0)
        self.table = TableLayer(pool, use_table, self.stats_counters)
        self.redis = RedisLayer(
            redis_target,
            timeout=redis_timeout,
            cooldown=breaker_cooldown,
            strict=strict,
            on_recover=self._recovered,
            on_message=self._message,
            channel=self.keys.channel(),
        )
        self.invalidations = Invalidations(
            table=self.table,
            redis=self.redis,
            keys=self.keys,
            interval=float(l1_max_ttl),
            origin=self._origin,
            on_replayed=self._message,
            base_generation=self._base_generation,
            retire_all=self._retire_all,
            counters=self.stats_counters,
        )
        self.redis.start_subscriber()

    @property
    def use_table(self) -> bool:
        """Whether the cache_entries table (and the record of pending invalidations) is used."""
        return self.table.enabled

    @use_table.setter
    def use_table(self, enabled: bool) -> None:
        self.table.enabled = enabled
        self.invalidations.until = 0.0 if enabled else math.inf


# The process-wide cache (the async one: one per event loop; see AShared).
_managers: Shared[CacheManager] = Shared()


def get_cache_manager() -> CacheManager:
    """The process-wide cache, built on first use from the environment (REDIS_URL …, CACHE_PREFIX).

    The async cache is one per event loop: its Redis connections and background tasks belong to the
    loop that uses them. One built before any loop runs (at import) goes to the first loop that asks.
    """
    return _managers.get(CacheManager)


def close_cache_manager() -> None:
    """Close the process-wide cache (the next ``get_cache_manager()`` builds a new one)."""
    manager = _managers.take()
    if manager is not None:
        manager.close()


def set_cache_manager(manager: CacheManager | None) -> CacheManager | None:
    """Install ``manager`` as the process-wide cache (None: build one on next use); returns the previous
    one, not closed (the test plugin installs a fresh cache per test and puts the previous one back)."""
    return _managers.replace(manager)
