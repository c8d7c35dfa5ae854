"""datalayer.aio's connections: the async pool, its deadline, the default pool and get_db."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import psycopg_pool
import pytest
from helpers import url_of
from tcpproxy import TcpProxy

from datalayer import aio
from datalayer.config import DatabaseTarget, Settings
from datalayer.errors import ConfigError, PoolExhausted, TransientError
from datalayer.pool import DataLayerPool
from datalayer.pool_async import AsyncDataLayerPool, _ReconnectAttempt, checkout, connect, give_back, open_pool
from datalayer.testing import settings_for_tests

MARGIN = 1.5  # two cores shared by many test processes
TINY = {"pool_size": 1, "pool_min_size": 1, "max_overflow": 0}
# STATEMENT_TIMEOUT=1s, CONNECT_TIMEOUT=1: a wait gives up after 1 + 1 s, and the cancel sent then
# may take 1 s more (the README's STATEMENT_TIMEOUT + 2 x CONNECT_TIMEOUT).
FAULTY = {"statement_timeout": "1s", "connect_timeout": 1, "pool_timeout": 2.0, "lock_timeout": "1s"}
ROUND_TRIP = 1.0 + 2 * 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def _pool(target: DatabaseTarget, **settings: Any) -> AsyncIterator[AsyncDataLayerPool]:
    pool = await open_pool(settings_for_tests(**settings), target=target, wait=True)
    try:
        yield pool
    finally:
        await pool.close()


async def _idle(pool: AsyncDataLayerPool, timeout: float = 10.0) -> None:
    """Wait until every connection of ``pool`` is back in it (no leak), or fail with its stats."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = pool.get_stats()
        if stats.get("pool_size", 0) == stats.get("pool_available", 0):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"connections not returned: {pool.get_stats()}")


class Ticker:
    """A task that wakes every 10 ms and records when: a blocked event loop shows as a gap."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.times.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def longest_gap(self) -> float:
        return max(b - a for a, b in zip(self.times, self.times[1:], strict=False))


@pytest.mark.anyio
async def test_connection_is_autocommit_utc_named_and_typed(adl_pool: AsyncDataLayerPool) -> None:
    async with aio.connection() as db:
        assert isinstance(db, aio.AsyncConnection) and isinstance(db, psycopg.AsyncConnection)
        assert db.autocommit
        assert await (await db.execute("SHOW TimeZone")).fetchone() == ("UTC",)
        assert await (await db.execute("SHOW application_name")).fetchone() == ("datalayer",)
        # the execution layer's marks: a kept cursor slot, the deadline, and the dirty flag raw use sets
        assert db._dl_wait_limit == 60 + settings_for_tests().connect_timeout
        assert db._dl_dirty and not db._dl_expired
        await db.execute("CREATE TABLE t (x int)")
        await db.execute("INSERT INTO t VALUES (1)")  # committed by itself
    async with aio.connection() as other:
        assert await (await other.execute("SELECT x FROM t")).fetchall() == [(1,)]
    assert aio.AsyncDataLayerPool is AsyncDataLayerPool and await aio.default_pool() is adl_pool


@pytest.mark.anyio
async def test_pool_exhausted_with_a_tiny_pool(dl_pool: DataLayerPool) -> None:
    async with _pool(dl_pool.target, **TINY, pool_timeout=0.3) as pool:
        held = await checkout(pool)
        t0 = time.monotonic()
        with pytest.raises(
            PoolExhausted, match=r"within 0\.3 s .*max_size 1 \(POOL_SIZE 1 \+ MAX_OVERFLOW 0\), 1 in use"
        ):
            await checkout(pool)
        took = time.monotonic() - t0
        assert 0.25 <= took < 0.3 + MARGIN
        with pytest.raises(PoolExhausted):
            async with aio.connection(pool, timeout=0.1):
                pass
        # a waiter gets the connection as soon as it is given back
        waiter = asyncio.create_task(checkout(pool, timeout=5))
        await asyncio.sleep(0.05)
        await give_back(pool, held)
        await give_back(pool, await waiter)
        await _idle(pool)


@pytest.mark.anyio
async def test_a_returned_connection_is_reset(dl_pool: DataLayerPool) -> None:
    async with _pool(dl_pool.target, **TINY) as pool:
        async with aio.connection(pool) as db:
            pid = db.info.backend_pid
            await db.execute("SET statement_timeout = '61s'")
            await db.execute("CREATE TEMP TABLE scratch (x int)")
            await db.execute("SELECT pg_advisory_lock(42)")
            await db.set_autocommit(False)
            await db.set_read_only(True)
            await db.execute("SELECT 1")  # left in an open read-only transaction
        await _idle(pool)
        async with aio.connection(pool) as db:
            assert db.info.backend_pid == pid  # the same connection, lent again as it was first lent
            assert db.autocommit and db.read_only is None
            assert await (await db.execute("SHOW statement_timeout")).fetchone() == ("1min",)
            cur = await db.execute(
                "SELECT to_regclass('pg_temp.scratch'), count(*) FROM pg_locks WHERE locktype = 'advisory'"
            )
            assert await cur.fetchone() == (None, 0)


@pytest.mark.anyio
async def test_a_dead_idle_connection_is_replaced_at_checkout(
    dl_pool: DataLayerPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, "psycopg.pool")
    async with _pool(dl_pool.target, **TINY) as pool:
        async with aio.connection(pool) as db:
            dead = db.info.backend_pid
        async with await psycopg.AsyncConnection.connect(dl_pool.target.conninfo(), autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (dead,))
        await asyncio.sleep(0.3)
        async with aio.connection(pool, timeout=5) as db:
            assert db.info.backend_pid != dead
            assert await (await db.execute("SELECT 1")).fetchone() == (1,)


@pytest.mark.anyio
async def test_connect_errors_are_of_the_error_tree(dl_pool: DataLayerPool) -> None:
    settings = settings_for_tests(connect_timeout=2)
    target = dl_pool.target
    missing = DatabaseTarget(params={**target.params, "dbname": "dl_no_such_db"}, password=target.password)
    with pytest.raises(ConfigError, match="check DATABASE_URL") as e:
        await connect(settings, missing)
    assert e.value.variable == "DATABASE_URL"
    with socket_closed() as port:
        refused = DatabaseTarget(params={**target.params, "host": "127.0.0.1", "port": str(port)})
        with pytest.raises(TransientError, match="is the server running"):
            await open_pool(settings, target=refused)
    with pytest.raises(ConfigError, match="no database is configured"):
        await open_pool(Settings())
    conn = await connect(settings, target)  # outside any pool, with the pool's deadline
    try:
        assert conn._dl_wait_limit == 60 + 2 and conn.autocommit
    finally:
        await conn.close()


@contextlib.contextmanager
def socket_closed() -> Iterator[int]:
    """A local TCP port nothing listens on."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield port


