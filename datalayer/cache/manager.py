"""CacheManager: read-through over three layers, typed values, invalidation tied to COMMIT.

Reads go L1 (in-process) → Redis → the cache_entries table → the loader, filling the faster layers on
the way back. Writes and invalidations reach every layer; invalidations requested inside a
``transaction()`` run after its COMMIT and are dropped on rollback.

Correctness under concurrency:

* every key has a version, in Redis (a counter beside it) and in the table (the row's version). A
  loader reads the versions before it reads the database and writes only if they have not moved, so a
  value read before a concurrent invalidation is never written back after it;
* one loader per key at a time: single-flight within the process, a short Redis lock across processes;
  hot keys are refreshed early with probability rising towards expiry (XFetch), TTLs are jittered;
* a loader's ``None`` ("not found") is cached too, with its own short TTL;
* API responses are grouped by endpoint: ``invalidate_api(endpoint)`` moves a generation counter that
  is part of every key of the endpoint, so no SCAN is ever needed;
* after a Redis outage the global generation is bumped: nothing written before it is served, since
  invalidations may have been missed meanwhile.

Redis that is down, refusing or hung costs a call at most ``redis_timeout`` (50 ms by default) once;
the circuit breaker then skips Redis until a probe succeeds. Nothing raises unless ``strict=True``.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import attrs
import orjson
import psycopg

from datalayer.cache._envelope import (
    _UNREADABLE,
    Envelope,
    decode_doc,
    decode_wire,
    encode_doc,
    encode_wire,
    hit_prefix,
    read_hit,
    schema_of,
)
from datalayer.cache._keys import Keys, version_key
from datalayer.cache._l1 import L1
from datalayer.cache._redis import SKIPPED, RedisLayer
from datalayer.config import RedisTarget, Settings
from datalayer.errors import CacheUnavailable, DataLayerError, ValidationError

__all__ = ["CacheManager", "close_cache_manager", "get_cache_manager"]

T = TypeVar("T")
_MISSING = object()


@dataclass(frozen=True)
class _Miss:
    """What a lookup that missed learnt: the key and the versions a loader's write must not race."""

    key: str
    schema: str
    record_type: type[Any] | None
    redis_version: Any  # SKIPPED when Redis could not be asked
    table_version: int | None  # None when the table is off or failed
    generation: int | None  # the global generation the lookup read under


