# Generated from datalayer/cache/_loading_async.py by tools/async_to_sync.py: edit that file, then run the tool.
"""Read-through loading: single-flight per key, a short Redis lock across processes, and the versioned
write-back that refuses a value read before a concurrent invalidation."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs

from datalayer._acompat import Thunk, produce, sleep
from datalayer.cache._envelope import NEGATIVE, Envelope, decode_wire, encode_doc, encode_value, encode_wire, schema_of
from datalayer.cache._keys import version_key
from datalayer.cache._markers import MISSING, SKIPPED
from datalayer.errors import ValidationError

if TYPE_CHECKING:
    from datalayer.cache._flight import Flights
    from datalayer.cache._keys import Keys
    from datalayer.cache._redis import RedisLayer
    from datalayer.cache._table import TableLayer

__all__ = ["HIT", "Loading", "Miss"]

T = TypeVar("T")


def load_checked(loader: Thunk[T | None], record_type: type[Any] | None) -> T | None:
    """``loader()``'s value, refused (ValidationError naming ``loader``) unless it is a ``record_type``
    or None: a typed read-through never caches, or hands back, a value of another type."""
    value: T | None = produce(loader)
    if value is not None and isinstance(record_type, type) and not isinstance(value, record_type):
        raise ValidationError(
            {"loader": f"returned a {type(value).__name__}, not a {record_type.__name__} (the record_type given)"}
        )
    return value


@attrs.frozen
class Miss:
    """What a lookup that missed learnt: the key and the versions a loader's write must not race."""

    key: str
    schema: str
    record_type: type[Any] | None
    redis_version: Any  # SKIPPED when Redis could not (or must not) be asked
    table_version: int | None  # None when the table is off or failed
    generation: int | None  # the global generation the lookup read under


HIT = Miss("", "", None, SKIPPED, None, None)  # placeholder returned with a hit


class Loading:
    """Mixed into the cache manager."""

    if TYPE_CHECKING:
        keys: Keys
        redis: RedisLayer
        table: TableLayer
        stats_counters: dict[str, int]
        lock_ttl: float
        negative_ttl: float
        _flights: Flights
        _epoch: int

        def _lookup(
            self, key: str, schema: str, record_type: type[Any] | None, *, refresh: bool, prefetched: Any = SKIPPED
        ) -> tuple[Envelope | None, Miss]: ...

        def _ttl(self, ttl: float | None) -> float: ...

        def _fill_l1(
            self, key: str, schema: str, env: Envelope, epoch: int, *, fenced: bool, data: bytes | None = None
        ) -> None: ...

    def get_or_load(
        self,
        key: str,
        loader: Thunk[T | None],
        record_type: type[T] | None = None,
        ttl: float | None = None,
        *,
        negative_ttl: float | None = None,
    ) -> T | None:
        """The cached value of ``key``, or ``loader()``'s, cached on the way back (a ``None`` too, briefly).

        ``record_type`` (an attrs class) makes the value come back as that record through the cattrs
        converter; a value cached under an older ``__cache_version__`` of the record is a miss. A
        loaded value no layer can hold (see ``set``) raises ValidationError. The async cache's
        ``loader`` is an ``async def`` (or a lambda calling one); a plain function is accepted too.
        """
        env, miss = self._lookup(key, schema_of(record_type), record_type, refresh=True)
        if env is not None:
            if env.negative:
                self.stats_counters["negative_hits"] += 1
                return None
            return cast(T, env.value)
        return self._flights.run(
            key,
            lambda: self._load_and_store(miss, loader, ttl, negative_ttl),
            lambda: load_checked(loader, record_type),
            self.lock_ttl,
        )

    def _load_and_store(
        self, miss: Miss, loader: Thunk[T | None], ttl: float | None, negative_ttl: float | None
    ) -> T | None:
        token = uuid.uuid4().hex
        lock_key = self.keys.lock(miss.key)
        redis_up = miss.redis_version is not SKIPPED
        locked = redis_up and self.redis.lock(lock_key, token, int(self.lock_ttl * 1000)) is True
        if redis_up and not locked:
            # Another process is loading this key: wait a little for its value rather than load it too.
            deadline = time.monotonic() + min(self.lock_ttl, 2.0)
            while time.monotonic() < deadline:
                sleep(0.01)
                raw = self.redis.get(miss.key)
                if raw is SKIPPED:
                    break
                env = decode_wire(
                    raw, schema=miss.schema, record_type=miss.record_type, generation=miss.generation or 0
                )
                if env is not None:
                    return None if env.negative else cast(T, env.value)
                # The holder gave up without storing (on a cluster its breaker may have opened for a
                # failure on another node while this key's node answers): load now rather than wait on.
                if raw is None and self.redis.call(lambda c: c.exists(lock_key)) == 0:
                    break
        try:
            epoch = self._epoch
            t0 = time.monotonic()
            self.stats_counters["loads"] += 1
            value: T | None = load_checked(loader, miss.record_type)
            elapsed = time.monotonic() - t0
            life = self._ttl((self.negative_ttl if negative_ttl is None else negative_ttl) if value is None else ttl)
            self._store(miss, value, life, elapsed, epoch)
            return value
        finally:
            if locked:
                self.redis.unlock(lock_key, token)

    def _store(self, miss: Miss, value: Any, ttl: float, load_seconds: float, epoch: int) -> None:
        key, schema, negative = miss.key, miss.schema, value is None
        data = NEGATIVE if negative else encode_value(value)  # before any layer: all hold it or none
        generation = miss.generation
        stored_anywhere = False
        if miss.redis_version is not SKIPPED and generation is not None:
            payload = encode_wire(
                data, schema=schema, generation=generation, ttl=ttl, load_seconds=load_seconds, negative=negative
            )
            ok = self.redis.cas_set(key, version_key(key), miss.redis_version, payload, int(ttl * 1000))
            if ok == 0:
                self.stats_counters["stale_writes_refused"] += 1
                return  # invalidated while we loaded: do not cache what we read
            stored_anywhere = ok == 1
            self.redis.stats["writes"] += 1
        if miss.table_version is not None and not negative:
            doc = encode_doc(data, schema=schema, ttl=ttl, load_seconds=load_seconds)
            entry = self.table.store(key, doc, ttl, miss.table_version + 1)
            if entry is None:  # a newer version is stored: invalidated (or rewritten) while we loaded
                self.stats_counters["stale_writes_refused"] += 1
                return
            stored_anywhere = stored_anywhere or entry is not MISSING
        if stored_anywhere or negative:
            env = Envelope(value, negative, generation or 0, time.time() + ttl, load_seconds)
            self._fill_l1(key, schema, env, epoch, fenced=False, data=None if negative else data)
