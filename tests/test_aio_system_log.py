"""datalayer.aio's events, system_log repository and passwords: the async twins, awaited on a real
psycopg.AsyncConnection, and SystemLogHandler keeping an event loop responsive while PostgreSQL is gone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from helpers import url_of
from tcpproxy import TcpProxy

from datalayer import DataLayerError, ValidationError
from datalayer import system_log_repo as sync_repo
from datalayer.aio import (
    LogEvent,
    SystemLogHandler,
    hash_password,
    log_system_event,
    needs_rehash,
    system_log_repo,
    verify_password,
)
from datalayer.config import DatabaseTarget
from datalayer.partitions import DEFAULT_AHEAD, PartitionKeeper, list_log_partitions, set_keeper
from datalayer.pool import DataLayerPool, connection, open_pool
from datalayer.testing import settings_for_tests
from datalayer.transactions_async import transaction

NOW = datetime.now(UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def adb(dl_pool: DataLayerPool) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An autocommit async connection to this test's fresh migrated database."""
    conn = await psycopg.AsyncConnection.connect(url_of(dl_pool.target), autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


async def _count(adb: psycopg.AsyncConnection[Any]) -> int:
    row = await (await adb.execute("SELECT count(*) FROM system_log")).fetchone()
    assert row is not None
    return int(row[0])


# ------------------------------------------------------------------------------ the repository


@pytest.mark.anyio
async def test_create_get_and_log_system_event(adb: psycopg.AsyncConnection[Any]) -> None:
    e = await system_log_repo.create(adb, service="billing", level="ERROR", message="charge failed",
                                     details={"invoice": 42}, user_id=7)
    assert (e.service, e.level, e.message, e.details, e.user_id) == ("billing", "ERROR", "charge failed",
                                                                    {"invoice": 42}, 7)
    assert await system_log_repo.get_by_id(adb, e.id) == e
    assert await system_log_repo.get_by_id(adb, e.id + 100) is None
    w = await log_system_event(adb, service="api", level="warn", message="slow", details={"ms": 900})
    assert (w.level, w.details) == ("WARNING", {"ms": 900})
    with pytest.raises(ValidationError) as bad:
        await log_system_event(adb, service="api", level="LOUD", message="x")
    assert list(bad.value.errors) == ["level"]
    assert await _count(adb) == 2


@pytest.mark.anyio
async def test_find_count_and_record_landed(adb: psycopg.AsyncConnection[Any]) -> None:
    stamps = [NOW - timedelta(days=d, hours=h) for d in range(3) for h in (1, 2, 3)]
    events = [LogEvent(service="svc" if i % 2 else "other", level="ERROR" if i % 3 == 0 else "INFO",
                       message=f"m{i}", created_at=t, details={"record_id": f"r{i}"}) for i, t in enumerate(stamps)]
    assert await system_log_repo.bulk_insert(adb, events) == len(stamps)
    since, until = NOW - timedelta(days=10), NOW + HOUR
    everything = (await system_log_repo.find(adb, since=since, until=until, limit=1000)).items
    assert [e.created_at for e in everything] == sorted(stamps, reverse=True)
    page, seen = await system_log_repo.find(adb, since=since, until=until, limit=4), []
    while True:
        seen += page.items
        if not page.next_cursor:
            break
        page = await system_log_repo.find(adb, since=since, until=until, limit=4, after=page.next_cursor)
    assert seen == everything
    errors = (await system_log_repo.find(adb, since=since, until=until, level="ERROR", service="other")).items
    assert errors and all(e.level == "ERROR" and e.service == "other" for e in errors)
    counts = {c.level: c.count for c in await system_log_repo.count_by_level(adb, since=since, until=until)}
    assert counts == {"ERROR": 3, "INFO": 6}
    only_svc = {c.level: c.count for c in await system_log_repo.count_by_level(adb, since=since, until=until,
                                                                               service="svc")}
    assert sum(only_svc.values()) == 4
    span = {"first": stamps[0] - HOUR, "last": stamps[0] + HOUR}
    assert await system_log_repo.record_landed(adb, record_id="r0", service="other", **span) is True
    assert await system_log_repo.record_landed(adb, record_id="r0", service="svc", **span) is False
    with pytest.raises(ValidationError) as cursor:
        await system_log_repo.find(adb, since=since, until=until, after="not-a-cursor")
    assert list(cursor.value.errors) == ["after"]


@pytest.mark.anyio
@pytest.mark.parametrize("kwargs", [
    {"since": NOW, "until": NOW},
    {"since": NOW, "until": NOW - HOUR},
    {"since": NOW - timedelta(days=100), "until": NOW},
    {"since": datetime(2026, 1, 1), "until": NOW},  # naive
    {"since": "yesterday", "until": NOW},
])
async def test_listings_must_be_bounded_in_time(adb: psycopg.AsyncConnection[Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        await system_log_repo.find(adb, **kwargs)
    with pytest.raises(ValidationError):
        await system_log_repo.count_by_level(adb, **kwargs)


@pytest.mark.anyio
async def test_bulk_insert_is_all_or_nothing(adb: psycopg.AsyncConnection[Any]) -> None:
    good = [{"service": "s", "level": "INFO", "message": f"m{i}", "details": {"i": i}} for i in range(50)]
    assert await system_log_repo.bulk_insert(adb, good) == 50
    bad = [*good[:10], {"service": "s", "level": "NOPE", "message": "x"}, *good[:10]]
    with pytest.raises(ValidationError) as e:
        await system_log_repo.bulk_insert(adb, bad)
    assert list(e.value.errors) == ["events[10].level"]
    late = [*good[:3], {"service": "s", "level": "INFO", "message": "m", "created_at": NOW + timedelta(days=999)}]
    with pytest.raises(ValidationError) as e2:
        await system_log_repo.bulk_insert(adb, late)
    assert list(e2.value.errors) == ["events[3].created_at"]
    with pytest.raises(ValidationError) as e3:
        await system_log_repo.bulk_insert(adb, {"service": "s", "level": "INFO", "message": "m"})
    assert list(e3.value.errors) == ["events"]
    # A row the server refuses inside COPY (a level no CHECK allows): the whole transaction goes.
    with pytest.raises(DataLayerError):
        async with transaction(adb):
            await system_log_repo.copy_rows(adb, [(NOW, "s", "INFO", "m", "{}", None),
                                                  (NOW, "s", "BOGUS", "m", "{}", None)])
    assert await _count(adb) == 50
    assert await system_log_repo.bulk_insert(adb, []) == 0


@pytest.mark.anyio
async def test_a_connection_of_the_wrong_kind_is_refused_naming_db(adb: psycopg.AsyncConnection[Any],
                                                                   dl_pool: DataLayerPool,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with connection(dl_pool) as sync_db:
        for call in (lambda: system_log_repo.create(sync_db, service="s", level="INFO", message="m"),  # type: ignore[arg-type]
                     lambda: system_log_repo.bulk_insert(sync_db, []),  # type: ignore[arg-type]
                     lambda: log_system_event(sync_db, service="s", level="INFO", message="m")):  # type: ignore[arg-type]
            with pytest.raises(ValidationError) as e:
                await call()
            assert list(e.value.errors) == ["db"] and "AsyncConnection" in e.value.errors["db"]
    with pytest.raises(ValidationError) as e2:
        sync_repo.create(adb, service="s", level="INFO", message="m")  # type: ignore[arg-type]
    assert list(e2.value.errors) == ["db"]
    closed = await psycopg.AsyncConnection.connect(url_of(dl_pool.target), autocommit=True)
    await closed.close()
    with pytest.raises(ValidationError) as e3:
        await log_system_event(closed, service="s", level="INFO", message="m")
    assert "is closed" in e3.value.errors["db"]
    with pytest.raises(ValidationError) as e4:  # not a TransientError: nothing was lost in the network
        async with transaction(closed):
            pass
    assert list(e4.value.errors) == ["db"] and "is closed" in e4.value.errors["db"]
    assert "partitions ahead failed" not in caplog.text  # refused before any other work
    assert await _count(adb) == 0


@pytest.mark.anyio
async def test_an_async_writer_keeps_partitions_ahead_in_the_background(adb: psycopg.AsyncConnection[Any],
                                                                        dl_pool: DataLayerPool) -> None:
    month_on = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=30)
    keeper = PartitionKeeper(clock=lambda: month_on)
    previous = set_keeper(keeper)
    try:
        entry = await log_system_event(adb, service="api", level="INFO", message="a month on")
        assert keeper.wait(30) and keeper.failures == 0
    finally:
        set_keeper(previous)
    assert entry.message == "a month on"
    with connection(dl_pool) as db:
        days = {p.day for p in list_log_partitions(db) if p.day is not None}
    assert {(month_on + timedelta(days=i)).date() for i in range(DEFAULT_AHEAD + 1)} <= days


# ------------------------------------------------------------------------------------ passwords


@pytest.mark.anyio
async def test_passwords_are_hashed_and_verified_off_the_event_loop() -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    h = await hash_password("correct horse battery staple")
    ok = await verify_password("correct horse battery staple", h)
    wrong = await verify_password("correct horse battery stable", h)
    # No await in the hashing itself would have let the ticker run: argon2 ran in a worker thread.
    during = ticks
    stop.set()
    await task
    assert h.startswith("$argon2id$") and ok is True and wrong is False and not needs_rehash(h)
    assert during >= 1, "the event loop did not run while argon2 worked"
    assert await hash_password("same-pw1") != await hash_password("same-pw1")  # salted
    with pytest.raises(ValidationError) as e:
        await hash_password("short")
    assert list(e.value.errors) == ["password"]
    for password, hashed in [("x" * 1025, h), (None, h), ("pw", "garbage"), ("pw", None), ("a\x00b", h)]:
        assert await verify_password(password, hashed) is False  # type: ignore[arg-type]


# ----------------------------------------------------------------- the handler never blocks a loop


@pytest.fixture
def proxied_pool(dl_pool: DataLayerPool) -> Iterator[tuple[DataLayerPool, TcpProxy]]:
    """A pool on this test's database that reaches it through a TCP proxy the test controls."""
    direct = dl_pool.target
    host, port = direct.params.get("host", "127.0.0.1"), direct.params.get("port", "5432")
    proxy = TcpProxy(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, int(port)))
    via = DatabaseTarget(params={**direct.params, "host": "127.0.0.1", "port": str(proxy.port)},
                         password=direct.password)
    pool = open_pool(settings_for_tests(connect_timeout=1, pool_timeout=2.0), target=via, wait=True)
    try:
        yield pool, proxy
    finally:
        proxy.set_mode("drop")
        pool.close(timeout=5)
        proxy.close()


def _queued_for_cpu() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU (Linux schedstat; 0 elsewhere).

    On a loaded machine the scheduler alone can hold a thread for tens of milliseconds: that time says
    nothing about the code under test, so the tick gaps leave it out. A loop blocked by a lock, a socket
    or another thread's GIL is sleeping, not queued, and still counts in full.
    """
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@pytest.mark.anyio
async def test_the_handler_never_blocks_the_event_loop_while_postgres_is_unreachable(
    proxied_pool: tuple[DataLayerPool, TcpProxy], dl_pool: DataLayerPool
) -> None:
    pool, proxy = proxied_pool
    total, capacity = 6000, 500
    handler = SystemLogHandler(service="loop", pool=pool, capacity=capacity, batch_size=100, flush_interval=0.01)
    log = logging.getLogger("aio.loop")
    log.handlers, log.propagate = [handler], False
    log.setLevel(logging.INFO)
    gaps: list[float] = []  # between ticks, less the time the loop's thread was queued for a CPU
    done = asyncio.Event()

    async def ticker() -> None:
        last, queued = time.monotonic(), _queued_for_cpu()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now, now_queued = time.monotonic(), _queued_for_cpu()
            gaps.append(now - last - (now_queued - queued))
            last, queued = now, now_queued

    async def logger() -> None:
        for i in range(total):
            log.info("request %d", i, extra={"path": f"/v1/items/{i}"})
            if i % 20 == 19:
                await asyncio.sleep(0.001)  # a request handler's own awaits between its log lines
        done.set()

    try:
        proxy.set_mode("blackhole")  # the writer's connection hangs: bytes go out, nothing comes back
        log.info("first, so that the writer takes a connection and hangs on it")
        await asyncio.sleep(0.2)
        await asyncio.gather(ticker(), logger())
        stuck = handler.written
        accepted = handler.pending()
        assert stuck == 0, "the database was unreachable, yet the handler wrote"
        assert handler.dropped >= total + 1 - capacity - handler.batch_size  # bounded: the rest was dropped
        assert accepted + handler.dropped == total + 1 and handler.rejected == 0
        assert len(gaps) >= 50 and max(gaps) < 0.020, f"the loop was held {max(gaps) * 1000:.1f} ms"
        # The network heals: what was accepted is written, nothing else was lost.
        proxy.set_mode("drop")
        proxy.set_mode("pass")
        assert await asyncio.to_thread(handler.drain, 30), f"stuck with {handler.pending()} pending"
    finally:
        handler.close(timeout=5)
        log.handlers = []
    assert handler.written == accepted and handler.rejected == 0
    with connection(dl_pool) as db:
        page = sync_repo.find(db, since=NOW - HOUR, until=datetime.now(UTC) + HOUR, service="loop", limit=1000)
    assert len(page.items) == min(accepted, 1000)
