"""Read replicas against a real streaming replica: routing, lag, read-your-writes, failover and recovery.

The replica is a ``pg_basebackup -R`` of this module's own embedded PostgreSQL 18 (``cluster``), taken
and run with the embedded package's binaries as the user that server runs as (initdb and pg_ctl refuse
root), in a directory that user owns, listening on a loopback port checked free first.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import psycopg
import pytest
from conftest import PgCluster

import datalayer.aio
from datalayer import QueryError, ValidationError, connection, set_default_pool, sql, transaction, user_repo
from datalayer._replicas import CHECK_INTERVAL, CHECK_TIMEOUT
from datalayer._testing_replica import StreamingReplica
from datalayer.config import Settings
from datalayer.pool import DataLayerPool, open_pool
from datalayer.pool_async import AsyncDataLayerPool
from datalayer.pool_async import open_pool as open_async_pool
from datalayer.testing import settings_for_tests

pytestmark = pytest.mark.slow

T = TypeVar("T")
# Bounds, with margins for two CPUs shared by several test processes: a health check runs at most once a
# second and a replica that lends no connection is skipped after a second.
ROUTED_WITHIN = 15.0
FAILOVER_READ = 6.0


Replica = StreamingReplica


@pytest.fixture(scope="module")
def replica(cluster: PgCluster) -> Iterator[Replica]:
    r = Replica(cluster.pgdata, cluster.target, "app")
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _replaying(replica: Replica) -> Iterator[None]:
    """Every test starts and ends with the replica up and replaying."""
    yield
    with contextlib.suppress(subprocess.CalledProcessError):
        replica.start()  # pg_ctl refuses a running server: then it already runs
    replica.sql("SELECT pg_wal_replay_resume()")


def _settings(cluster: PgCluster, replica: Replica, **kw: Any) -> Settings:
    return settings_for_tests(database=cluster.target, replicas=(replica.target,), **kw)


@contextlib.contextmanager
def _pool(cluster: PgCluster, replica: Replica, **kw: Any) -> Iterator[DataLayerPool]:
    pool = open_pool(_settings(cluster, replica, **kw), target=cluster.target)
    try:
        yield pool
    finally:
        pool.close()


def _in_recovery(db: psycopg.Connection[Any]) -> bool:
    row = db.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row is not None
    return bool(row[0])


def _fresh(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a context of its own: nothing written in another test or step counts as its write."""
    return contextvars.Context().run(fn)


def _on_replica(pool: DataLayerPool) -> bool:
    def read() -> bool:
        with connection(pool, replica=True) as db:
            return _in_recovery(db)

    return _fresh(read)


def _eventually(test: Callable[[], bool], within: float = ROUTED_WITHIN) -> float:
    """Seconds until ``test()`` held (asserted within ``within``)."""
    start = time.monotonic()
    while not test():
        assert time.monotonic() - start < within, f"not within {within} s"
        time.sleep(0.05)
    return time.monotonic() - start


def _wal_bytes(cluster: PgCluster, replica: Replica) -> int:
    """How far the replica's replay is behind the primary's flushed WAL, in bytes."""
    with cluster.connect() as c:
        row = c.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        assert row is not None
    return int(replica.sql(f"SELECT ('{row[0]}'::pg_lsn - pg_last_wal_replay_lsn())::int8"))


# ------------------------------------------------------------------------------------------- routing