@pytest.mark.anyio
async def test_get_db_lends_one_connection_for_a_request(adl_pool: AsyncDataLayerPool) -> None:
    await _idle(adl_pool)
    # what FastAPI does with an async yield dependency: enter, handler, exit (or throw on error)
    dependency = contextlib.asynccontextmanager(aio.get_db)
    async with dependency() as db:
        assert isinstance(db, aio.AsyncConnection)
        assert adl_pool.get_stats()["pool_available"] < adl_pool.get_stats()["pool_size"]
        async with aio.transaction(db):
            await db.execute("CREATE TABLE t (x int)")
    await _idle(adl_pool)
    with pytest.raises(RuntimeError, match="handler failed"):
        async with dependency() as db:
            await db.execute("SELECT 1")
            raise RuntimeError("handler failed")
    await _idle(adl_pool)


@pytest.mark.anyio
async def test_an_abandoned_get_db_gives_its_connection_back_closed(adl_pool: AsyncDataLayerPool) -> None:
    await _idle(adl_pool)
    db = await anext(aio.get_db())  # the generator is dropped at once
    gc.collect()
    await _idle(adl_pool)  # the slot came back
    assert db.closed  # and what the caller still holds cannot share a session with the next borrower
    async with aio.connection() as fresh:
        assert fresh is not db and await (await fresh.execute("SELECT 1")).fetchone() == (1,)


