"""datalayer.aio's cache: the seed API awaited, async loaders and single-flight, pub/sub across managers,
invalidation tied to COMMIT, and the bounds with Redis hung (a redis-server of the test's own)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from datalayer import CacheUnavailable, User, ValidationError
from datalayer.aio import (
    AsyncCacheManager,
    AsyncConnection,
    AsyncDataLayerPool,
    cache_entry_repo,
    close_cache_manager,
    connection,
    get_cache_manager,
    transaction,
    user_repo,
)
from datalayer.cache import CacheManager
from datalayer.cache.manager_async import set_cache_manager
from datalayer.config import RedisTarget, Settings
from datalayer.testing import RedisProcess

pytestmark = pytest.mark.anyio

BOUND = 0.100  # what a cache call may cost over the database path with Redis hung
_n = itertools.count(1)
MakeCache = Callable[..., AsyncCacheManager]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def make(redis_target: RedisTarget, adl_pool: AsyncDataLayerPool) -> AsyncIterator[MakeCache]:
    """Async caches under one key prefix of this test (the table layer in this test's database)."""
    prefix = f"a{os.getpid()}x{next(_n)}"
    made: list[AsyncCacheManager] = []

    def make(**kw: Any) -> AsyncCacheManager:
        kw.setdefault("redis_target", redis_target)
        kw.setdefault("pool", adl_pool)
        manager = AsyncCacheManager(settings=Settings(cache_prefix=kw.pop("prefix", prefix)), **kw)
        made.append(manager)
        return manager

    yield make
    for m in made:
        with contextlib.suppress(Exception):  # Redis may be down on purpose
            await m.flush()
        await m.close()


async def _user(pool: AsyncDataLayerPool, name: str) -> User:
    async with connection(pool) as db:
        return await user_repo.create(db, username=name, email=f"{name}@example.com", hashed_password="h")


def _loader(pool: AsyncDataLayerPool, user_id: int, calls: list[int]) -> Callable[[], Awaitable[User | None]]:
    async def load() -> User | None:
        calls.append(user_id)
        async with connection(pool) as db:
            return await user_repo.get_by_id(db, user_id)

    return load


async def _pending(pool: AsyncDataLayerPool, prefix: str) -> list[Any]:
    async with connection(pool) as db:
        return await cache_entry_repo.pending_invalidations(db, prefix + ":")


# ------------------------------------------------------------------------------------ the seed API


async def test_seed_api_awaited(make: MakeCache) -> None:
    cache = make()
    await cache.cache_analysis_result("analysis_123", {"result": "data"}, ttl=3600)
    assert await cache.get_cached_analysis_result("analysis_123") == {"result": "data"}
    await cache.cache_user_data("user_123", {"name": "John"}, ttl=1800)
    assert await cache.get_cached_user_data("user_123") == {"name": "John"}
    await cache.invalidate_user_cache("user_123")
    assert await cache.get_cached_user_data("user_123") is None
    await cache.cache_user_data(42, {"name": "Ann"})
    await cache.cache_user_analyses(42, [1, 2, 3])
    await cache.cache_tool_generation(7, {"status": "done"})
    await cache.cache_system_stats({"users": 3})
    assert await cache.get_cached_user_analyses(42) == [1, 2, 3]
    assert await cache.get_cached_tool_generation(7) == {"status": "done"}
    assert await cache.get_cached_system_stats() == {"users": 3}
    await cache.invalidate_user_cache(42)  # user:{id}, user_analyses:{id}, system_stats
    assert await cache.get_cached_user_data(42) is None and await cache.get_cached_user_analyses(42) is None
    assert await cache.get_cached_system_stats() is None
    await cache.cache_analysis_result(5, {"r": 1})
    await cache.cache_user_analyses(9, [5])
    await cache.invalidate_analysis(5, user_id=9)
    assert await cache.get_cached_analysis_result(5) is None and await cache.get_cached_user_analyses(9) is None
    await cache.invalidate_tool_generation(7)
    assert await cache.get_cached_tool_generation(7) is None
    with pytest.raises(ValidationError):
        await cache.cache_user_data(None, {"x": 1})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await cache.set(cache.keys.user(1), {"x": float("nan")})


async def test_values_come_back_from_every_layer(make: MakeCache) -> None:
    writer, reader = make(), make(l1_size=0)
    key = writer.keys.user(3)
    await writer.set(key, {"name": "Ann", "tags": ["a"]})
    got = await writer.get(key)  # from L1: a copy
    assert got == {"name": "Ann", "tags": ["a"]}
    got["tags"].append("mutated")
    assert await writer.get(key) == {"name": "Ann", "tags": ["a"]}
    assert await reader.get(key) == {"name": "Ann", "tags": ["a"]}  # from Redis
    await reader.redis.client.delete(key)  # Redis lost it: the table still has it, and refills Redis
    assert await reader.get(key) == {"name": "Ann", "tags": ["a"]}
    assert await reader.redis.client.get(key) is not None
    stats = await reader.stats(probe=True)
    assert stats["table"]["hits"] == 1 and stats["redis"]["hits"] >= 1 and stats["redis"]["ping"] is True
    assert stats["breaker"]["state"] == "closed" and stats["table"]["entries"] >= 1


async def test_api_responses_and_flush(make: MakeCache) -> None:
    cache = make()
    assert await cache.cache_api_response("/v1/report", {"page": 1}, {"rows": [1]}, ttl=300) is True
    await cache.cache_api_response("/v1/report", {"page": 2}, {"rows": [2]})
    await cache.cache_api_response("/v1/other", {"page": 1}, {"rows": [3]})
    assert await cache.get_cached_api_response("/v1/report", {"page": 1}) == {"rows": [1]}
    await cache.invalidate_api("/v1/report")  # every response of the endpoint, no SCAN
    assert await cache.get_cached_api_response("/v1/report", {"page": 1}) is None
    assert await cache.get_cached_api_response("/v1/report", {"page": 2}) is None
    assert await cache.get_cached_api_response("/v1/other", {"page": 1}) == {"rows": [3]}
    await cache.cache_user_data(1, {"v": 1})
    await cache.cache_tool_generation(1, {"v": 2})
    assert await cache.flush("user:") >= 1
    assert await cache.get_cached_user_data(1) is None
    assert await cache.get_cached_tool_generation(1) == {"v": 2}


async def test_the_process_wide_cache_is_one_per_event_loop(make: MakeCache) -> None:
    mine = make()
    previous = set_cache_manager(mine)
    try:
        assert get_cache_manager() is mine and get_cache_manager() is get_cache_manager()
        assert isinstance(mine, AsyncCacheManager) and not isinstance(mine, CacheManager)
        await get_cache_manager().cache_user_data(1, {"v": 1})
        assert await mine.get_cached_user_data(1) == {"v": 1}
    finally:
        set_cache_manager(previous)
    other = make()
    set_cache_manager(other)
    await close_cache_manager()  # closes and forgets this loop's cache
    assert set_cache_manager(None) is None
    assert other.redis._stop.is_set() and other.redis._subscriber_done.is_set()  # its listener ended


# --------------------------------------------------------------------- read-through and single-flight


async def test_get_or_load_with_an_async_loader(make: MakeCache, adl_pool: AsyncDataLayerPool) -> None:
    cache = make()
    u = await _user(adl_pool, "aload")
    calls: list[int] = []
    load = _loader(adl_pool, u.id, calls)
    key = cache.keys.user(u.id)
    assert await cache.get_or_load(key, load, User, ttl=600) == u
    got = await cache.get_or_load(key, load, User, ttl=600)
    assert got == u and isinstance(got, User) and calls == [u.id]  # the second one is a hit
    assert await make(l1_size=0).get_or_load(key, load, User) == u and calls == [u.id]  # from Redis
    missing: list[int] = []
    nothing = _loader(adl_pool, 10**9, missing)
    assert await cache.get_or_load(cache.keys.user(10**9), nothing, User) is None
    assert await cache.get_or_load(cache.keys.user(10**9), nothing, User) is None
    assert missing == [10**9]  # "not found" is cached too
    assert (await cache.stats())["negative_hits"] == 1
    # a plain function is accepted too (typed loaders are async: the ignore is for mypy)
    plain = await cache.get_or_load(cache.keys.tool_generation(1), lambda: {"plain": True})  # type: ignore[arg-type,return-value,func-returns-value]
    assert plain == {"plain": True}


@pytest.mark.parametrize("redis_up", [True, False])
async def test_single_flight_one_load_for_concurrent_tasks(
    make: MakeCache, request: pytest.FixtureRequest, redis_up: bool
) -> None:
    if redis_up:
        cache = make()
    else:  # no Redis lock across processes to lean on: only the in-process single-flight holds them back
        down: RedisProcess = request.getfixturevalue("redis_process")
        down.kill()
        cache = make(redis_target=RedisTarget(url=down.url), use_table=False)
    key = cache.keys.analysis_result("hot")
    loads = 0

    async def slow() -> dict[str, int]:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.2)  # the other tasks arrive while it loads
        return {"n": 42}

    results = await asyncio.gather(*(cache.get_or_load(key, slow, ttl=60) for _ in range(25)))
    assert results == [{"n": 42}] * 25
    assert loads == 1 and (await cache.stats())["loads"] == 1