def test_reads_go_to_the_replica_writes_and_transactions_to_the_primary(
    cluster: PgCluster, replica: Replica, tmp_path: Path
) -> None:
    with _pool(cluster, replica) as pool:
        _eventually(lambda: _on_replica(pool))

        def on_primary() -> None:
            with connection(pool) as db:
                assert not _in_recovery(db)
            with connection(pool) as db, transaction(db):
                assert not _in_recovery(db)

        _fresh(on_primary)

        def on_replica() -> None:
            with connection(pool, replica=True) as db:
                assert _in_recovery(db)
                with pytest.raises(ValidationError) as refused, transaction(db):
                    pass
                assert "replica connection" in refused.value.errors["db"]
                # A write query function is refused before it is sent, naming the query.
                with pytest.raises(QueryError) as write:
                    user_repo.create(db, username="nope", email="nope@example.com", hashed_password="h")
                assert write.value.sqlstate == "25006" and "users" in str(write.value)
                assert "connection() or transaction()" in str(write.value)
                # A "read" that writes after all reaches the replica, which refuses it: the same message.
                (tmp_path / "sneaky.sql").write_text("-- name: next_id :scalar\nSELECT nextval('users_id_seq');\n")
                with pytest.raises(QueryError) as sneaky:
                    sql.load(tmp_path / "sneaky.sql").bind("next_id", int).scalar(db)
                assert sneaky.value.sqlstate == "25006" and "serves reads only" in str(sneaky.value)
                assert user_repo.get_by_username(db, "nope") is None

        _fresh(on_replica)

        previous = set_default_pool(pool)  # the process default's replicas: connection(replica=True) alone
        try:

            def default_replica() -> bool:
                with connection(replica=True) as db:
                    return _in_recovery(db)

            assert _fresh(default_replica)
        finally:
            set_default_pool(previous)


# ----------------------------------------------------------------------------------------------- lag


def test_a_replica_lagging_past_the_bound_is_skipped_until_it_catches_up(cluster: PgCluster, replica: Replica) -> None:
    with _pool(cluster, replica, replica_max_lag=256 * 1024) as pool:
        _eventually(lambda: _on_replica(pool))
        replica.sql("SELECT pg_wal_replay_pause()")
        with cluster.connect() as c:
            c.execute("CREATE TABLE IF NOT EXISTS lag_filler (x text)")
            c.execute("INSERT INTO lag_filler SELECT repeat('x', 1000) FROM generate_series(1, 3000)")
        assert _wal_bytes(cluster, replica) > 256 * 1024  # the replica is really behind
        _eventually(lambda: not _on_replica(pool))
        for _ in range(5):  # and stays skipped while it lags
            assert not _on_replica(pool)
            time.sleep(0.2)
        replica.sql("SELECT pg_wal_replay_resume()")
        _eventually(lambda: _on_replica(pool))
        assert _wal_bytes(cluster, replica) <= 256 * 1024


def test_an_idle_primary_does_not_make_a_current_replica_lag(cluster: PgCluster, replica: Replica) -> None:
    # Replay timestamps grow on an idle primary; WAL positions do not: a tiny bound still holds.
    with _pool(cluster, replica, replica_max_lag=64 * 1024) as pool:
        _eventually(lambda: _on_replica(pool))
        time.sleep(2.5)  # two health checks later
        assert _on_replica(pool)


# ---------------------------------------------------------------------------------- read your writes


def test_after_a_write_reads_wait_for_the_replica_or_go_to_the_primary(cluster: PgCluster, replica: Replica) -> None:
    with _pool(cluster, replica, replica_wait=0.3) as pool:
        _eventually(lambda: _on_replica(pool))
        replica.sql("SELECT pg_wal_replay_pause()")

        def write_then_read() -> tuple[bool, bool]:
            with connection(pool) as db:
                user_repo.create(db, username="ryw1", email="ryw1@example.com", hashed_password="h")
            with connection(pool, replica=True) as db:
                return _in_recovery(db), user_repo.get_by_username(db, "ryw1") is not None

        def read_only() -> tuple[bool, bool]:
            with connection(pool, replica=True) as db:
                return _in_recovery(db), user_repo.get_by_username(db, "ryw1") is not None

        start = time.monotonic()
        assert _fresh(write_then_read) == (False, True)  # waited for the paused replica, then the primary
        assert time.monotonic() - start < 0.3 + FAILOVER_READ
        # Another context did not write: it reads the (paused, stale) replica, which lacks the row.
        assert _fresh(read_only) == (True, False)

        def transaction_then_read() -> tuple[bool, bool]:
            with connection(pool) as db, transaction(db):
                user_repo.create(db, username="ryw2", email="ryw2@example.com", hashed_password="h")
            with connection(pool, replica=True) as db:
                return _in_recovery(db), user_repo.get_by_username(db, "ryw2") is not None

        assert _fresh(transaction_then_read) == (False, True)

    with _pool(cluster, replica, replica_wait=30.0) as pool:
        _eventually(lambda: _on_replica(pool))  # paused, but within REPLICA_MAX_LAG (16 MB)

        def wait_for_replay() -> tuple[bool, bool]:
            with connection(pool) as db, transaction(db):
                user_repo.create(db, username="ryw3", email="ryw3@example.com", hashed_password="h")
            threading.Timer(0.5, replica.sql, ["SELECT pg_wal_replay_resume()"]).start()
            with connection(pool, replica=True) as db:
                return _in_recovery(db), user_repo.get_by_username(db, "ryw3") is not None

        assert _fresh(wait_for_replay) == (True, True)  # the replica replayed the write within REPLICA_WAIT

    with _pool(cluster, replica, replica_wait=0) as pool:
        _eventually(lambda: _on_replica(pool))

        def no_wait() -> bool:
            with connection(pool) as db:
                user_repo.create(db, username="ryw4", email="ryw4@example.com", hashed_password="h")
            with connection(pool, replica=True) as db:
                return _in_recovery(db)

        assert _fresh(no_wait) is False  # REPLICA_WAIT=0: straight to the primary


