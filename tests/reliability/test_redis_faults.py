"""The cache with Redis refused, killed or hung (SIGSTOP): bounded, never raising, never stale after.

Every fault here is done to a redis-server this test started (never the machine's shared one).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from datalayer import CacheUnavailable, User, transaction, user_repo
from datalayer.cache import CacheManager
from datalayer.config import RedisTarget, Settings
from datalayer.pool import DataLayerPool, connection
from datalayer.testing import RedisProcess

BOUND = 0.100  # extra seconds a cache call may cost over the database path
_n = itertools.count(1)


@pytest.fixture
def managers(redis_process: RedisProcess, dl_pool: DataLayerPool) -> Iterator[Callable[..., CacheManager]]:
    made: list[CacheManager] = []
    prefix = f"f{os.getpid()}x{next(_n)}"

    def make(**kw: Any) -> CacheManager:
        kw.setdefault("redis_target", RedisTarget(url=redis_process.url))
        kw.setdefault("breaker_cooldown", 0.2)
        m = CacheManager(settings=Settings(cache_prefix=prefix), pool=dl_pool, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def _user(pool: DataLayerPool, name: str) -> User:
    with connection(pool) as db:
        return user_repo.create(db, username=name, email=f"{name}@example.com", hashed_password="h")


def _db_read(pool: DataLayerPool, user_id: int) -> Callable[[], User | None]:
    def load() -> User | None:
        with connection(pool) as db:
            return user_repo.get_by_id(db, user_id)

    return load


def _baseline(loader: Callable[[], Any], n: int = 20) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loader()
        times.append(time.perf_counter() - t0)
    return max(times)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def test_refused_redis_costs_nothing_and_never_raises(dl_pool: DataLayerPool, managers: Any,
                                                      redis_process: RedisProcess) -> None:
    u = _user(dl_pool, "refused")
    redis_process.kill()  # nothing listens on the port: connections are refused
    cache = managers(l1_size=0)
    load = _db_read(pool=dl_pool, user_id=u.id)
    base = _baseline(load)
    worst = 0.0
    for i in range(30):
        elapsed, got = _timed(lambda: cache.get_or_load(cache.keys.user(u.id), load, User))
        assert got == u
        worst = max(worst, elapsed)
        cache.cache_user_data(i, {"i": i})  # writes degrade too
        cache.invalidate_user_cache(i)
    # the table layer costs a database round trip or two on top of the loader's
    assert worst < 3 * base + BOUND, (worst, base)
    assert cache.stats()["breaker"]["state"] in ("open", "half-open")


@pytest.mark.parametrize("fault", ["sigstop", "kill"])
def test_fault_mid_run_bounded_and_no_stale_read_after(dl_pool: DataLayerPool, managers: Any,
                                                       redis_process: RedisProcess, fault: str) -> None:
    u = _user(dl_pool, f"victim_{fault}")
    reader = managers(l1_size=0)  # reads go to Redis every time
    writer = managers(l1_size=100, l1_max_ttl=0.5)
    key = reader.keys.user(u.id)
    load = _db_read(dl_pool, u.id)
    assert reader.get_or_load(key, load, User) == u
    assert reader.get(key, User) == u and reader.stats()["redis"]["hits"] >= 1
    base = _baseline(load)

    redis_process.pause() if fault == "sigstop" else redis_process.kill()
    worst = 0.0
    with transaction() as db:  # the change happens while Redis is unreachable
        changed = user_repo.update(db, u.id, email=f"changed_{fault}@example.com")
        writer.delete(key, db=db)
    for _ in range(20):
        for m in (reader, writer):
            elapsed, got = _timed(lambda m=m: m.get_or_load(key, load, User))
            worst = max(worst, elapsed)
            assert got == changed  # the table's tombstone sent everyone to the database
    assert worst < 3 * base + BOUND, f"a cache call took {worst * 1000:.0f} ms (database path {base * 1000:.0f} ms)"

    if fault == "sigstop":
        redis_process.resume()  # Redis comes back with the old value still stored
    else:
        redis_process.start()  # a new, empty Redis on the same port
    deadline = time.monotonic() + 5
    while (writer.stats()["breaker"]["state"] != "closed" or reader.stats()["breaker"]["state"] != "closed") \
            and time.monotonic() < deadline:
        reader.get(key, User)
        time.sleep(0.05)
    time.sleep(0.2)  # the generation message reaches every subscriber
    assert reader.get_or_load(key, load, User) == changed
    assert writer.get_or_load(key, load, User) == changed
    assert reader.stats()["breaker"]["opened"] >= 1


def test_strict_mode_raises(dl_pool: DataLayerPool, managers: Any, redis_process: RedisProcess) -> None:
    strict = managers(strict=True)
    strict.cache_user_data(1, {"v": 1})
    redis_process.kill()
    with pytest.raises(CacheUnavailable):
        strict.cache_user_data(2, {"v": 2})
    with pytest.raises(CacheUnavailable):
        strict.get_cached_user_data(1)