async def test_a_failed_leader_lets_waiting_tasks_load(make: MakeCache) -> None:
    cache = make()
    key = cache.keys.analysis_result("flaky")
    attempts = 0

    async def flaky() -> dict[str, int]:
        nonlocal attempts
        attempts += 1
        first = attempts == 1
        await asyncio.sleep(0.1)
        if first:
            raise RuntimeError("the database went away")
        return {"ok": 1}

    results = await asyncio.gather(*(cache.get_or_load(key, flaky) for _ in range(3)), return_exceptions=True)
    assert sum(isinstance(r, RuntimeError) for r in results) == 1
    assert [r for r in results if not isinstance(r, BaseException)] == [{"ok": 1}] * 2


async def test_no_stale_write_back(make: MakeCache) -> None:
    cache = make()
    key = cache.keys.user(77)
    started = asyncio.Event()
    release = asyncio.Event()

    async def old_read() -> dict[str, str]:
        started.set()
        await release.wait()  # the invalidation happens while the loader holds the old value
        return {"email": "old"}

    task = asyncio.create_task(cache.get_or_load(key, old_read))
    await started.wait()
    await cache.delete(key)
    release.set()
    assert await task == {"email": "old"}  # the caller gets what it loaded...
    assert await cache.get(key) is None  # ...but no layer keeps it
    assert (await cache.stats())["stale_writes_refused"] == 1


