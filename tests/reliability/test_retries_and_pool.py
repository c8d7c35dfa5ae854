"""run_in_transaction retries serialization failures and deadlocks; the pool under exhaustion."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import pytest
from helpers import wait_idle

from datalayer import (
    PoolExhausted,
    TransientError,
    ValidationError,
    connection,
    get_db,
    run_in_transaction,
    transaction,
    user_repo,
)
from datalayer.defaults import set_default_pool
from datalayer.pool import DataLayerPool
from datalayer.testing import TestServer, fresh_database


def _seed(pool: DataLayerPool) -> tuple[int, int]:
    with connection(pool) as db:
        a = user_repo.create(db, username="acct_a", email="a@example.com", hashed_password="h")
        b = user_repo.create(db, username="acct_b", email="b@example.com", hashed_password="h")
    return a.id, b.id


def test_serialization_failure_is_retried(dl_pool: DataLayerPool) -> None:
    _seed(dl_pool)
    barrier = threading.Barrier(2)
    attempts: list[str] = []
    errors: list[BaseException] = []

    def unit(name: str) -> Any:
        def work(db: Any) -> int:
            attempts.append(name)
            n = user_repo.count(db, is_active=True)  # both read the same predicate ...
            if attempts.count(name) == 1:
                barrier.wait(5)  # ... before either writes: a read/write dependency cycle
            user_repo.create(db, username=f"{name}_{n}_{len(attempts)}", email=f"{name}{len(attempts)}@example.com",
                             hashed_password="h")
            return n

        return work

    def run(name: str) -> None:
        try:
            with connection(dl_pool) as db:
                run_in_transaction(db, unit(name), retries=3, isolation="serializable")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert len(attempts) == 3, attempts  # one of the two ran twice
    with connection(dl_pool) as db:
        assert user_repo.count(db) == 4


def test_deadlock_is_retried(dl_pool: DataLayerPool) -> None:
    a, b = _seed(dl_pool)
    barrier = threading.Barrier(2)
    attempts: list[str] = []
    errors: list[BaseException] = []

    def unit(first: int, second: int, name: str) -> Any:
        def work(db: Any) -> None:
            attempts.append(name)
            db.execute("SET LOCAL deadlock_timeout = '50ms'")
            user_repo.update(db, first, is_active=False)
            if attempts.count(name) == 1:
                barrier.wait(5)  # each holds one row and wants the other's
            user_repo.update(db, second, is_active=False)

        return work

    def run(first: int, second: int, name: str) -> None:
        try:
            with connection(dl_pool) as db:
                run_in_transaction(db, unit(first, second, name), retries=3)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(a, b, "ab")), threading.Thread(target=run, args=(b, a, "ba"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert len(attempts) == 3, attempts


def test_retries_are_bounded_and_other_errors_pass_through(dl_pool: DataLayerPool) -> None:
    calls = []

    def always_conflicts(db: Any) -> None:
        calls.append(1)
        raise TransientError("simulated", sqlstate="40001")

    with connection(dl_pool) as db:
        with pytest.raises(TransientError):
            run_in_transaction(db, always_conflicts, retries=2, backoff=0.001)
        assert len(calls) == 3
        with pytest.raises(ZeroDivisionError):
            run_in_transaction(db, lambda _db: 1 / 0)
        with pytest.raises(ValidationError, match="isolation"):
            run_in_transaction(db, lambda _db: None, isolation="chaos")
        with pytest.raises(ValidationError, match="retries"):
            run_in_transaction(db, lambda _db: None, retries=-1)
        with transaction(db), pytest.raises(ValidationError, match="inside a transaction"):
            run_in_transaction(db, lambda _db: None)


def test_pool_exhaustion_then_idle(datalayer_server: TestServer) -> None:
    with fresh_database(datalayer_server, pool_size=2, max_overflow=0, pool_min_size=2, pool_timeout=0.5) as pool:
        holders = [pool.getconn(), pool.getconn()]
        t0 = time.monotonic()
        with pytest.raises(PoolExhausted) as e, connection(pool):
            pass
        waited = time.monotonic() - t0
        assert 0.4 < waited < 2.0
        msg = str(e.value)
        assert "max_size 2" in msg and "0.5 s" in msg and "POOL_TIMEOUT" in msg
        assert isinstance(e.value, TransientError)
        for h in holders:
            pool.putconn(h)
        # `holders` still names both pooled connections: the leases below come back all the same
        wait_idle(pool)
        # the seed idiom: generators dropped at once, connections held until the references go
        previous = set_default_pool(pool)
        try:
            dbs = [next(get_db()), next(get_db())]
            with pytest.raises(PoolExhausted):
                next(get_db())
            for d in dbs:
                d.execute("SELECT 1")
            del dbs, d
            gc.collect()
            wait_idle(pool)
            with connection(pool) as db:
                assert db.execute("SELECT 1").fetchone() == (1,)
        finally:
            set_default_pool(previous)


def test_many_callers_more_than_max_size(datalayer_server: TestServer) -> None:
    with fresh_database(datalayer_server, pool_size=2, max_overflow=1, pool_min_size=1, pool_timeout=5.0) as pool:
        results: list[str] = []
        lock = threading.Lock()

        def caller() -> None:
            with connection(pool) as db:
                db.execute("SELECT pg_sleep(0.05)")
            with lock:
                results.append("ok")

        threads = [threading.Thread(target=caller) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == ["ok"] * 20  # they queued for the 3 connections instead of failing
        assert pool.get_stats()["pool_size"] <= 3
        wait_idle(pool)
