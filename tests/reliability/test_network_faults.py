"""A misbehaving network between datalayer and PostgreSQL, through a TCP proxy of the tests' own.

The proxy (tests/tcpproxy.py) sits between the pool and the test server: it can drop, pause (a
partition), blackhole (bytes silently discarded) or half-open its connections. The server itself is
never stopped or frozen: only the proxy misbehaves, and the proxy is ours.
"""

from __future__ import annotations

import gc
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from helpers import wait_idle
from tcpproxy import TcpProxy

from datalayer import (
    CommitUnknown,
    DataLayerError,
    PoolExhausted,
    TransientError,
    connection,
    get_db,
    transaction,
    user_repo,
)
from datalayer._connection import wait_limit
from datalayer.config import DatabaseTarget
from datalayer.defaults import set_default_pool
from datalayer.pool import DataLayerPool, open_pool
from datalayer.testing import TestServer, settings_for_tests

_counter = itertools.count(1)
# STATEMENT_TIMEOUT=1s, CONNECT_TIMEOUT=1: one round trip gives up after 1 + 1 s and a cancel attempt
# of at most 1 s more (the README's formula: STATEMENT_TIMEOUT + 2 x CONNECT_TIMEOUT).
FAULTY = {"statement_timeout": "1s", "connect_timeout": 1, "pool_timeout": 2.0, "lock_timeout": "1s"}
ROUND_TRIP = 1.0 + 2 * 1
MARGIN = 1.5  # two cores shared by many test processes


@contextmanager
def proxied(server: TestServer, **settings: Any) -> Iterator[tuple[DataLayerPool, TcpProxy, DatabaseTarget]]:
    """A fresh migrated database, a proxy in front of it, and a pool that reaches it through the proxy."""
    name = f"dl_nf{os.getpid()}_{next(_counter)}"
    janitor = server.janitor(name, template=server.template)
    janitor.drop()
    with janitor:
        direct = server.target_for(name)
        host, port = direct.params.get("host", "127.0.0.1"), int(direct.params.get("port", "5432"))
        proxy = TcpProxy(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port))
        via = DatabaseTarget(
            params={**direct.params, "host": "127.0.0.1", "port": str(proxy.port)}, password=direct.password
        )
        pool = open_pool(settings_for_tests(**settings), target=via, wait=True)
        try:
            yield pool, proxy, direct
        finally:
            proxy.set_mode("pass")
            pool.close(timeout=5)
            proxy.close()


def _terminate(direct: DatabaseTarget) -> int:
    """pg_terminate_backend every other connection to the test database (as a pooler restart would)."""
    with psycopg.connect(direct.conninfo(), autocommit=True) as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def _usernames(direct: DatabaseTarget) -> set[str]:
    with psycopg.connect(direct.conninfo(), autocommit=True) as c:
        return {r[0] for r in c.execute("SELECT username FROM users")}


def _create(db: Any, name: str) -> None:
    user_repo.create(db, username=name, email=f"{name}@example.com", hashed_password="h")


def test_idle_connections_closed_by_the_server_are_replaced_over_tcp(datalayer_server: TestServer) -> None:
    with proxied(datalayer_server, pool_size=4, pool_min_size=4, max_overflow=0) as (pool, _proxy, direct):
        wait_idle(pool)
        assert _terminate(direct) >= 4
        time.sleep(0.3)  # the servers' FATAL and FIN reach the idle connections
        outcomes = []
        for i in range(20):
            try:
                with connection(pool) as db:
                    _create(db, f"idle{i}")
                outcomes.append("ok")
            except CommitUnknown:
                outcomes.append("unknown")
            except TransientError:
                outcomes.append("failed")
        assert outcomes == ["ok"] * 20
        assert _usernames(direct) == {f"idle{i}" for i in range(20)}
        # the proxy drops every connection (a pooler restart): the same
        wait_idle(pool)
        _proxy.drop_all()
        time.sleep(0.3)
        for i in range(20, 30):
            with connection(pool) as db:
                _create(db, f"idle{i}")
        # reads likewise: every idle connection dead again, every read answered
        wait_idle(pool)
        _terminate(direct)
        time.sleep(0.3)
        for _ in range(8):
            with connection(pool) as db:
                assert user_repo.count(db) == 30


