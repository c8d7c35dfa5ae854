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

from datalayer import CacheUnavailable, User, cache_entry_repo, transaction, user_repo
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


# ------------------------------------------------------- invalidations across processes (two real ones)

L1_LIFE = 1.0  # the reader's l1_max_ttl: the staleness bound under test
MARGIN = 0.5  # scheduling slack on a loaded machine

_READER = """
import json, sys, time
from datalayer import User, user_repo
from datalayer.cache import CacheManager
from datalayer.config import Settings
from datalayer import connection

cache = CacheManager(settings=Settings.from_env(), l1_max_ttl=float(sys.argv[2]))
uid = int(sys.argv[1])
key = cache.keys.user(uid)

def load():
    with connection() as db:
        return user_repo.get_by_id(db, uid)

print("ready", flush=True)
for line in sys.stdin:
    user = cache.get_or_load(key, load, User, ttl=600)
    print(json.dumps({"t": time.monotonic(), "email": user.email, "loads": cache.stats()["loads"]}), flush=True)
"""

_WRITER = """
import os, sys
from datalayer import transaction, on_commit, user_repo
from datalayer.cache import CacheManager
from datalayer.config import Settings

cache = CacheManager(settings=Settings.from_env())
uid = int(sys.argv[1])
with transaction() as db:
    user_repo.update(db, uid, email=sys.argv[2])
    if sys.argv[3] == "writer-dies-after-commit":
        on_commit(lambda: os._exit(0))  # runs before the invalidation's own hook: the process is gone
    cache.invalidate_user_cache(uid, db=db)
s = cache.stats()
print(s["breaker"]["opened"], s["redis"]["errors"], flush=True)
os._exit(0)  # gone at once: no recovery, no generation bump, nothing left to run
"""


class _Reader:
    def __init__(self, env: dict[str, str], user_id: int) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-c", _READER, str(user_id), str(L1_LIFE)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def read(self) -> dict[str, Any]:
        import json

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("read\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the reader died"
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)  # closes the pipes


def _env(pool: DataLayerPool, redis_process: RedisProcess) -> dict[str, str]:
    from helpers import clean_env, pool_env

    return clean_env(**pool_env(pool), REDIS_URL=redis_process.url,
                     CACHE_PREFIX=f"x{os.getpid()}x{next(_n)}", DATALAYER_EMBEDDED="never")


def _read_until(reader: _Reader, seconds: float) -> list[dict[str, Any]]:
    reads = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        reads.append(reader.read())
        time.sleep(0.05)
    return reads


@pytest.mark.parametrize("fault", ["redis-frozen", "writer-dies-after-commit"])
def test_an_invalidation_no_redis_took_reaches_every_process(dl_pool: DataLayerPool, redis_process: RedisProcess,
                                                            fault: str) -> None:
    """Process A caches a user; process B updates it and invalidates while Redis is frozen (SIGSTOP,
    it keeps its data), or dies right after its COMMIT, and is gone; A must not serve the old value
    for longer than its L1 lifetime after Redis answers again."""
    from helpers import run_py

    u = _user(dl_pool, f"inv_{fault.replace('-', '_')}")
    env = _env(dl_pool, redis_process)
    reader = _Reader(env, u.id)
    try:
        first = reader.read()
        assert first["email"] == u.email and reader.read()["loads"] == 1  # cached: the second read is a hit
        new = f"new_{u.id}@example.com"
        if fault == "redis-frozen":
            redis_process.pause()
        try:
            code = _WRITER.replace("sys.argv[1]", repr(str(u.id))).replace("sys.argv[2]", repr(new))
            writer = run_py(code.replace("sys.argv[3]", repr(fault)), env, timeout=60)
            assert writer.returncode == 0, writer.stderr
            if fault == "redis-frozen":
                opened, errors = map(int, writer.stdout.split())
                assert opened >= 1 and errors >= 1  # B's invalidation did not reach Redis
            else:
                assert writer.stdout == ""  # B died before its invalidation ran
        finally:
            if fault == "redis-frozen":
                redis_process.resume()
        answered = time.monotonic()  # Redis answers again (or never stopped)
        reads = _read_until(reader, L1_LIFE + 2 * MARGIN + 1.0)
        stale = [r["t"] - answered for r in reads if r["email"] != new]
        assert not stale or max(stale) <= L1_LIFE + MARGIN, f"old value served {max(stale):.2f} s after"
        assert reads[-1]["email"] == new
        with connection(dl_pool) as db:  # replayed and forgotten
            assert cache_entry_repo.pending_invalidations(db, env["CACHE_PREFIX"] + ":") == []
    finally:
        reader.close()


def test_a_set_redis_did_not_take_is_replayed(dl_pool: DataLayerPool, managers: Any,
                                               redis_process: RedisProcess) -> None:
    """``set`` is a write of newer truth: when Redis misses it, the older value there must not be served
    either, even after the process that set it is gone."""
    reader = managers(l1_size=0, l1_max_ttl=0.5)
    writer = managers(l1_size=0)
    key = reader.keys.analysis_result("s")
    writer.set(key, {"v": "old"})
    assert reader.get(key) == {"v": "old"}
    redis_process.pause()
    try:
        writer.set(key, {"v": "new"})  # Redis times out; the table takes it
        assert writer.stats()["breaker"]["opened"] >= 1
        assert writer.stats()["invalidations"]["left_for_replay"] == 1
    finally:
        writer.close()  # gone before Redis answers: it bumps no generation
        redis_process.resume()
    answered = time.monotonic()
    while reader.get(key) != {"v": "new"}:
        assert time.monotonic() - answered <= 0.5 + 0.5, "the older value was served past the bound"
        time.sleep(0.02)