_HIT = _Miss("", "", None, SKIPPED, None, None)  # placeholder returned with a hit


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class CacheManager:
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
        self.settings = settings or Settings.from_env()
        if redis_target is None:
            redis_target = self.settings.redis
        if redis_target is None:
            from datalayer.embedded import start_embedded_redis

            redis_target = start_embedded_redis(self.settings)
        self.keys = Keys(self.settings.cache_prefix)
        self.pool = pool
        self.use_table = use_table
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
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()
        self.stats_counters = {
            "l1_hits": 0,
            "l1_misses": 0,
            "table_hits": 0,
            "table_misses": 0,
            "table_errors": 0,
            "loads": 0,
            "negative_hits": 0,
            "early_refreshes": 0,
            "stale_writes_refused": 0,
        }
        self.redis = RedisLayer(
            redis_target,
            timeout=redis_timeout,
            cooldown=breaker_cooldown,
            strict=strict,
            on_recover=self._recovered,
            on_message=self._message,
            channel=self.keys.channel(),
        )
        self.redis.start_subscriber()

    # --------------------------------------------------------------------------- generations

    def _global_generation(self) -> int | None:
        """The global generation, read from Redis once and then kept up to date by pub/sub."""
        if self._generation is not None:
            return self._generation
        with self._gen_lock:
            if self._generation is None:
                key = self.keys.global_generation()
                # A missing counter means Redis lost its data: start from the clock, never from 0, so
                # that no value written under an earlier life of the counter matches.
                raw = self.redis.call(lambda c: (c.set(key, int(time.time() * 1000), nx=True) and None) or c.get(key))
                if raw is SKIPPED or raw is None:
                    return None
                self._generation = int(raw)
            return self._generation

    def _recovered(self) -> None:
        # Redis is reachable again after calls failed: invalidations may have been lost meanwhile
        # (ours or other processes'), so retire everything written before by moving the generation.
        self.l1.clear()
        self._epoch += 1
        self._api_generations.clear()
        key = self.keys.global_generation()
        try:
            new = int(self.redis.client.incr(key))
            self.redis.client.publish(self.keys.channel(), _dumps({"gen": new, "o": self._origin}))
            self._generation = new
        except Exception:
            self._generation = None

    def _message(self, msg: dict[str, Any]) -> None:
        self._epoch += 1
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
        if "api" in msg and isinstance(msg["api"], str):
            self._api_generations.pop(msg["api"], None)
        if "flush" in msg and isinstance(msg["flush"], str):
            self.l1.delete_prefix(msg["flush"])

    # ----------------------------------------------------------------------------- the table

    @contextmanager
    def _table(self) -> Iterator[Any]:
        from datalayer.pool import connection, default_pool

        with connection(self.pool or default_pool(), timeout=2.0) as db:
            yield db

    def _table_call(self, fn: Callable[[Any], T]) -> Any:
        """``fn(db)`` on a pooled connection; _MISSING when the table is off or the database failed."""
        if not self.use_table:
            return _MISSING
        try:
            with self._table() as db:
                return fn(db)
        except (DataLayerError, psycopg.Error):
            self.stats_counters["table_errors"] += 1
            return _MISSING

    # ------------------------------------------------------------------------------- reading

    def _ttl(self, ttl: float | None) -> float:
        base = self.default_ttl if ttl is None else ttl
        if isinstance(base, bool) or not isinstance(base, int | float) or not 0 < base <= 10**8:
            raise ValidationError({"ttl": "must be a positive number of seconds"})
        return float(base) * random.uniform(0.9, 1.0)  # jitter: keys cached together do not expire together  # noqa: S311

    def get(self, key: str, record_type: type[T] | None = None) -> T | None:
        """The cached value of ``key`` from the fastest layer that has it, or None."""
        schema = schema_of(record_type)
        raw = SKIPPED
        generation = self._generation
        if generation is not None and not self.l1.size:
            # The Redis hit, on the hot path: one GET, one startswith, then only the value is parsed.
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
    ) -> tuple[Envelope | None, _Miss]:
        """(envelope or None, what a miss learnt: the versions a loader's write must not race)."""
        counters = self.stats_counters
        if self.l1.size:
            found, item = self.l1.get(key)
            if found and item[0] == schema:
                counters["l1_hits"] += 1
                env = item[1]
                if item[2] is not None:  # plain JSON values are kept encoded: each caller gets its own copy
                    env = env.with_value(orjson.loads(item[2]))
                return env, _HIT
            counters["l1_misses"] += 1
        epoch = self._epoch
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
                        return None, _Miss(key, schema, record_type, ver, None, generation)
                    self._fill_l1(key, schema, env, epoch)
                    return env, _HIT
                self.redis.stats["misses"] += 1
        redis_version = self.redis.get(version_key(key)) if generation is not None else SKIPPED
        row = self._table_call(lambda db: _peek(db, key))
        table_version = None if row is _MISSING else (row.version if row is not None else 0)
        if row is not _MISSING and row is not None and row.value is not None and not _expired(row):
            env = decode_doc(row.value, schema=schema, record_type=record_type)
            if env is not None:
                self.stats_counters["table_hits"] += 1
                if redis_version is not SKIPPED:
                    remaining = max(env.expires_at - time.time(), 0.001)
                    self.redis.cas_set(
                        key, version_key(key), redis_version, _rewrap(env, schema, generation), int(remaining * 1000)
                    )
                self._fill_l1(key, schema, env, epoch)
                return env, _HIT
        self.stats_counters["table_misses"] += 1
        return None, _Miss(key, schema, record_type, redis_version, table_version, generation)

    def _refresh_early(self, env: Envelope) -> bool:
        # XFetch (Vattani et al.): refresh before expiry with a probability that grows as expiry nears,
        # weighted by how long the value takes to load, so one caller refreshes a hot key in time.
        if env.load_seconds <= 0:
            return False
        gap = -env.load_seconds * self.xfetch_beta * math.log(max(random.random(), 1e-12))  # noqa: S311
        return time.time() + gap >= env.expires_at

    def _fill_l1(self, key: str, schema: str, env: Envelope, epoch: int) -> None:
        if self.l1.size and epoch == self._epoch:
            # Records are frozen and shared; plain JSON values (dicts, lists) are stored encoded.
            raw = None if env.negative or attrs.has(type(env.value)) else orjson.dumps(env.value)
            self.l1.put(key, (schema, env, raw), max(env.expires_at - time.time(), 0))

    # ------------------------------------------------------------------------------- loading

    def get_or_load(
        self,
        key: str,
        loader: Callable[[], T | None],
        record_type: type[T] | None = None,
        ttl: float | None = None,
        *,
        negative_ttl: float | None = None,
    ) -> T | None:
        """The cached value of ``key``, or ``loader()``'s, cached on the way back (a ``None`` too, briefly).

        ``record_type`` (an attrs class) makes the value come back as that record through the cattrs
        converter; a value cached under an older ``__cache_version__`` of the record is a miss.
        """
        env, miss = self._lookup(key, schema_of(record_type), record_type, refresh=True)
        if env is not None:
            if env.negative:
                self.stats_counters["negative_hits"] += 1
                return None
            return cast(T, env.value)
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not leader:
            # Another thread of this process loads the key: wait for its result (bounded).
            if flight.done.wait(self.lock_ttl) and flight.error is None:
                return cast("T | None", flight.value)
            return loader()
        try:
            value = self._load_and_store(miss, loader, ttl, negative_ttl)
            flight.value = value
            return value
        except BaseException as e:
            flight.error = e
            raise
        finally:
            flight.done.set()
            with self._flights_lock:
                self._flights.pop(key, None)

    def _load_and_store(
        self, miss: _Miss, loader: Callable[[], T | None], ttl: float | None, negative_ttl: float | None
    ) -> T | None:
        token = uuid.uuid4().hex
        lock_key = self.keys.lock(miss.key)
        redis_up = miss.redis_version is not SKIPPED
        locked = redis_up and self.redis.lock(lock_key, token, int(self.lock_ttl * 1000)) is True
        if redis_up and not locked:
            # Another process is loading this key: wait a little for its value rather than load it too.
            deadline = time.monotonic() + min(self.lock_ttl, 2.0)
            while time.monotonic() < deadline:
                time.sleep(0.01)
                raw = self.redis.get(miss.key)
                if raw is SKIPPED:
                    break
                env = decode_wire(
                    raw, schema=miss.schema, record_type=miss.record_type, generation=miss.generation or 0
                )
                if env is not None:
                    return None if env.negative else cast(T, env.value)
        try:
            epoch = self._epoch
            t0 = time.monotonic()
            self.stats_counters["loads"] += 1
            value = loader()
            elapsed = time.monotonic() - t0
            if value is None:
                life = self._ttl(self.negative_ttl if negative_ttl is None else negative_ttl)
            else:
                life = self._ttl(ttl)
            self._store(miss, value, life, elapsed, epoch)
            return value
        finally:
            if locked:
                self.redis.unlock(lock_key, token)

    def _store(self, miss: _Miss, value: Any, ttl: float, load_seconds: float, epoch: int) -> None:
        key, schema, negative = miss.key, miss.schema, value is None
        generation = miss.generation
        stored_anywhere = False
        if miss.redis_version is not SKIPPED and generation is not None:
            payload = encode_wire(
                value, schema=schema, generation=generation, ttl=ttl, load_seconds=load_seconds, negative=negative
            )
            ok = self.redis.cas_set(key, version_key(key), miss.redis_version, payload, int(ttl * 1000))
            if ok == 0:
                self.stats_counters["stale_writes_refused"] += 1
                return  # invalidated while we loaded: do not cache what we read
            stored_anywhere = ok == 1
            self.redis.stats["writes"] += 1
        if miss.table_version is not None and not negative:
            doc = encode_doc(value, schema=schema, ttl=ttl, load_seconds=load_seconds)
            version = miss.table_version + 1
            entry = self._table_call(lambda db: _table_set(db, key, doc, ttl, version))
            if entry is None:  # a newer version is stored: invalidated (or rewritten) while we loaded
                self.stats_counters["stale_writes_refused"] += 1
                return
            stored_anywhere = stored_anywhere or entry is not _MISSING
        if stored_anywhere or negative:
            env = Envelope(
                value=value,
                negative=negative,
                generation=generation or 0,
                expires_at=time.time() + ttl,
                load_seconds=load_seconds,
            )
            self._fill_l1(key, schema, env, epoch)

    # ------------------------------------------------------------------------------- writing

    def set(self, key: str, value: Any, ttl: float | None = None, *, record_type: type[Any] | None = None) -> None:
        """Store ``value`` under ``key`` in every layer (the newest truth: it wins over in-flight loaders)."""
        if value is None:
            raise ValidationError({"value": "must not be None (use delete to forget a key)"})
        schema = schema_of(record_type or (type(value) if _is_record(value) else None))
        life = self._ttl(ttl)
        self._epoch += 1
        self.l1.delete(key)
        generation = self._global_generation()
        if generation is not None:
            payload = encode_wire(
                value, schema=schema, generation=generation, ttl=life, load_seconds=0.0, negative=False
            )
            if self.redis.put(key, version_key(key), payload, int(life * 1000)) is not SKIPPED:
                self.redis.stats["writes"] += 1
                self.redis.call(lambda c: c.publish(self.keys.channel(), _dumps({"k": [key], "o": self._origin})))
        doc = encode_doc(value, schema=schema, ttl=life, load_seconds=0.0)
        self._table_call(lambda db: _table_put(db, key, doc, life))

    def delete(self, *keys: str, db: psycopg.Connection[Any] | None = None) -> None:
        """Invalidate ``keys`` in every layer and in every process's L1 — after COMMIT when a
        ``transaction()`` is open (found through ``db`` or the current context), never on rollback."""
        from datalayer.transactions import on_commit

        on_commit(lambda: self._invalidate_now(list(keys)), db, also_if_unknown=True)

    def _invalidate_now(self, keys: list[str], extra: dict[str, Any] | None = None) -> None:
        self._epoch += 1
        self.l1.delete(*keys)
        message: dict[str, Any] = {"k": keys, "o": self._origin, **(extra or {})}
        self.redis.invalidate([(k, version_key(k)) for k in keys], message)
        self._table_call(lambda db: _table_invalidate(db, keys))

    # ------------------------------------------------------------------------ API responses

    def _api_generation(self, endpoint: Any) -> int | None:
        gen_key = self.keys.api_generation(endpoint)
        cached = self._api_generations.get(gen_key)
        if cached is not None and time.monotonic() - cached[0] < self.l1.max_ttl:
            return cached[1]
        base = self._global_generation()
        if base is None:
            return None
        raw = self.redis.call(lambda c: c.get(gen_key))
        if raw is SKIPPED:
            return None
        gen = int(raw) if raw is not None else base  # a lost counter restarts above every earlier life
        self._api_generations[gen_key] = (time.monotonic(), gen)
        return gen

    def _api_key(self, endpoint: Any, request: Any) -> str | None:
        gen = self._api_generation(endpoint)
        return None if gen is None else self.keys.api(endpoint, request, gen)

    def cache_api_response(self, endpoint: str, request: Any, response: Any, ttl: float = 300) -> bool:
        """Cache ``response`` for ``(endpoint, request)``; False when Redis is unavailable (API entries
        depend on the endpoint's generation, which lives in Redis)."""
        key = self._api_key(endpoint, request)
        if key is None:
            return False
        self.set(key, response, ttl)
        return True

    def get_cached_api_response(self, endpoint: str, request: Any) -> Any:
        key = self._api_key(endpoint, request)
        return None if key is None else self.get(key)

    def invalidate_api(self, endpoint: str, *, db: psycopg.Connection[Any] | None = None) -> None:
        """Retire every cached response of ``endpoint`` at once (its generation moves; no SCAN)."""
        from datalayer.transactions import on_commit

        gen_key = self.keys.api_generation(endpoint)
        prefix = f"{self.keys.prefix}:api:{gen_key.rsplit(':', 1)[-1]}:"

        def run() -> None:
            self._api_generations.pop(gen_key, None)
            base = self._global_generation() or 0

            def bump(c: Any) -> None:
                c.set(gen_key, base, nx=True)
                c.incr(gen_key)
                c.publish(self.keys.channel(), _dumps({"api": gen_key, "flush": prefix, "o": self._origin}))

            self.redis.call(bump)
            self.l1.delete_prefix(prefix)
            self._table_call(lambda conn: _table_delete_prefix(conn, prefix))

        on_commit(run, db, also_if_unknown=True)

    # ------------------------------------------------------------------------------ seed API

    def cache_analysis_result(self, analysis_id: int | str, result: Any, ttl: float = 3600) -> None:
        self.set(self.keys.analysis_result(analysis_id), result, ttl)

    def get_cached_analysis_result(self, analysis_id: int | str) -> Any:
        return self.get(self.keys.analysis_result(analysis_id))

    def cache_user_data(self, user_id: int | str, data: Any, ttl: float = 1800) -> None:
        self.set(self.keys.user(user_id), data, ttl)

    def get_cached_user_data(self, user_id: int | str) -> Any:
        return self.get(self.keys.user(user_id))

    def cache_user_analyses(self, user_id: int | str, analyses: Any, ttl: float = 600) -> None:
        self.set(self.keys.user_analyses(user_id), analyses, ttl)

    def get_cached_user_analyses(self, user_id: int | str) -> Any:
        return self.get(self.keys.user_analyses(user_id))

    def cache_tool_generation(self, generation_id: int | str, data: Any, ttl: float = 3600) -> None:
        self.set(self.keys.tool_generation(generation_id), data, ttl)

    def get_cached_tool_generation(self, generation_id: int | str) -> Any:
        return self.get(self.keys.tool_generation(generation_id))

    def cache_system_stats(self, stats: Any, ttl: float = 60) -> None:
        self.set(self.keys.system_stats(), stats, ttl)

    def get_cached_system_stats(self) -> Any:
        return self.get(self.keys.system_stats())

    def invalidate_user_cache(self, user_id: int | str, *, db: psycopg.Connection[Any] | None = None) -> None:
        """Remove ``user:{id}``, ``user_analyses:{id}`` and the system stats derived from them."""
        self.delete(self.keys.user(user_id), self.keys.user_analyses(user_id), self.keys.system_stats(), db=db)

    def invalidate_analysis(
        self, analysis_id: int | str, *, user_id: int | str | None = None, db: psycopg.Connection[Any] | None = None
    ) -> None:
        keys = [self.keys.analysis_result(analysis_id), self.keys.system_stats()]
        if user_id is not None:
            keys.append(self.keys.user_analyses(user_id))
        self.delete(*keys, db=db)

    def invalidate_tool_generation(
        self, generation_id: int | str, *, db: psycopg.Connection[Any] | None = None
    ) -> None:
        self.delete(self.keys.tool_generation(generation_id), db=db)

    # ------------------------------------------------------------------------- observability

    def stats(self, *, probe: bool = False) -> dict[str, Any]:
        """Hits, misses and errors per layer, the breaker's state, the generation.

        ``probe=True`` also pings Redis (``redis.ping``) and counts the table's live entries.
        """
        c = self.stats_counters
        b = self.redis.breaker
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
            "breaker": {"state": b.state, "failures": b.failures, "opened": b.opened},
            "generation": self._generation,
            "subscribed": self.redis.subscribed.is_set(),
        }
        if probe:
            out["redis"]["ping"] = self.redis.call(lambda r: bool(r.ping())) is True
            entries = self._table_call(_table_count)
            out["table"]["entries"] = None if entries is _MISSING else entries
        return out

    def flush(self, prefix: str | None = None) -> int:
        """Delete every key under ``prefix`` (default: the whole CACHE_PREFIX) in Redis and the table and
        retire every process's L1; returns how many Redis keys were deleted. For operators (uses SCAN)."""
        base = f"{self.keys.prefix}:"
        full = base + (prefix or "")
        if prefix is not None and ("*" in prefix or "?" in prefix or "[" in prefix):
            raise ValidationError({"prefix": "must be a plain prefix (no * ? [ wildcards)"})

        def run(c: Any) -> int:
            n = 0
            # Untagged keys keep their version counter and lock as "{key}:ver" / "{key}:lock".
            for pattern in (_glob_escape(full) + "*", _glob_escape("{" + full) + "*"):
                batch: list[Any] = []
                for k in c.scan_iter(match=pattern, count=1000):
                    batch.append(k)
                    if len(batch) >= 500:
                        n += int(c.unlink(*batch))
                        batch = []
                if batch:
                    n += int(c.unlink(*batch))
            c.publish(self.keys.channel(), _dumps({"flush": full, "o": self._origin}))
            return n

        deleted = self.redis.call(run)
        self.l1.delete_prefix(full)
        self._epoch += 1
        self._table_call(lambda db: _table_delete_prefix(db, full))
        if deleted is SKIPPED:
            raise CacheUnavailable(f"Redis at {self.redis.target.display} is unavailable; nothing was flushed there")
        return int(deleted)

    def close(self) -> None:
        self.redis.close()