# -------------------------------------------------------------------------------- failover, recovery


def test_a_stopped_replica_fails_over_to_the_primary_and_comes_back(cluster: PgCluster, replica: Replica) -> None:
    with _pool(cluster, replica) as pool:

        def write() -> None:
            with connection(pool) as db:
                user_repo.create(db, username="failover", email="failover@example.com", hashed_password="h")

        _fresh(write)
        _eventually(lambda: _on_replica(pool))
        held = connection(pool, replica=True)

        def hold() -> psycopg.Connection[Any]:
            return held.__enter__()

        db = _fresh(hold)
        assert _in_recovery(db)
        replica.stop()
        # A read in flight on the stopped replica runs again on the primary: no error to the caller.
        assert user_repo.get_by_username(db, "failover") is not None
        held.__exit__(None, None, None)

        slowest = 0.0
        stopped = time.monotonic()
        while time.monotonic() - stopped < 4.0:
            start = time.monotonic()

            def read() -> bool:
                with connection(pool, replica=True) as db:
                    assert user_repo.get_by_username(db, "failover") is not None
                    return _in_recovery(db)

            assert _fresh(read) is False  # the replica is down: every read is served by the primary
            slowest = max(slowest, time.monotonic() - start)
        assert slowest < FAILOVER_READ, slowest

        replica.start()
        _eventually(lambda: _on_replica(pool))  # recovery: reads return to it


# ------------------------------------------------------------------------------------------- asyncio


@pytest.mark.anyio
async def test_async_routing_and_read_your_writes(cluster: PgCluster, replica: Replica) -> None:
    pool: AsyncDataLayerPool = await open_async_pool(
        _settings(cluster, replica, replica_wait=0.3), target=cluster.target
    )
    try:

        async def on_replica() -> bool:
            async with datalayer.aio.connection(pool, replica=True) as db:
                row = await (await db.execute("SELECT pg_is_in_recovery()")).fetchone()
                assert row is not None
                return bool(row[0])

        start = time.monotonic()
        while not await _aon_replica(pool):
            assert time.monotonic() - start < ROUTED_WITHIN
            await anyio.sleep(0.05)
        async with datalayer.aio.connection(pool, replica=True) as db:
            with pytest.raises(ValidationError):
                async with datalayer.aio.transaction(db):
                    pass
            with pytest.raises(QueryError):
                await datalayer.aio.user_repo.create(
                    db, username="anope", email="anope@example.com", hashed_password="h"
                )
        replica.sql("SELECT pg_wal_replay_pause()")
        async with datalayer.aio.connection(pool) as db, datalayer.aio.transaction(db):
            await datalayer.aio.user_repo.create(db, username="aryw", email="aryw@example.com", hashed_password="h")
        async with datalayer.aio.connection(pool, replica=True) as db:
            row = await (await db.execute("SELECT pg_is_in_recovery()")).fetchone()
            assert row is not None and row[0] is False  # this task wrote: the paused replica cannot serve it
            assert await datalayer.aio.user_repo.get_by_username(db, "aryw") is not None
    finally:
        await pool.close()