def test_held_connection_closed_by_the_server(datalayer_server: TestServer) -> None:
    with proxied(datalayer_server, pool_size=2, pool_min_size=2, max_overflow=1) as (pool, _proxy, direct):
        # a read on a held connection the server closed is run again on a fresh one
        with connection(pool) as db:
            _create(db, "before")
            _terminate(direct)
            time.sleep(0.3)
            assert user_repo.count(db) == 1
        # a write on one is not sent: TransientError (nothing written), never CommitUnknown
        with connection(pool) as db:
            db.execute("SELECT 1")
            _terminate(direct)
            time.sleep(0.3)
            with pytest.raises(TransientError, match="before .*users.sql.* was sent"):
                _create(db, "never_sent")
        # and a transaction whose connection died before COMMIT: TransientError, not CommitUnknown
        with connection(pool) as db:
            with pytest.raises(TransientError) as e, transaction(db):
                _create(db, "in_tx")
                _terminate(direct)
                time.sleep(0.3)
            assert not isinstance(e.value, CommitUnknown)
        assert _usernames(direct) == {"before"}


def _timed(fn: Callable[[], object]) -> tuple[float, BaseException | None]:
    t0 = time.monotonic()
    try:
        fn()
    except BaseException as e:
        return time.monotonic() - t0, e
    return time.monotonic() - t0, None


def _calls_in_flight(pool: DataLayerPool, start_fault: Callable[[], None]) -> dict[str, tuple[float, Any]]:
    """A COMMIT in flight when the fault starts, then a read, an autocommit write and a transaction."""
    faulty = threading.Event()

    def commit() -> None:
        with connection(pool) as db, transaction(db):
            _create(db, "commit_in_flight")
            faulty.wait(10)  # the COMMIT goes out into the bad network

    def read() -> None:
        with connection(pool) as db:
            user_repo.count(db)

    def write() -> None:
        with connection(pool) as db:
            _create(db, "write_in_flight")

    def unit() -> None:
        with connection(pool) as db, transaction(db):
            _create(db, "tx_in_flight")

    results: dict[str, tuple[float, Any]] = {}

    def run(kind: str, fn: Callable[[], object]) -> None:
        results[kind] = _timed(fn)

    first = threading.Thread(target=run, args=("commit", commit))
    first.start()
    time.sleep(0.2)  # the transaction's body is done, its connection waits for the COMMIT
    start_fault()
    faulty.set()
    threads = [threading.Thread(target=run, args=(k, f)) for k, f in {"read": read, "write": write, "tx": unit}.items()]
    for t in threads:
        t.start()
    for t in [first, *threads]:
        t.join(60)
    return results


def _assert_on_time(results: dict[str, tuple[float, Any]]) -> None:
    expected = {"commit": CommitUnknown, "read": TransientError, "write": CommitUnknown, "tx": TransientError}
    assert set(results) == set(expected)
    for kind, (took, err) in results.items():
        assert took < ROUND_TRIP + MARGIN, f"{kind} took {took:.2f} s ({err!r})"
        # sent and unanswered: CommitUnknown for a COMMIT or an autocommit write, else TransientError
        assert type(err) is expected[kind] or (expected[kind] is TransientError and isinstance(err, TransientError)), (
            kind,
            err,
        )
        assert not isinstance(err, PoolExhausted), (kind, err)


def _serves_again(pool: DataLayerPool, healed: float, bound: float) -> float:
    while True:
        try:
            with connection(pool, timeout=0.5) as db:
                assert user_repo.count(db) >= 0
            return time.monotonic() - healed
        except TransientError:
            assert time.monotonic() - healed < bound, "the pool did not serve again after the network healed"
            time.sleep(0.05)


