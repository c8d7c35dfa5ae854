"""The cache: seed API, three layers, typed values, commit-tied invalidation, races, stampedes."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import redis

from datalayer import User, ValidationError, cache_entry_repo, transaction, user_repo
from datalayer.cache import CacheManager
from datalayer.cache._keys import version_key
from datalayer.config import RedisTarget, Settings
from datalayer.errors import CacheUnavailable
from datalayer.pool import DataLayerPool, connection

_n = itertools.count(1)
MakeCache = Callable[..., CacheManager]


@pytest.fixture
def make_cache(redis_target: RedisTarget, dl_pool: DataLayerPool) -> Iterator[MakeCache]:
    prefix = f"t{os.getpid()}x{next(_n)}"
    made: list[CacheManager] = []

    def make(**kw: Any) -> CacheManager:
        kw.setdefault("redis_target", redis_target)
        kw.setdefault("pool", dl_pool)
        manager = CacheManager(settings=Settings(cache_prefix=kw.pop("prefix", prefix)), **kw)
        made.append(manager)
        return manager

    yield make
    for m in made:
        try:
            m.flush()
        except Exception:
            pass
        m.close()


@pytest.fixture
def cache(make_cache: MakeCache) -> CacheManager:
    return make_cache()


def test_seed_api(cache: CacheManager) -> None:
    cache.cache_analysis_result("analysis_123", {"result": "data"}, ttl=3600)
    assert cache.get_cached_analysis_result("analysis_123") == {"result": "data"}
    cache.cache_user_data("user_123", {"name": "John"}, ttl=1800)
    assert cache.get_cached_user_data("user_123") == {"name": "John"}
    cache.invalidate_user_cache("user_123")
    assert cache.get_cached_user_data("user_123") is None
    cache.cache_user_data(42, {"name": "Ann"})  # int ids too
    cache.cache_user_analyses(42, [1, 2, 3])
    cache.cache_tool_generation(7, {"status": "done"})
    cache.cache_system_stats({"users": 3})
    assert cache.get_cached_user_data(42) == {"name": "Ann"} and cache.get_cached_user_analyses(42) == [1, 2, 3]
    assert cache.get_cached_tool_generation(7) == {"status": "done"}
    cache.invalidate_user_cache(42)
    assert cache.get_cached_user_data(42) is None and cache.get_cached_user_analyses(42) is None
    assert cache.get_cached_system_stats() is None  # derived from users
    assert cache.get_cached_tool_generation(7) == {"status": "done"}
    cache.invalidate_tool_generation(7)
    assert cache.get_cached_tool_generation(7) is None


def test_returned_values_are_copies(cache: CacheManager) -> None:
    cache.cache_user_data(1, {"name": "Ann", "tags": ["a"]})
    got = cache.get_cached_user_data(1)
    got["tags"].append("mutated")
    assert cache.get_cached_user_data(1) == {"name": "Ann", "tags": ["a"]}


def test_keys_and_hash_tags(cache: CacheManager) -> None:
    k = cache.keys
    p = cache.keys.prefix
    assert k.user(42) == f"{p}:user:{{42}}" and k.user("42") == k.user(42)
    assert k.user_analyses(42) == f"{p}:user_analyses:{{42}}"
    assert k.analysis_result("analysis_123") == f"{p}:analysis_result:{{analysis_123}}"
    assert k.tool_generation(9) == f"{p}:tool_generation:{{9}}" and k.system_stats() == f"{p}:system_stats"
    slot = redis.RedisCluster.__dict__.get("keyslot") and None
    from redis.crc import key_slot

    assert key_slot(k.user(42).encode()) == key_slot(k.user_analyses(42).encode())
    api1, api2 = k.api("/v1/users", {"page": 1}, 0), k.api("/v1/users", {"page": 2}, 0)
    assert (api1.startswith(f"{p}:api:/v1/users:{{") and key_slot(api1.encode()) != key_slot(api2.encode())) or slot is None
    assert k.api("/e", {"a": 1, "b": 2}, 0) == k.api("/e", {"b": 2, "a": 1}, 0)  # normalised request


@pytest.mark.parametrize("hostile", ["}{", "a}b{c", "x\ny", "42:evil", "ünï", "*", "a b", "%41", "A"])
def test_hostile_ids_are_escaped_and_distinct(cache: CacheManager, hostile: str) -> None:
    key = cache.keys.user(hostile)
    tag = key[key.index("{") + 1: key.index("}")]
    assert "{" not in tag and "}" not in tag and "\n" not in key and " " not in key
    cache.cache_user_data(hostile, {"id": hostile})
    assert cache.get_cached_user_data(hostile) == {"id": hostile}
    if hostile != "A":
        assert cache.get_cached_user_data("A") is None


@pytest.mark.parametrize("bad", [None, 1.5, True, "", "x" * 201, ["list"], b"bytes"])
def test_bad_ids(cache: CacheManager, bad: Any) -> None:
    with pytest.raises(ValidationError):
        cache.cache_user_data(bad, {"x": 1})


def _user(pool: DataLayerPool, name: str = "cached") -> User:
    with connection(pool) as db:
        return user_repo.create(db, username=name, email=f"{name}@example.com", hashed_password="h")


def _loader(pool: DataLayerPool, user_id: int, calls: list[int]) -> Callable[[], User | None]:
    def load() -> User | None:
        calls.append(1)
        with connection(pool) as db:
            return user_repo.get_by_id(db, user_id)

    return load


def test_get_or_load_through_every_layer(make_cache: MakeCache, dl_pool: DataLayerPool) -> None:
    u = _user(dl_pool)
    a = make_cache()
    assert a.redis.subscribed.wait(5)  # subscribing clears L1 (messages may have been missed before)
    key = a.keys.user(u.id)
    calls: list[int] = []
    assert a.get_or_load(key, _loader(dl_pool, u.id, calls), User, ttl=60) == u
    assert calls == [1] and a.stats()["loads"] == 1
    assert a.get_or_load(key, _loader(dl_pool, u.id, calls), User) == u  # L1
    assert a.stats()["l1"]["hits"] == 1 and calls == [1]
    b = make_cache(l1_size=0)  # another process, no L1
    assert b.get_or_load(key, _loader(dl_pool, u.id, calls), User) == u  # Redis
    assert b.stats()["redis"]["hits"] == 1 and calls == [1]
    b.redis.client.delete(key)  # Redis lost the key (flush, eviction): the table still has it
    got = b.get_or_load(key, _loader(dl_pool, u.id, calls), User)
    assert got == u and isinstance(got, User) and calls == [1] and b.stats()["table"]["hits"] == 1
    assert b.redis.client.get(key) is not None  # and Redis was refilled on the way back
    c = make_cache(l1_size=0)
    assert c.get_or_load(key, _loader(dl_pool, u.id, calls), User) == u and c.stats()["redis"]["hits"] == 1


def test_ttl_expiry(cache: CacheManager) -> None:
    cache.cache_user_data(1, {"v": 1}, ttl=0.3)
    assert cache.get_cached_user_data(1) == {"v": 1}
    time.sleep(0.4)
    assert cache.get_cached_user_data(1) is None


def test_negative_caching(cache: CacheManager) -> None:
    calls = []

    def missing() -> User | None:
        calls.append(1)
        return None

    key = cache.keys.user(999)
    assert cache.get_or_load(key, missing, User, negative_ttl=0.3) is None
    assert cache.get_or_load(key, missing, User, negative_ttl=0.3) is None
    assert calls == [1] and cache.stats()["negative_hits"] == 1
    time.sleep(0.4)
    cache.get_or_load(key, missing, User)
    assert calls == [1, 1]


def test_old_schema_version_is_a_miss(make_cache: MakeCache) -> None:
    @attrs.frozen
    class Profile:
        name: str

    @attrs.frozen
    class ProfileV2:
        __cache_version__ = 2
        name: str
        age: int

    ProfileV2.__qualname__ = Profile.__qualname__
    cache = make_cache(l1_size=0)
    key = cache.keys.user(5)
    assert cache.get_or_load(key, lambda: Profile("Ann"), Profile) == Profile("Ann")
    loaded = cache.get_or_load(key, lambda: ProfileV2("Ann", 30), ProfileV2)
    assert loaded == ProfileV2("Ann", 30)  # the v1 value was not structured into v2: a miss, then a load
    # garbage in Redis is a miss too, never a crash
    cache.redis.client.set(key, b"\x00not json")
    cache.use_table = False
    assert cache.get_or_load(key, lambda: ProfileV2("Bob", 1), ProfileV2) == ProfileV2("Bob", 1)


def test_invalidation_waits_for_commit(cache: CacheManager, dl_pool: DataLayerPool) -> None:
    cache.cache_user_data(1, {"v": "old"})
    with connection(dl_pool) as db:
        with transaction(db):
            cache.invalidate_user_cache(1)
            assert cache.get_cached_user_data(1) == {"v": "old"}  # not yet: the transaction may roll back
        assert cache.get_cached_user_data(1) is None
        cache.cache_user_data(1, {"v": "kept"})
        with pytest.raises(RuntimeError), transaction(db):
            cache.invalidate_user_cache(1, db=db)
            raise RuntimeError
        assert cache.get_cached_user_data(1) == {"v": "kept"}  # rolled back: nothing to invalidate
        with transaction(db):
            with pytest.raises(KeyError), transaction(db):  # a savepoint
                cache.invalidate_user_cache(1)
                raise KeyError
            assert cache.get_cached_user_data(1) == {"v": "kept"}
        assert cache.get_cached_user_data(1) == {"v": "kept"}  # the savepoint's invalidation was dropped


def test_stale_write_race_is_refused(make_cache: MakeCache, dl_pool: DataLayerPool) -> None:
    u = _user(dl_pool, "racer")
    cache = make_cache()
    key = cache.keys.user(u.id)
    read_done, invalidated = threading.Event(), threading.Event()
    results: list[Any] = []

    def slow_loader() -> User | None:
        with connection(dl_pool) as db:
            value = user_repo.get_by_id(db, u.id)  # reads the old row ...
        read_done.set()
        invalidated.wait(5)  # ... and is preempted until the update and invalidation are done
        return value

    t = threading.Thread(target=lambda: results.append(cache.get_or_load(key, slow_loader, User)))
    t.start()
    read_done.wait(5)
    with transaction() as db:
        user_repo.update(db, u.id, email="new@example.com")
        cache.delete(key, db=db)
    invalidated.set()
    t.join(5)
    assert results[0].email == "racer@example.com"  # the caller gets what it read ...
    assert cache.stats()["stale_writes_refused"] == 1  # ... but it was not written back
    fresh = cache.get_or_load(key, _loader(dl_pool, u.id, []), User)
    assert fresh is not None and fresh.email == "new@example.com"
    other = make_cache(l1_size=0)
    assert other.get(key, User).email == "new@example.com"  # type: ignore[union-attr]


def test_stampede_one_load(make_cache: MakeCache) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def slow() -> dict[str, int]:
        with lock:
            calls.append(1)
        time.sleep(0.3)
        return {"v": 1}

    a, b = make_cache(), make_cache()  # two "processes": single-flight inside each, a Redis lock across
    key = a.keys.analysis_result("hot")
    barrier = threading.Barrier(50)
    out: list[Any] = []

    def worker(i: int) -> None:
        barrier.wait()
        out.append((a if i % 2 else b).get_or_load(key, slow, ttl=60))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert out == [{"v": 1}] * 50
    assert len(calls) == 1


def test_early_refresh_of_hot_keys(make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch) -> None:
    from datalayer.cache import _reading

    monkeypatch.setattr(_reading._rng, "random", lambda: 0.5)  # -ln(0.5) = 0.69: a deterministic draw
    cache = make_cache(l1_size=0, xfetch_beta=1.0)
    key = cache.keys.analysis_result("xfetch")
    calls: list[int] = []

    def load() -> dict[str, int]:
        calls.append(1)
        time.sleep(0.05)
        return {"n": len(calls)}

    cache.get_or_load(key, load, ttl=60)
    assert cache.get_or_load(key, load, ttl=60) == {"n": 1}  # far from expiry: served, not refreshed
    cache.xfetch_beta = 5000.0  # 0.05 s x 5000 x 0.69 = 172 s ahead: past the expiry (at most 60 s away)
    cache.get_or_load(key, load, ttl=60)  # refreshed early by this caller
    assert calls == [1, 1] and cache.stats()["early_refreshes"] == 1


def test_cross_process_l1_invalidation(make_cache: MakeCache) -> None:
    a, b = make_cache(l1_max_ttl=30.0), make_cache(l1_max_ttl=30.0)
    assert a.redis.subscribed.wait(5) and b.redis.subscribed.wait(5)
    a.cache_user_data(9, {"v": 1})
    assert a.get_cached_user_data(9) == {"v": 1} and b.get_cached_user_data(9) == {"v": 1}
    assert a.stats()["l1"]["size"] >= 1 and b.stats()["l1"]["size"] >= 1
    a.invalidate_user_cache(9)
    deadline = time.monotonic() + 1.0
    while b.get_cached_user_data(9) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.get_cached_user_data(9) is None  # b's L1 dropped it well within the bound


def test_api_group_invalidation(make_cache: MakeCache) -> None:
    a, b = make_cache(), make_cache()
    assert a.cache_api_response("/v1/report", {"q": 1}, {"rows": [1]}, ttl=60)
    a.cache_api_response("/v1/report", {"q": 2}, {"rows": [2]}, ttl=60)
    a.cache_api_response("/v1/other", {"q": 1}, {"rows": [3]}, ttl=60)
    assert b.get_cached_api_response("/v1/report", {"q": 1}) == {"rows": [1]}
    b.invalidate_api("/v1/report")
    assert b.get_cached_api_response("/v1/report", {"q": 1}) is None
    deadline = time.monotonic() + 1.0
    while a.get_cached_api_response("/v1/report", {"q": 2}) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.get_cached_api_response("/v1/report", {"q": 2}) is None
    assert a.get_cached_api_response("/v1/other", {"q": 1}) == {"rows": [3]}


def test_stats_and_flush(cache: CacheManager) -> None:
    cache.cache_user_data(1, {"v": 1})
    cache.get_cached_user_data(1)
    s = cache.stats()
    assert s["breaker"]["state"] == "closed" and s["redis"]["errors"] == 0 and s["generation"] is not None
    assert cache.flush("user:") >= 1
    assert cache.get_cached_user_data(1) is None
    with pytest.raises(ValidationError):
        cache.flush("user:*")


def test_cli_cache_stats_and_flush(redis_target: RedisTarget, dl_pool: DataLayerPool) -> None:
    import json as _json

    from helpers import clean_env, pool_env, run_py

    prefix = f"cli{os.getpid()}"
    env = clean_env(**pool_env(dl_pool), REDIS_URL=redis_target.url, CACHE_PREFIX=prefix,
                    REDIS_CLUSTER="1" if redis_target.cluster else "0")
    seed = run_py("from datalayer import get_cache_manager\nc = get_cache_manager()\n"
                  "c.cache_user_data(1, {'a': 1})\nc.cache_analysis_result(2, [1])\nc.close()", env)
    assert seed.returncode == 0, seed.stderr
    stats = run_py("import sys\nfrom datalayer.cli import main\nsys.exit(main(['cache', 'stats', '--json']))", env)
    assert stats.returncode == 0, stats.stderr
    doc = _json.loads(stats.stdout)
    assert doc["redis"]["ping"] is True and doc["table"]["entries"] == 2 and doc["breaker"]["state"] == "closed"
    flush = run_py("import sys\nfrom datalayer.cli import main\nsys.exit(main(['cache', 'flush', '--prefix', 'user:']))",
                   env)
    assert flush.returncode == 0 and "flushed" in flush.stdout
    check = run_py("from datalayer import get_cache_manager\nc = get_cache_manager()\n"
                   "print(c.get_cached_user_data(1), c.get_cached_analysis_result(2))\nc.flush()\nc.close()", env)
    assert check.stdout.strip() == "None [1]", check.stderr


# ------------------------------------------------------------------ values, keys and counters


BAD_VALUES = [float("nan"), float("inf"), {"x": float("-inf")}, 2**64, [-(2**63) - 1], "\udcff", {"s": "a\udc80"},
              {"k": "\x00"}, {1: "int key"}, object(), "x" * 1_000_001]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_values_follow_the_json_column_rules(cache: CacheManager, dl_pool: DataLayerPool, value: Any) -> None:
    key = cache.keys.user(1)
    with pytest.raises(ValidationError) as e:
        cache.set(key, value)
    assert "value" in e.value.errors
    with pytest.raises(ValidationError):
        cache.get_or_load(cache.keys.user(2), lambda: value)
    # no layer holds either: not Redis, not the table, not L1
    assert cache.redis.client.get(key) is None and cache.redis.client.get(cache.keys.user(2)) is None
    assert cache.get(key) is None and cache.get(cache.keys.user(2)) is None
    with connection(dl_pool) as db:
        assert cache_entry_repo.peek(db, key) is None and cache_entry_repo.peek(db, cache.keys.user(2)) is None


def test_a_value_near_the_limit_is_held_by_every_layer(make_cache: MakeCache, dl_pool: DataLayerPool) -> None:
    cache = make_cache(l1_size=0)
    value = "y" * (1_000_000 - 40)  # its envelope in the table is over 1 MB: the rule is about the value
    key = cache.keys.analysis_result("big")
    cache.set(key, value)
    cache.redis.client.delete(key)  # Redis lost it: the table has it
    assert cache.get(key) == value and cache.stats()["table"]["hits"] == 1


@pytest.mark.parametrize("key", ["dl:\udcff", "dl:a\x00", "", "k" * 513])
def test_keys_every_layer_cannot_hold_are_refused(cache: CacheManager, key: str) -> None:
    for call in (lambda: cache.get(key), lambda: cache.set(key, 1), lambda: cache.delete(key),
                 lambda: cache.get_or_load(key, lambda: 1)):
        with pytest.raises(ValidationError) as e:
            call()
        assert "key" in e.value.errors
    with pytest.raises(ValidationError):
        cache.keys.user("\udcff")
    with pytest.raises(ValidationError):
        cache.keys.user("\U0001f600" * 200)  # 200 characters, but 2,400 once escaped


def test_api_requests_follow_the_json_rules(cache: CacheManager) -> None:
    assert cache.cache_api_response("/e", {"q": None}, {"rows": []}, ttl=60)
    with pytest.raises(ValidationError) as e:
        cache.get_cached_api_response("/e", {"q": float("nan")})  # was the same key as {"q": None}
    assert "request" in e.value.errors


def test_counters_that_cannot_move_do_not_break_redis(make_cache: MakeCache) -> None:
    cache = make_cache(l1_size=0)
    top = str(2**63 - 1)
    for i, poison in enumerate((top, "garbage")):
        key = cache.keys.user(i)
        cache.set(key, {"v": 1})
        cache.redis.client.set(version_key(key), poison)
        cache.delete(key)  # INCR would fail here and open the breaker
        assert cache.get(key) is None and cache.redis.client.get(key) is None
        cache.set(key, {"v": 2})  # and here
        assert cache.get(key) == {"v": 2}
    cache.redis.client.set(cache.keys.api_generation("/e"), top)
    cache.invalidate_api("/e")
    cache.redis.client.set(cache.keys.global_generation(), "garbage")
    fresh = make_cache(l1_size=0)
    fresh.set(fresh.keys.user(9), {"v": 9})
    assert fresh.get(fresh.keys.user(9)) == {"v": 9}
    assert cache.stats()["breaker"]["opened"] == 0 and cache.stats()["redis"]["errors"] == 0
    assert fresh.stats()["redis"]["errors"] == 0


# ------------------------------------------------------------------ invalidations kept in PostgreSQL


def _pending(pool: DataLayerPool, prefix: str) -> list[str]:
    with connection(pool) as db:
        return [p.key for p in cache_entry_repo.pending_invalidations(db, prefix + ":")]


def test_invalidations_are_recorded_in_the_writers_transaction(cache: CacheManager, dl_pool: DataLayerPool) -> None:
    prefix = cache.keys.prefix
    with connection(dl_pool) as db:
        with transaction(db):
            cache.invalidate_user_cache(1, db=db)
            inside = [p.key for p in cache_entry_repo.pending_invalidations(db, prefix + ":")]
            assert sorted(inside) == sorted([cache.keys.user(1), cache.keys.user_analyses(1),
                                             cache.keys.system_stats()])
            assert _pending(dl_pool, prefix) == []  # not committed yet: no other process sees them
        assert _pending(dl_pool, prefix) == []  # Redis took them after COMMIT: forgotten
        with pytest.raises(RuntimeError), transaction(db):
            cache.invalidate_api("/e", db=db)
            raise RuntimeError
        assert _pending(dl_pool, prefix) == []  # rolled back with the write


def test_a_pending_invalidation_is_replayed_before_redis_is_read(make_cache: MakeCache,
                                                                 dl_pool: DataLayerPool) -> None:
    writer = make_cache(l1_size=0, l1_max_ttl=0.3)
    reader = make_cache(l1_size=100, l1_max_ttl=0.3)
    key = writer.keys.user(5)
    writer.set(key, {"v": "old"})
    assert reader.get(key) == {"v": "old"}
    writer.cache_api_response("/r", {"q": 1}, {"rows": [1]}, ttl=60)
    assert reader.get_cached_api_response("/r", {"q": 1}) == {"rows": [1]}
    with connection(dl_pool) as db:  # what a writer that died after its COMMIT leaves behind
        cache_entry_repo.record_invalidations(db, [key])
        cache_entry_repo.record_invalidations(db, [writer.keys.api_generation("/r")], kind="api")
    t0 = time.monotonic()
    while reader.get(key) is not None:
        assert time.monotonic() - t0 < 0.3 + 0.5, "served past the bound"
        time.sleep(0.01)
    assert reader.get_cached_api_response("/r", {"q": 1}) is None
    assert writer.redis.client.get(key) is None and _pending(dl_pool, writer.keys.prefix) == []
    assert reader.stats()["invalidations"]["replayed"] == 2
    with connection(dl_pool) as db:
        assert cache_entry_repo.get(db, key) is None  # the table's part too


def test_a_cache_hit_looks_for_pending_invalidations_once_per_l1_lifetime(make_cache: MakeCache) -> None:
    cache = make_cache(l1_size=0, l1_max_ttl=5.0)
    key = cache.keys.user(3)
    cache.set(key, {"v": 3})
    before = cache.stats()["invalidations"]["checks"]
    for _ in range(500):
        assert cache.get(key) == {"v": 3}
    assert cache.stats()["invalidations"]["checks"] - before <= 1


def test_values_the_json_rules_accept_come_back_as_json(make_cache: MakeCache) -> None:
    from datetime import UTC, datetime

    cache = make_cache(l1_size=0)
    key = cache.keys.analysis_result("dt")
    cache.set(key, {"at": datetime(2026, 1, 2, tzinfo=UTC), "none": None, "big": 2**63 - 1, "f": 1e300})
    expected = {"at": "2026-01-02T00:00:00+00:00", "none": None, "big": 2**63 - 1, "f": 1e300}
    assert cache.get(key) == expected
    cache.redis.client.delete(key)
    assert cache.get(key) == expected  # the table gives back the same


@pytest.mark.parametrize("bad", [0, -1, 0.01, 10**6, True, "5"])
def test_l1_lifetime_is_the_staleness_bound_and_must_be_sane(make_cache: MakeCache, bad: Any) -> None:
    with pytest.raises(ValidationError) as e:
        make_cache(l1_max_ttl=bad)
    assert "l1_max_ttl" in e.value.errors


def test_a_database_without_the_record_table_never_fails_the_write(make_cache: MakeCache,
                                                                    dl_pool: DataLayerPool) -> None:
    cache = make_cache()
    u = _user(dl_pool, "norecord")
    with connection(dl_pool) as db:
        db.execute("DROP TABLE cache_invalidations")  # a schema from before migration 0006
        cache.cache_user_data(u.id, {"v": "old"})
        with transaction(db):
            user_repo.update(db, u.id, email="after@example.com")
            cache.invalidate_user_cache(u.id, db=db)  # not recorded: the write must still commit
        assert user_repo.get_by_id(db, u.id).email == "after@example.com"  # type: ignore[union-attr]
    assert cache.get_cached_user_data(u.id) is None  # Redis took it after COMMIT


@pytest.mark.parametrize("in_transaction", [True, False])
def test_the_table_is_tombstoned_before_redis_is_cleared(cache: CacheManager, dl_pool: DataLayerPool,
                                                         in_transaction: bool) -> None:
    # A reader that finds Redis cleared refills it from cache_entries: at that moment the table must
    # already hold the tombstone, or the old value goes back into Redis for its whole TTL.
    key = cache.keys.user(77)
    cache.set(key, {"v": "old"}, ttl=600)
    seen: list[Any] = []
    clear = cache.redis.invalidate

    def observing(*args: Any, **kwargs: Any) -> bool:
        with connection(dl_pool) as db:
            seen.append(cache_entry_repo.get(db, key))
        return clear(*args, **kwargs)

    cache.redis.invalidate = observing  # type: ignore[method-assign]
    try:
        if in_transaction:
            with connection(dl_pool) as db, transaction(db):
                cache.delete(key, db=db)
        else:
            cache.delete(key)
    finally:
        del cache.redis.invalidate
    assert len(seen) == 1 and seen[0] is None, seen  # a tombstone reads as a miss, never {"v": "old"}
    assert cache.get(key) is None


def _refused_redis() -> RedisTarget:
    import socket

    with socket.socket() as s:  # a port nothing listens on: Redis refuses at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return RedisTarget(url=f"redis://127.0.0.1:{port}/0")


def test_a_strict_invalidation_redis_refused_raises_and_is_left_for_replay(make_cache: MakeCache,
                                                                          dl_pool: DataLayerPool) -> None:
    cache = make_cache(redis_target=_refused_redis(), strict=True)
    key = cache.keys.user(81)
    with pytest.raises(CacheUnavailable):
        cache.delete(key)
    with connection(dl_pool) as db:
        pending = [p.key for p in cache_entry_repo.pending_invalidations(db, cache.keys.prefix + ":")]
    assert pending == [key]  # the replay sends it to Redis once Redis answers


def test_a_flush_redis_refused_changes_nothing(make_cache: MakeCache, dl_pool: DataLayerPool) -> None:
    cache = make_cache(redis_target=_refused_redis())
    key = cache.keys.user(82)
    with connection(dl_pool) as db:
        cache_entry_repo.set(db, key, {"v": 1}, ttl=600)
    with pytest.raises(CacheUnavailable, match="nothing was flushed"):
        cache.flush()
    with connection(dl_pool) as db:  # the table still agrees with what Redis may serve
        assert cache_entry_repo.get(db, key) is not None


def test_a_record_whose_fields_do_not_match_their_types_is_a_validation_error(cache: CacheManager) -> None:
    odd = User(id=1, username="u", email="u@example.com", hashed_password="h", is_active=True,
               created_at="2024-01-01", updated_at="2024-01-01")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="value"):
        cache.set(cache.keys.user(1), odd, ttl=60)
    assert cache.get(cache.keys.user(1), User) is None


def test_probed_stats_show_the_breaker_the_probe_opened(make_cache: MakeCache) -> None:
    stats = make_cache(redis_target=_refused_redis()).stats(probe=True)
    assert stats["redis"]["ping"] is False and stats["breaker"]["state"] == "open"


def test_a_typed_read_through_refuses_a_value_of_another_type(cache: CacheManager, db: Any) -> None:
    from datalayer import DataAnalysis, data_analysis_repo

    key = cache.keys.user(7)
    with pytest.raises(ValidationError) as e:
        cache.get_or_load(key, lambda: "not a user", User, ttl=60)
    assert "returned a str, not a User" in e.value.errors["loader"]
    owner = user_repo.create(db, username="typed", email="typed@example.com", hashed_password="h")
    analysis = data_analysis_repo.create(db, user_id=owner.id, name="n", analysis_type="t")
    with pytest.raises(ValidationError):
        cache.get_or_load(key, lambda: analysis, User, ttl=60)
    assert isinstance(analysis, DataAnalysis)
    assert cache.get(key, User) is None  # nothing of the wrong type was cached
    assert cache.get_or_load(key, lambda: owner, User, ttl=60) == owner