# ------------------------------------------------------------------------------- a frozen replica

# A read in flight on a replica that stops answering is cut off by the next health check (at most
# CHECK_INTERVAL + CHECK_TIMEOUT later) and runs again on the primary; margins for a shared machine.
FROZEN_READ = CHECK_INTERVAL + CHECK_TIMEOUT + 4.0


def test_a_frozen_replica_is_skipped_and_reads_in_flight_run_again_on_the_primary(
    cluster: PgCluster, replica: Replica, tmp_path: Path
) -> None:
    (tmp_path / "sneaky.sql").write_text("-- name: next_id :scalar\nSELECT nextval('users_id_seq');\n")
    sneaky = sql.load(tmp_path / "sneaky.sql").bind("next_id", int)
    with _pool(cluster, replica) as pool:

        def write() -> None:
            with connection(pool) as db:
                user_repo.create(db, username="frozen", email="frozen@example.com", hashed_password="h")

        _fresh(write)
        _eventually(lambda: _on_replica(pool))
        held, held2 = connection(pool, replica=True), connection(pool, replica=True)
        db, db2 = _fresh(held.__enter__), _fresh(held2.__enter__)
        assert _in_recovery(db) and _in_recovery(db2)
        refused: list[BaseException] = []

        def write_in_a_select() -> None:
            try:
                sneaky.scalar(db2)
            except QueryError as e:
                refused.append(e)

        with replica.frozen():
            start = time.monotonic()
            sneaking = threading.Thread(target=write_in_a_select)
            sneaking.start()
            try:
                # In flight on the frozen replica: cut off by the health check, answered by the primary.
                assert user_repo.get_by_username(db, "frozen") is not None
                in_flight = time.monotonic() - start
                sneaking.join(FROZEN_READ)
            finally:
                held.__exit__(None, None, None)
                held2.__exit__(None, None, None)
            assert in_flight < FROZEN_READ, in_flight
            # Run again on the primary, a write a SELECT wraps is still refused there (read-only session).
            assert len(refused) == 1 and getattr(refused[0], "sqlstate", None) == "25006", refused
            slowest = 0.0
            while time.monotonic() - start < 3.0:
                began = time.monotonic()
                assert _on_replica(pool) is False  # never an error, never the frozen replica
                slowest = max(slowest, time.monotonic() - began)
            assert slowest < FROZEN_READ, slowest
        _eventually(lambda: _on_replica(pool))  # thawed: it serves reads again


async def _ain_recovery(db: Any) -> bool:
    row = await (await db.execute("SELECT pg_is_in_recovery()")).fetchone()
    return bool(row[0])


async def _aon_replica(pool: AsyncDataLayerPool) -> bool:
    async with datalayer.aio.connection(pool, replica=True) as db:
        return await _ain_recovery(db)


async def _until_on_replica(pool: AsyncDataLayerPool) -> None:
    """Wait (within ROUTED_WITHIN) until the pool's replica reads reach the replica."""
    start = time.monotonic()
    while not await _aon_replica(pool):
        assert time.monotonic() - start < ROUTED_WITHIN
        await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_async_a_read_in_flight_on_a_frozen_replica_runs_again_on_the_primary(
    cluster: PgCluster, replica: Replica
) -> None:
    pool = await open_async_pool(_settings(cluster, replica), target=cluster.target)
    try:

        await _until_on_replica(pool)
        async with datalayer.aio.connection(pool, replica=True) as db:
            with replica.frozen():
                start = time.monotonic()
                assert await datalayer.aio.user_repo.get_by_username(db, "nobody-frozen") is None
                assert time.monotonic() - start < FROZEN_READ
                began = time.monotonic()
                assert await _aon_replica(pool) is False  # skipped now: straight to the primary
                assert time.monotonic() - began < FROZEN_READ
    finally:
        await pool.close()