# ---------------------------------------------------------------------------------- helpers


def _dumps(doc: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(doc)


def _is_record(value: Any) -> bool:
    import attrs

    return attrs.has(type(value))


def _expired(row: Any) -> bool:
    return row.expires_at is not None and row.expires_at.timestamp() <= time.time()


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _rewrap(env: Envelope, schema: str, generation: int | None) -> bytes:
    remaining = max(env.expires_at - time.time(), 0.001)
    return encode_wire(
        env.value,
        schema=schema,
        generation=generation or 0,
        ttl=remaining,
        load_seconds=env.load_seconds,
        negative=env.negative,
    )


def _peek(db: Any, key: str) -> Any:
    from datalayer.repos import cache_entries

    return cache_entries.peek(db, key)


def _table_set(db: Any, key: str, doc: dict[str, Any], ttl: float, version: int) -> Any:
    from datalayer.repos import cache_entries

    return cache_entries.set(db, key, doc, ttl=ttl, version=version)


def _table_put(db: Any, key: str, doc: dict[str, Any], ttl: float) -> Any:
    from datalayer.repos import cache_entries

    return cache_entries.put(db, key, doc, ttl=ttl)


def _table_invalidate(db: Any, keys: list[str]) -> int:
    from datalayer.repos import cache_entries

    return cache_entries.invalidate(db, keys)


def _table_count(db: Any) -> int:
    from datalayer.repos import cache_entries

    return cache_entries.count(db)


def _table_delete_prefix(db: Any, prefix: str) -> int:
    from datalayer.repos import cache_entries

    return cache_entries.delete_prefix(db, prefix)


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
