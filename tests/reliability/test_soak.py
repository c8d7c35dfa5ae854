"""Soak: a bounded mixed workload (8 threads) with faults in the middle; everything reconciles after."""

from __future__ import annotations

import gc
import logging
import os
import random
import threading
import time
from collections import Counter
from typing import Any

import psutil
import pytest
from conftest import PgCluster

from datalayer import (
    CommitUnknown,
    SystemLogHandler,
    TransientError,
    User,
    connection,
    data_analysis_repo,
    transaction,
    user_repo,
)
from datalayer.cache import CacheManager
from datalayer.config import RedisTarget, Settings
from datalayer.pool import open_pool
from datalayer.testing import RedisProcess, settings_for_tests

pytestmark = pytest.mark.slow

SOAK_SECONDS = float(os.environ.get("DATALAYER_SOAK_SECONDS", "60"))


def test_soak(cluster: PgCluster, redis_process: RedisProcess) -> None:
    proc = psutil.Process()
    pool = open_pool(settings_for_tests(pool_size=4, max_overflow=4, pool_min_size=4, pool_timeout=2.0),
                     target=cluster.target, wait=True)
    cache = CacheManager(settings=Settings(cache_prefix=f"soak{os.getpid()}"), redis_target=RedisTarget(
        url=redis_process.url), pool=pool, breaker_cooldown=0.3, l1_max_ttl=1.0)
    handler = SystemLogHandler(service="soak", pool=pool, capacity=5000, flush_interval=0.1)
    log = logging.getLogger("soak")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    with connection(pool) as db:
        seed = [user_repo.create(db, username=f"seed{i}", email=f"seed{i}@example.com", hashed_password="h").id
                for i in range(20)]
    rss_before = proc.memory_info().rss
    stop = threading.Event()
    lock = threading.Lock()
    outcomes: dict[str, str] = {}
    completed: set[int] = set()
    counts: Counter[str] = Counter()
    unexpected: list[BaseException] = []

    def guarded(fn: Any) -> Any:
        def run(*args: Any) -> None:
            while not stop.is_set():
                try:
                    fn(*args)
                except (TransientError, CommitUnknown):
                    with lock:
                        counts["transient"] += 1
                    time.sleep(0.01)
                except BaseException as e:  # anything else is a bug
                    unexpected.append(e)
                    return

        return run

    def writer(n: int) -> None:
        cid = f"w{n}_{counts['w' + str(n)]}"
        with lock:
            counts["w" + str(n)] += 1
        try:
            with connection(pool) as db, transaction(db):
                u = user_repo.create(db, username=cid, email=f"{cid}@example.com", hashed_password="h")
                cache.invalidate_user_cache(u.id, db=db)
            outcome = "ok"
        except CommitUnknown:
            outcome = "unknown"
        except TransientError:
            outcome = "failed"
        with lock:
            outcomes[cid] = outcome

    def reader() -> None:
        with connection(pool) as db:
            user_repo.get_many(db, random.sample(seed, 5))
            user_repo.find(db, limit=10)
        with lock:
            counts["reads"] += 1

    def cached() -> None:
        uid = random.choice(seed)

        def load() -> User | None:
            with connection(pool) as db:
                return user_repo.get_by_id(db, uid)

        got = cache.get_or_load(cache.keys.user(uid), load, User, ttl=5)
        assert got is not None and got.id == uid
        with lock:
            counts["cache"] += 1

    def logger() -> None:
        log.info("tick %d", counts["logged"], extra={"n": counts["logged"]})
        with lock:
            counts["logged"] += 1
        time.sleep(0.002)

    def analyst() -> None:
        with connection(pool) as db:
            a = data_analysis_repo.create(db, user_id=random.choice(seed), name="soak", analysis_type="t")
            data_analysis_repo.start(db, a.id)
            data_analysis_repo.complete(db, a.id, result={"ok": True})
        with lock:
            completed.add(a.id)

    threads = [threading.Thread(target=guarded(writer), args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=guarded(f)) for f in (reader, reader, cached, cached, logger, analyst)]
    assert len(threads) == 8
    for t in threads:
        t.start()
    t0 = time.monotonic()
    time.sleep(SOAK_SECONDS * 0.4)
    cluster.stop("fast")  # fault 1: PostgreSQL down for 3 s
    time.sleep(3)
    cluster.start()
    time.sleep(SOAK_SECONDS * 0.2)
    redis_process.pause()  # fault 2: Redis hung for 2 s
    time.sleep(2)
    redis_process.resume()
    time.sleep(max(SOAK_SECONDS - (time.monotonic() - t0), 1))
    stop.set()
    for t in threads:
        t.join(30)
    assert not unexpected, unexpected[:3]
    assert handler.drain(30)
    log.removeHandler(handler)
    handler.close()

    with cluster.connect() as c:
        present = {r[0] for r in c.execute("SELECT username FROM users WHERE username LIKE 'w%'")}
        logged_rows = c.execute("SELECT count(*) FROM system_log WHERE service = 'soak'").fetchone()[0]
        done = {r[0] for r in c.execute("SELECT id FROM data_analyses WHERE status = 'completed'")}
    ok = {k for k, v in outcomes.items() if v == "ok"}
    failed = {k for k, v in outcomes.items() if v == "failed"}
    assert ok <= present and not failed & present and present <= set(outcomes)
    assert completed <= done
    assert logged_rows == handler.written and handler.written + handler.dropped == counts["logged"]
    assert counts["reads"] > 100 and counts["cache"] > 100 and len(ok) > 100 and counts["transient"] > 0
    # no leaks: the pool is idle and within bounds, memory did not run away
    deadline = time.monotonic() + 10
    while pool.get_stats()["pool_available"] != pool.get_stats()["pool_size"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = pool.get_stats()
    assert stats["pool_available"] == stats["pool_size"] <= pool.max_size, stats
    cache.close()
    pool.close()
    gc.collect()
    growth = (proc.memory_info().rss - rss_before) / 2**20
    assert growth < 64, f"RSS grew by {growth:.0f} MB"
    print(f"\nsoak {SOAK_SECONDS:.0f}s: {len(ok)} writes ok, {len(failed)} failed before COMMIT, "
          f"{len(outcomes) - len(ok) - len(failed)} unknown, {counts['reads']} reads, {counts['cache']} cache reads, "
          f"{handler.written} log records ({handler.dropped} dropped), {len(completed)} analyses, "
          f"{counts['transient']} transient errors, RSS +{growth:.1f} MB, pool {stats}")