def test_a_promoted_replica_is_skipped_within_seconds_while_another_is_frozen(
    cluster: PgCluster, replica: Replica, tmp_path: Path
) -> None:
    (tmp_path / "where.sql").write_text(
        "-- name: replica_port :scalar\nSELECT CASE WHEN pg_is_in_recovery() THEN inet_server_port() ELSE 0 END;\n"
    )
    replica_port = sql.load(tmp_path / "where.sql").bind("replica_port", int)  # 0: the primary
    second = Replica(cluster.pgdata, cluster.target, "app", name="replica-promoted")
    try:
        settings = settings_for_tests(database=cluster.target, replicas=(replica.target, second.target))
        pool = open_pool(settings, target=cluster.target)
        try:

            def servers() -> set[int]:
                seen = set()
                for _ in range(4):
                    with connection(pool, replica=True) as db:
                        seen.add(replica_port.scalar(db))  # a read in flight on the frozen one: the primary
                return seen

            _eventually(lambda: _fresh(servers) == {replica.port, second.port})
            with replica.frozen():
                second.promote()
                promoted = time.monotonic()
                # Reads go on (to the primary: 0) and the promoted one is skipped within seconds, the
                # frozen one's check notwithstanding.
                took = _eventually(lambda: second.port not in _fresh(servers), within=FROZEN_READ)
                assert time.monotonic() - promoted < FROZEN_READ, took
                assert _fresh(servers) == {0}
        finally:
            pool.close()
    finally:
        second.close()