def test_deadline_is_derived_from_the_settings(datalayer_server: TestServer) -> None:
    settings = {"pool_size": 1, "pool_min_size": 1, "max_overflow": 0, **FAULTY}
    with proxied(datalayer_server, **settings) as (pool, _, _), connection(pool) as db:
        params = db.info.get_parameters()
        assert db._dl_wait_limit == 2.0
    assert {k: params.get(k) for k in ("keepalives", "keepalives_idle", "keepalives_count", "tcp_user_timeout")} == {
        "keepalives": "1",
        "keepalives_idle": "1",
        "keepalives_count": "1",
        "tcp_user_timeout": "1000",
    }
    assert wait_limit(settings_for_tests(**FAULTY)) == 2.0
    assert wait_limit(settings_for_tests(statement_timeout="1500ms", connect_timeout=3)) == 4.5
    assert wait_limit(settings_for_tests(statement_timeout="0ms")) is None


@pytest.mark.parametrize("fault", ["pause", "blackhole"])
def test_calls_in_flight_end_on_time_and_the_pool_recovers(datalayer_server: TestServer, fault: str) -> None:
    with proxied(datalayer_server, pool_size=4, pool_min_size=4, max_overflow=0, **FAULTY) as (pool, proxy, _):
        wait_idle(pool)
        results = _calls_in_flight(pool, lambda: proxy.set_mode(fault))  # type: ignore[arg-type]
        _assert_on_time(results)
        # the connections were discarded, not kept by hung callers: the pool is not exhausted
        time.sleep(0.5)
        proxy.set_mode("pass")
        took = _serves_again(pool, time.monotonic(), bound=ROUND_TRIP + 2 + MARGIN)
        assert took < ROUND_TRIP + 2 + MARGIN
        # every slot serves again (none is held by a call that never returned)
        for _ in range(3 * pool.max_size):
            with connection(pool, timeout=ROUND_TRIP + MARGIN) as db:
                assert db.execute("SELECT 1").fetchone() == (1,)


def test_half_open_connections(datalayer_server: TestServer) -> None:
    with proxied(datalayer_server, pool_size=1, pool_min_size=1, max_overflow=0, **FAULTY) as (pool, proxy, direct):
        with connection(pool) as db:
            _create(db, "first")
            proxy.half_open()  # the server's side is gone; this connection cannot tell
            took, err = _timed(lambda: user_repo.count(db))
        assert isinstance(err, TransientError) and took < ROUND_TRIP + MARGIN, (took, err)
        # the dead connection was discarded: the next call gets a fresh one
        took = _serves_again(pool, time.monotonic(), bound=2 + MARGIN)
        assert _usernames(direct) == {"first"}


def test_get_db_lease_comes_back_though_the_connection_is_named_elsewhere(datalayer_server: TestServer) -> None:
    with proxied(datalayer_server, pool_size=1, pool_min_size=1, max_overflow=0, pool_timeout=0.5) as (pool, _, _):
        previous = set_default_pool(pool)
        try:
            with connection() as earlier:  # `earlier` outlives the block: it names the pooled connection
                earlier.execute("SELECT 1")
            for i in range(3):
                db = next(get_db())
                assert isinstance(db, psycopg.Connection)  # a lease stands in for the connection
                _create(db, f"seed{i}")
                del db  # the lease is dropped: its slot comes back though `earlier` is still alive
                wait_idle(pool, timeout=2)
            with connection() as again:
                assert user_repo.count(again) == 3
            assert earlier.closed  # the lease's end closed the connection `earlier` still names
            # FastAPI's way: the generator ends, the lease is over and refuses further use
            gen = get_db()
            lease = next(gen)
            with pytest.raises(StopIteration):
                next(gen)
            wait_idle(pool, timeout=2)
            with pytest.raises(DataLayerError, match="went back to the pool"):
                lease.execute("SELECT 1")
            del lease
            gc.collect()
            wait_idle(pool, timeout=2)
            # as psycopg's `with conn:` closes it, a lease's `with` block ends the loan
            with next(get_db()) as db:
                _create(db, "in_with")
            wait_idle(pool, timeout=2)
            with connection() as again:
                assert user_repo.count(again) == 4
            with pytest.raises(DataLayerError, match="went back to the pool"):
                db.execute("SELECT 1")  # the block's variable outlives the loan, not its use
        finally:
            set_default_pool(previous)