@pytest.fixture
def env_on(dl_pool: DataLayerPool, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment names this test's database (TEST_DATABASE_URL's server) and a small pool; no
    async default pool is installed, so datalayer.aio opens its own."""
    for key, value in {
        "DATABASE_URL": url_of(dl_pool.target),
        "POOL_SIZE": "2",
        "POOL_MIN_SIZE": "1",
        "MAX_OVERFLOW": "0",
        "DATALAYER_APP_NAME": "dl_aio_default",
    }.items():
        monkeypatch.setenv(key, value)
    previous = aio.set_default_pool(None)
    try:
        yield
    finally:
        aio.set_default_pool(previous)


@pytest.mark.anyio
async def test_the_default_pool_opens_once_per_loop_on_the_configured_database(
    dl_pool: DataLayerPool, env_on: None
) -> None:
    first = await asyncio.gather(*(aio.default_pool() for _ in range(5)))  # concurrent first uses: one pool
    pool = first[0]
    try:
        assert all(p is pool for p in first) and await aio.default_pool() is pool
        assert pool.target.params["dbname"] == dl_pool.target.params["dbname"]
        assert (pool.min_size, pool.max_size) == (1, 2)
        async with aio.connection() as db:
            cur = await db.execute("SELECT current_database(), current_setting('application_name')")
            assert await cur.fetchone() == (dl_pool.target.params["dbname"], "dl_aio_default")
        async with aio.transaction() as db:
            assert aio.in_transaction(db)
        # an installed pool wins, and uninstalling it gives this loop's back
        async with _pool(dl_pool.target) as mine:
            assert aio.set_default_pool(mine) is None and await aio.default_pool() is mine
            assert aio.set_default_pool(None) is mine and await aio.default_pool() is pool
    finally:
        await aio.close_default_pool()
    assert pool.closed
    again = await aio.default_pool()
    assert again is not pool and not again.closed
    await aio.close_default_pool()
    assert again.closed


def _backends(target: DatabaseTarget, app: str) -> int:
    with psycopg.connect(target.conninfo(), autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchone()
    return int(row[0]) if row else 0


def test_the_default_pool_closes_when_its_loop_shuts_down(dl_pool: DataLayerPool, env_on: None) -> None:
    async def main() -> AsyncDataLayerPool:
        async with aio.connection() as db:
            await db.execute("SELECT 1")  # a dirty connection: its reset is still running at the end
        return await aio.default_pool()

    outcome: list[Any] = []
    # asyncio.run cancels what is left, then closes the loop: a pool left open would hang it there.
    runner = threading.Thread(target=lambda: outcome.append(asyncio.run(main())), daemon=True)
    runner.start()
    runner.join(10 + MARGIN)
    assert not runner.is_alive(), "asyncio.run did not return: the default pool kept its loop from closing"
    (pool,) = outcome
    assert pool.closed
    deadline = time.monotonic() + 5
    while _backends(dl_pool.target, "dl_aio_default") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _backends(dl_pool.target, "dl_aio_default") == 0


@pytest.mark.anyio
async def test_a_slow_query_does_not_block_the_event_loop(adl_pool: AsyncDataLayerPool) -> None:
    async with aio.connection() as db, Ticker() as ticker:
        t0 = time.monotonic()
        await db.execute("SELECT pg_sleep(0.3)")
        took = time.monotonic() - t0
    assert took >= 0.3
    assert len(ticker.times) >= 5
    assert ticker.longest_gap() < 0.15, ticker.longest_gap()  # the loop served the ticker all along


@contextlib.asynccontextmanager
async def _proxied(dl_pool: DataLayerPool, **settings: Any) -> AsyncIterator[tuple[AsyncDataLayerPool, TcpProxy]]:
    direct = dl_pool.target
    host, port = direct.params.get("host", "127.0.0.1"), int(direct.params.get("port", "5432"))
    proxy = TcpProxy(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port))
    via = DatabaseTarget(
        params={**direct.params, "host": "127.0.0.1", "port": str(proxy.port)}, password=direct.password
    )
    try:
        async with _pool(via, **settings) as pool:
            yield pool, proxy
            proxy.set_mode("pass")
    finally:
        proxy.close()


@pytest.mark.anyio
async def test_a_blackholed_server_does_not_hang_an_awaiting_task(
    dl_pool: DataLayerPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, "psycopg.pool")
    async with _proxied(dl_pool, **TINY, **FAULTY) as (pool, proxy), aio.connection(pool) as db:
        assert db._dl_wait_limit == 2.0
        proxy.set_mode("blackhole")
        async with Ticker() as ticker:
            t0 = time.monotonic()
            with pytest.raises(psycopg.OperationalError, match=r"no answer from the server within 2 s"):
                await db.execute("SELECT 1")
            took = time.monotonic() - t0
        assert 2.0 <= took < ROUND_TRIP + MARGIN, took
        assert db._dl_expired and db.closed
        assert ticker.longest_gap() < 0.5, ticker.longest_gap()  # other tasks ran while it waited
        proxy.set_mode("pass")


@pytest.mark.anyio
async def test_the_pool_serves_again_soon_after_an_outage(
    dl_pool: DataLayerPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, "psycopg.pool")
    async with _proxied(dl_pool, **TINY, **FAULTY) as (pool, proxy):
        proxy.set_mode("drop")  # every connection closed, new ones refused
        await asyncio.sleep(0.2)
        with pytest.raises(PoolExhausted):
            await checkout(pool, timeout=1.5)
        proxy.set_mode("pass")
        healed = time.monotonic()
        while True:
            try:
                async with aio.connection(pool, timeout=0.5) as db:
                    assert await (await db.execute("SELECT 1")).fetchone() == (1,)
                break
            except PoolExhausted:
                assert time.monotonic() - healed < _ReconnectAttempt.MAX_DELAY + MARGIN, (
                    "no connection after the outage"
                )
        assert time.monotonic() - healed < _ReconnectAttempt.MAX_DELAY + MARGIN


def test_the_psycopg_seams_the_async_pool_relies_on() -> None:
    # AsyncDataLayerConnection overrides AsyncConnection.wait (the per-call deadline) and relies on its
    # timeout raising an OperationalError; AsyncDataLayerPool hands its capped backoff to _add_connection.
    assert list(inspect.signature(psycopg.AsyncConnection.wait).parameters) == ["self", "gen", "interval", "timeout"]
    assert issubclass(psycopg.errors._WaitTimeout, psycopg.OperationalError)
    params = list(inspect.signature(psycopg_pool.AsyncConnectionPool._add_connection).parameters)
    assert params == ["self", "attempt", "growing"]
    attempt = _ReconnectAttempt(timeout=60.0)
    for now in range(10):
        attempt.update_delay(float(now))
    assert 0 < attempt.delay <= _ReconnectAttempt.MAX_DELAY