def test_a_standby_of_another_cluster_is_refused_naming_its_entry(
    cluster: PgCluster, replica: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    base = Path(os.environ.get("DATALAYER_TEST_HOME") or "/tmp/datalayer-tests")
    base.mkdir(parents=True, exist_ok=True)
    other = PgCluster(Path(tempfile.mkdtemp(prefix=f"pg{os.getpid()}-other-", dir=base)))
    try:
        foreign = Replica(other.pgdata, other.target, "app", name="foreign-replica")
        try:
            settings = settings_for_tests(database=cluster.target, replicas=(replica.target, foreign.target))
            with caplog.at_level("WARNING", logger="datalayer"):
                pool = open_pool(settings, target=cluster.target)
                try:

                    def port() -> int:
                        with connection(pool, replica=True) as db:
                            row = db.execute("SELECT inet_server_port()").fetchone()
                            assert row is not None
                            return int(row[0] or 0)  # 0: the primary, on its unix socket

                    _eventually(lambda: _fresh(port) == replica.port)
                    assert {_fresh(port) for _ in range(6)} == {replica.port}  # never the foreign standby
                finally:
                    pool.close()
            refused = [r.getMessage() for r in caplog.records if "another cluster" in r.getMessage()]
            assert refused and "DATABASE_REPLICA_URLS entry 2" in refused[0], refused
        finally:
            foreign.close()
    finally:
        other.close()


# ------------------------------------------------------------------- read your writes: the details


def test_a_read_after_a_write_needs_no_second_primary_connection(cluster: PgCluster, replica: Replica) -> None:
    # The WAL position is read on the writing connection: with POOL_SIZE=1 held, the read still works.
    with _pool(cluster, replica, pool_size=1, max_overflow=0, pool_timeout=1.0, replica_wait=10.0) as pool:
        _eventually(lambda: _on_replica(pool))

        def write_then_read() -> tuple[bool, bool]:
            with connection(pool) as db:
                user_repo.create(db, username="ryw5", email="ryw5@example.com", hashed_password="h")
                with connection(pool, replica=True) as rdb:
                    return _in_recovery(rdb), user_repo.get_by_username(rdb, "ryw5") is not None

        assert _fresh(write_then_read) == (True, True)


def test_a_read_waits_for_the_replica_once_per_write_and_within_its_timeout(
    cluster: PgCluster, replica: Replica
) -> None:
    wait = 2.0
    with _pool(cluster, replica, replica_wait=wait) as pool:
        _eventually(lambda: _on_replica(pool))
        replica.sql("SELECT pg_wal_replay_pause()")

        def write_then_reads() -> tuple[list[bool], float, float]:
            with connection(pool) as db:
                user_repo.create(db, username="ryw6", email="ryw6@example.com", hashed_password="h")
            start = time.monotonic()
            with connection(pool, replica=True, timeout=0.2) as db:  # the timeout bounds the wait too
                seen = [_in_recovery(db)]
            bounded = time.monotonic() - start
            start = time.monotonic()
            for _ in range(5):  # one wait of REPLICA_WAIT at most, then the primary at once
                with connection(pool, replica=True) as db:
                    seen.append(_in_recovery(db))
            return seen, bounded, time.monotonic() - start

        seen, bounded, five = _fresh(write_then_reads)
        assert seen == [False] * 6  # the paused replica never serves the context that wrote
        assert bounded < wait, bounded
        assert five < 2 * wait, five  # not five waits of REPLICA_WAIT


@pytest.mark.anyio
async def test_async_writes_in_child_tasks_and_threads_are_read_back_by_the_parent(
    cluster: PgCluster, replica: Replica
) -> None:
    pool = await open_async_pool(_settings(cluster, replica, replica_wait=0.3), target=cluster.target)
    sync_pool = open_pool(_settings(cluster, replica, replica_wait=0.3), target=cluster.target)
    try:

        await _until_on_replica(pool)
        replica.sql("SELECT pg_wal_replay_pause()")

        async def child(name: str) -> None:
            async with datalayer.aio.connection(pool) as db:
                await datalayer.aio.user_repo.create(
                    db, username=name, email=f"{name}@example.com", hashed_password="h"
                )

        def thread_child(name: str) -> None:
            with connection(sync_pool) as db:
                user_repo.create(db, username=name, email=f"{name}@example.com", hashed_password="h")

        async def request() -> list[bool]:
            async with datalayer.aio.connection(pool):  # the request's scope: its children share its mark
                await asyncio.gather(child("gather1"), child("gather2"))
                await asyncio.to_thread(thread_child, "thread1")
            seen = []
            for name in ("gather1", "gather2", "thread1"):
                async with datalayer.aio.connection(pool, replica=True) as db:
                    seen.append(await datalayer.aio.user_repo.get_by_username(db, name) is not None)
            return seen

        assert await asyncio.create_task(request(), context=contextvars.Context()) == [True, True, True]
    finally:
        await pool.close()
        sync_pool.close()


def _url(target: Any, host: str | None = None) -> str:
    p = target.params
    password = quote(target.password.value, safe="") if target.password else ""
    where = (
        f"@{host}:{p['port']}/{p['dbname']}"
        if host
        else f"@/{p['dbname']}?host={quote(p['host'], safe='')}&port={p.get('port', '5432')}"
    )
    return f"postgresql://{p['user']}:{password}{where}"


def test_async_default_pool_replica_connections_close_with_the_event_loop(
    cluster: PgCluster, replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    # asyncio.run() ends without close_default_pool(): the replicas' pools and the health check's
    # connections close at loop shutdown, as the default pool does.
    monkeypatch.setenv("DATABASE_URL", _url(cluster.target))
    monkeypatch.setenv("DATABASE_REPLICA_URLS", _url(replica.target, host="127.0.0.1") + "?sslmode=disable")
    # Its own application name: only this test's connections are counted, not other tests' closing ones.
    monkeypatch.setenv("DATALAYER_APP_NAME", "dl-loop-close")
    count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dl-loop-close'"

    async def read_from_the_replica() -> None:
        start = time.monotonic()
        while True:
            async with datalayer.aio.connection(replica=True) as db:
                row = await (await db.execute("SELECT pg_is_in_recovery()")).fetchone()
                if row is not None and row[0]:
                    mine = await (await db.execute(count)).fetchone()
                    assert mine is not None and mine[0] >= 1  # the count sees these connections
                    return
            assert time.monotonic() - start < ROUTED_WITHIN
            await asyncio.sleep(0.05)

    asyncio.run(read_from_the_replica())

    def left() -> tuple[int, int]:
        with cluster.connect() as c:
            row = c.execute(count).fetchone()
            assert row is not None
        return int(row[0]), int(replica.sql(count))

    _eventually(lambda: left() == (0, 0), within=10.0)