# ---------------------------------------------------------------------------------------- invalidation


async def test_pubsub_drops_the_other_managers_l1_copy(make: MakeCache) -> None:
    a, b = make(), make()
    assert await a.redis.subscribed.wait(5) and await b.redis.subscribed.wait(5)
    key = a.keys.user(5)
    await a.set(key, {"v": 1})
    assert await b.get(key) == {"v": 1}
    assert await b.get(key) == {"v": 1} and (await b.stats())["l1"]["hits"] >= 1  # b holds it in L1
    await a.delete(key)
    deadline = time.monotonic() + 2.0  # far below b's L1 lifetime (5 s): only the message can drop it
    while await b.get(key) is not None:
        assert time.monotonic() < deadline, "the other manager kept serving its L1 copy"
        await asyncio.sleep(0.01)


async def test_invalidation_is_sent_after_commit_and_dropped_on_rollback(
    make: MakeCache, adb: AsyncConnection, adl_pool: AsyncDataLayerPool
) -> None:
    cache = make()
    prefix = cache.keys.prefix
    await cache.cache_user_data(7, {"v": 1})
    async with transaction(adb):
        await cache.invalidate_user_cache(7)  # found through the open transaction
        assert await cache.get_cached_user_data(7) == {"v": 1}  # not before COMMIT
        recorded = await cache_entry_repo.pending_invalidations(adb, prefix + ":")
        assert {p.key for p in recorded} >= {cache.keys.user(7)}  # recorded in the transaction
    assert await cache.get_cached_user_data(7) is None
    assert await _pending(adl_pool, prefix) == []  # sent, and the record forgotten

    await cache.cache_user_data(8, {"v": 1})
    with pytest.raises(RuntimeError):
        async with transaction(adb):
            await cache.invalidate_user_cache(8, db=adb)
            raise RuntimeError("rolled back")
    assert await cache.get_cached_user_data(8) == {"v": 1}
    assert await _pending(adl_pool, prefix) == []

    await cache.cache_user_data(9, {"v": 1})
    async with transaction(adb):  # a savepoint that rolls back drops only its own invalidation
        await cache.invalidate_user_cache(8, db=adb)
        with pytest.raises(RuntimeError):
            async with transaction(adb):
                await cache.invalidate_user_cache(9, db=adb)
                raise RuntimeError("savepoint rolled back")
    assert await cache.get_cached_user_data(8) is None
    assert await cache.get_cached_user_data(9) == {"v": 1}
    assert await _pending(adl_pool, prefix) == []


# ---------------------------------------------------------------------------- Redis hung, refused, back


