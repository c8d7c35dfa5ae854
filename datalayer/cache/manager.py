"""CacheManager: read-through over three layers, typed values, invalidation tied to COMMIT.

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
except a value or key no layer can hold (ValidationError).
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs
import orjson
import psycopg

from datalayer.cache._api import ApiResponses, clock_generation
from datalayer.cache._envelope import (
    _UNREADABLE,
    Envelope,
    decode_doc,
    decode_wire,
    encode_doc,
    encode_value,
    encode_wire,
    hit_prefix,
    read_hit,
    schema_of,
)
from datalayer.cache._flight import Flights
from datalayer.cache._invalidations import Invalidations
from datalayer.cache._keys import Keys, check_key, version_key
from datalayer.cache._l1 import L1
from datalayer.cache._loading import HIT, Loading, Miss
from datalayer.cache._ops import Operations
from datalayer.cache._redis import SKIPPED, RedisLayer
from datalayer.cache._seed import SeedAPI
from datalayer.cache._table import MISSING, TableLayer, expired
from datalayer.config import RedisTarget, Settings
from datalayer.errors import CacheUnavailable, ValidationError

__all__ = ["CacheManager", "close_cache_manager", "get_cache_manager", "set_cache_manager"]
# Our own generator: jitter never moves the global random state a service (or its tests) may seed.
_rng = random.Random()  # noqa: S311 - jitter, not secrets

T = TypeVar("T")


_COUNTERS = (  # noqa: SIM905 - a few names a line
    "l1_hits l1_misses table_hits table_misses table_errors loads negative_hits early_refreshes "
    "stale_writes_refused invalidation_checks invalidations_left invalidations_replayed"
).split()


class CacheManager(Loading, ApiResponses, Operations, SeedAPI):
    """The cache. Build it with ``get_cache_manager()`` (process-wide) or directly (tests, services
    that want their own settings).

    >>> cache = get_cache_manager()                                      # doctest: +SKIP
    >>> cache.cache_user_data(42, {"name": "Ann"}, ttl=1800)
    >>> cache.get_or_load(cache.keys.user(42), lambda: user_repo.get_by_id(db, 42), User, ttl=600)
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
        self._gen_lock = threading.Lock()
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
            base_generation=lambda: self._global_generation() or clock_generation(),
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

    # --------------------------------------------------------------------------- generations

    def _global_generation(self) -> int | None:
        """The global generation, read from Redis once and then kept up to date by pub/sub."""
        if self._generation is not None:
            return self._generation
        with self._gen_lock:
            if self._generation is None:
                raw = self.redis.generation(self.keys.global_generation(), clock_generation())
                if raw is SKIPPED or raw is None:
                    return None
                self._generation = int(raw)
            return self._generation

    def _recovered(self) -> None:
        # Redis is reachable again after calls failed: invalidations may have been lost meanwhile (ours
        # or other processes'). Replay the recorded ones before reading Redis again, and retire whatever
        # Redis held before by moving the generation (it may have lost its data and version counters).
        self.l1.clear()
        self._epoch += 1
        self._api_generations.clear()
        self.invalidations.expire()
        try:  # runs in the prober thread or inside a caller's call: strict mode must not raise here
            new = self.redis.bump(self.keys.global_generation(), clock_generation())
            if new is SKIPPED:
                self._generation = None
                return
            self._generation = int(new)
            self.redis.call(lambda c: c.publish(self.keys.channel(), _dumps({"gen": int(new), "o": self._origin})))
            self.invalidations.check()
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

    # ------------------------------------------------------------------------------- reading

    def _ttl(self, ttl: float | None) -> float:
        base = self.default_ttl if ttl is None else ttl
        if isinstance(base, bool) or not isinstance(base, int | float) or not 0 < base <= 10**8:
            raise ValidationError({"ttl": "must be a positive number of seconds"})
        return float(base) * _rng.uniform(0.9, 1.0)  # jitter: keys cached together do not expire together

    def get(self, key: str, record_type: type[T] | None = None) -> T | None:
        """The cached value of ``key`` from the fastest layer that has it, or None."""
        schema = schema_of(record_type)
        raw = SKIPPED
        generation = self._generation
        if generation is not None and not self.l1.size and time.monotonic() < self.invalidations.until:
            # The Redis hit, on the hot path: one GET, one startswith, then only the value is parsed.
            check_key(key)
            raw = self.redis.get(key)
            if raw is not None and raw is not SKIPPED and raw.startswith(hit_prefix(schema, generation)):
                value = read_hit(raw, record_type, schema)
                if value is not _UNREADABLE:
                    self.redis.stats["hits"] += 1
                    return value  # type: ignore[no-any-return]
        env, _ = self._lookup(key, schema, record_type, refresh=False, prefetched=raw)
        return None if env is None or env.negative else cast(T, env.value)

    def _lookup(
        self, key: str, schema: str, record_type: type[Any] | None, *, refresh: bool, prefetched: Any = SKIPPED
    ) -> tuple[Envelope | None, Miss]:
        """(envelope or None, what a miss learnt: the versions a loader's write must not race)."""
        counters = self.stats_counters
        if self.l1.size:
            found, item = self.l1.get(key)
            if found and item[0] == schema:
                counters["l1_hits"] += 1
                env = item[1]
                if item[2] is not None:  # plain JSON values are kept encoded: each caller gets its own copy
                    env = env.with_value(orjson.loads(item[2]))
                return env, HIT
            counters["l1_misses"] += 1
        check_key(key)  # past L1, the key goes to Redis and PostgreSQL
        epoch = self._epoch
        generation: int | None = None
        if self.invalidations.allowed():  # nothing pending that Redis has not taken
            generation = self._generation if self._generation is not None else self._global_generation()
        if generation is not None:
            raw = self.redis.get(key) if prefetched is SKIPPED else prefetched
            if raw is not SKIPPED:
                env = decode_wire(raw, schema=schema, record_type=record_type, generation=generation)
                if env is not None:
                    self.redis.stats["hits"] += 1
                    if refresh and self._refresh_early(env):
                        self.stats_counters["early_refreshes"] += 1
                        ver = self.redis.get(version_key(key))
                        return None, Miss(key, schema, record_type, ver, None, generation)
                    self._fill_l1(key, schema, env, epoch, fenced=True)
                    return env, HIT
                self.redis.stats["misses"] += 1
        redis_version = self.redis.get(version_key(key)) if generation is not None else SKIPPED
        row = self.table.peek(key)
        table_version = None if row is MISSING else (row.version if row is not None else 0)
        if row is not MISSING and row is not None and row.value is not None and not expired(row):
            env = decode_doc(row.value, schema=schema, record_type=record_type)
            if env is not None:
                self.stats_counters["table_hits"] += 1
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
                    self.redis.cas_set(key, version_key(key), redis_version, payload, int(remaining * 1000))
                self._fill_l1(key, schema, env, epoch, fenced=True)
                return env, HIT
        self.stats_counters["table_misses"] += 1
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

    # ------------------------------------------------------------------------------- writing

    def set(self, key: str, value: Any, ttl: float | None = None, *, record_type: type[Any] | None = None) -> None:
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
        generation = self._global_generation()
        redis_done = False
        if generation is not None:
            payload = encode_wire(
                data, schema=schema, generation=generation, ttl=life, load_seconds=0.0, negative=False
            )
            if self.redis.put(key, version_key(key), payload, int(life * 1000)) is not SKIPPED:
                redis_done = True
                self.redis.stats["writes"] += 1
                self.redis.call(lambda c: c.publish(self.keys.channel(), _dumps({"k": [key], "o": self._origin})))
        self.table.put(key, encode_doc(data, schema=schema, ttl=life, load_seconds=0.0), life)
        if not redis_done:  # Redis still holds the older value: have it replayed away
            self.invalidations.lost([key], "key", table_done=True)

    def delete(self, *keys: str, db: psycopg.Connection[Any] | None = None) -> None:
        """Invalidate ``keys`` in every layer and in every process's L1 — after COMMIT when a
        ``transaction()`` is open (found through ``db`` or the current context), never on rollback.

        Inside a transaction the invalidation is also recorded in it (cache_invalidations), so that it
        survives a Redis outage or the end of this process after COMMIT; see ``_invalidations``.
        """
        checked = [check_key(k) for k in keys]
        ids = self._record(db, checked, "key")
        self._after_commit(db, lambda: self._invalidate_now(checked, ids))

    def _record(self, db: psycopg.Connection[Any] | None, keys: list[str], kind: str) -> list[int] | None:
        from datalayer.transactions import current_transaction, in_transaction

        tx = db if db is not None else current_transaction()
        if tx is None or not in_transaction(tx):
            return None
        return self.invalidations.record(tx, keys, kind)

    def _after_commit(self, db: psycopg.Connection[Any] | None, hook: Callable[[], None]) -> None:
        from datalayer.transactions import current_transaction, in_transaction, on_commit

        tx = db if db is not None else current_transaction()
        if tx is None or not in_transaction(tx):
            hook()  # no transaction: now, and a strict cache's CacheUnavailable reaches the caller
            return
        on_commit(hook, tx, also_if_unknown=True)

    def _invalidate_now(self, keys: list[str], ids: list[int] | None) -> None:
        self._epoch += 1
        self.l1.delete(*keys)
        self.invalidations.tombstone_first(ids, keys)
        message: dict[str, Any] = {"k": keys, "o": self._origin}
        try:
            redis_done = self.redis.invalidate([(k, version_key(k)) for k in keys], message)
        except CacheUnavailable:  # strict: the caller hears of it, and the replay still happens
            self.invalidations.after_redis(ids, keys, False)
            raise
        self.invalidations.after_redis(ids, keys, redis_done)


# ---------------------------------------------------------------------------------- helpers


def _dumps(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


_manager: CacheManager | None = None
_manager_pid: int | None = None
_manager_lock = threading.Lock()


def get_cache_manager() -> CacheManager:
    """The process-wide cache, built on first use from the environment (REDIS_URL …, CACHE_PREFIX)."""
    global _manager, _manager_pid
    if _manager is not None and _manager_pid == os.getpid():
        return _manager
    with _manager_lock:
        if _manager is None or _manager_pid != os.getpid():
            _manager = CacheManager()
            _manager_pid = os.getpid()
        return _manager


def close_cache_manager() -> None:
    """Close the process-wide cache (the next ``get_cache_manager()`` builds a new one)."""
    global _manager
    with _manager_lock:
        manager, _manager = _manager, None
    if manager is not None and _manager_pid == os.getpid():
        manager.close()


def set_cache_manager(manager: CacheManager | None) -> CacheManager | None:
    """Install ``manager`` as the process-wide cache (None: build one on next use); returns the previous
    one, not closed (the test plugin installs a fresh cache per test and puts the previous one back)."""
    global _manager, _manager_pid
    with _manager_lock:
        previous = _manager if _manager_pid == os.getpid() else None
        _manager, _manager_pid = manager, os.getpid()
    return previous