@pytest.fixture
def own_redis(redis_process: RedisProcess) -> RedisTarget:
    """A redis-server of this test's own: the faults are done to it, never to the shared one."""
    return RedisTarget(url=redis_process.url)


async def _timed(call: Awaitable[Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = await call
    return time.perf_counter() - t0, out


@pytest.mark.parametrize("fault", ["sigstop", "kill"])
async def test_hung_or_refused_redis_is_bounded_and_never_raises(
    make: MakeCache, adl_pool: AsyncDataLayerPool, own_redis: RedisTarget, redis_process: RedisProcess, fault: str
) -> None:
    u = await _user(adl_pool, f"hung_{fault}")
    cache = make(redis_target=own_redis, l1_size=0)
    calls: list[int] = []
    load = _loader(adl_pool, u.id, calls)
    key = cache.keys.user(u.id)
    assert await cache.get_or_load(key, load, User) == u
    base = max([(await _timed(load()))[0] for _ in range(20)])

    redis_process.pause() if fault == "sigstop" else redis_process.kill()
    worst = 0.0
    for i in range(15):
        for call in (
            cache.get_or_load(key, load, User),
            cache.get_cached_user_data(u.id),
            cache.cache_user_data(1000 + i, {"i": i}),
            cache.invalidate_user_cache(1000 + i),
            cache.cache_api_response("/v1/report", {"i": i}, {"r": i}),
        ):
            elapsed, _ = await _timed(call)
            worst = max(worst, elapsed)
    # the table layer costs a database round trip or two on top of the loader's
    assert worst < 3 * base + BOUND, f"a cache call took {worst * 1000:.0f} ms (database path {base * 1000:.0f} ms)"
    stats = await cache.stats()
    assert stats["breaker"]["state"] in ("open", "half-open") and stats["redis"]["errors"] >= 1

    no_table = make(redis_target=own_redis, use_table=False, prefix="notable" + cache.keys.prefix)
    for i in range(10):  # Redis alone: one timeout at most, then the breaker answers at once
        elapsed, got = await _timed(no_table.get_cached_user_data(i))
        assert got is None and elapsed < BOUND, f"{elapsed * 1000:.0f} ms"
        elapsed, _ = await _timed(no_table.cache_user_data(i, {"i": i}))
        assert elapsed < BOUND, f"{elapsed * 1000:.0f} ms"

    strict = make(redis_target=own_redis, strict=True, use_table=False, prefix="strict" + cache.keys.prefix)
    with pytest.raises(CacheUnavailable):
        await strict.cache_user_data(1, {"v": 1})
    with pytest.raises(CacheUnavailable):
        await strict.get_cached_user_data(1)
    with pytest.raises(CacheUnavailable):
        await cache.flush()  # for operators: it changes nothing rather than half of it
    if fault == "sigstop":
        redis_process.resume()
    else:
        redis_process.start()


async def test_the_breaker_recovers_in_the_background(
    make: MakeCache, adl_pool: AsyncDataLayerPool, own_redis: RedisTarget, redis_process: RedisProcess
) -> None:
    u = await _user(adl_pool, "recovering")
    reader = make(redis_target=own_redis, l1_size=0, breaker_cooldown=0.2)
    writer = make(redis_target=own_redis, breaker_cooldown=0.2)
    key = reader.keys.user(u.id)
    load = _loader(adl_pool, u.id, [])
    assert await reader.get_or_load(key, load, User) == u
    generation = (await reader.stats())["generation"]

    redis_process.pause()
    changed: User | None = None
    try:
        async with connection(adl_pool) as db, transaction(db):  # the change happens while Redis is hung
            changed = await user_repo.update(db, u.id, email="recovered@example.com")
            await writer.delete(key, db=db)
        for m in (reader, writer):
            assert await m.get_or_load(key, load, User) == changed  # the table's tombstone: no stale read
            assert m.redis.breaker.state in ("open", "half-open")
    finally:
        redis_process.resume()
    deadline = time.monotonic() + 5
    # No cache call from here on: only the background probe can close the breakers.
    while reader.redis.breaker.state != "closed" or writer.redis.breaker.state != "closed":
        assert time.monotonic() < deadline, "the breaker stayed open after Redis answered again"
        await asyncio.sleep(0.02)
    assert (await reader.stats())["generation"] != generation  # nothing from before the outage is served
    assert await reader.get_or_load(key, load, User) == changed
    assert await writer.get_or_load(key, load, User) == changed
    assert await _pending(adl_pool, reader.keys.prefix) == []  # the invalidation was replayed
