"""Found by an outside review of datalayer.aio: cancellation, a connection shared by tasks, connections
of the wrong kind."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import sql

from datalayer import aio
from datalayer import transaction as sync_transaction
from datalayer.errors import QueryError, ValidationError
from datalayer.pool import DataLayerPool
from datalayer.pool_async import AsyncDataLayerPool, open_pool
from datalayer.testing import settings_for_tests

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _users(db: Any, n: int) -> None:
    for i in range(n):
        await aio.user_repo.create(db, username=f"share{i}", email=f"share{i}@example.com", hashed_password="h")


async def test_a_cancelled_return_never_loses_a_pool_slot(dl_pool: DataLayerPool) -> None:
    pool = await open_pool(settings_for_tests(pool_size=2, pool_min_size=2, max_overflow=0, pool_timeout=5.0),
                           target=dl_pool.target, wait=True)
    try:
        for i in range(300):  # timeouts landing anywhere: in the query, in the reset, in the return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.0002 + 0.003 * (i % 40) / 40), aio.connection(pool) as db:
                    await db.execute("SELECT 1")
        deadline = time.monotonic() + 5
        while pool.get_stats().get("pool_available", 0) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        async with aio.connection(pool, timeout=2) as a, aio.connection(pool, timeout=2) as b:
            assert a is not b  # both slots are there
    finally:
        await pool.close()


async def test_tasks_sharing_a_connection_get_their_own_rows(adb: Any) -> None:
    await _users(adb, 3)
    for _ in range(30):
        user, count, page = await asyncio.gather(
            aio.user_repo.get_by_username(adb, "share1"), aio.user_repo.count(adb), aio.user_repo.find(adb, limit=2)
        )
        assert user is not None and user.username == "share1"
        assert count == 3 and len(page.items) == 2


async def test_a_second_task_cannot_join_another_tasks_transaction(adb: Any) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with aio.transaction(adb):
            await _users(adb, 1)
            started.set()
            await release.wait()

    task = asyncio.create_task(first())
    await started.wait()
    try:
        with pytest.raises(ValidationError) as e:
            async with aio.transaction(adb):
                pass
        assert "another task" in e.value.errors["db"]
    finally:
        release.set()
        await task
    assert await aio.user_repo.count(adb) == 1  # the first task's transaction committed untouched


async def test_cancelled_during_commit_runs_neither_commit_nor_rollback_hooks(adb: Any) -> None:
    await adb.execute(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.6); RETURN NULL; END $$"
    )
    await adb.execute("CREATE TABLE slow (id int)")
    await adb.execute(
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION slow_commit()"
    )
    seen: list[str] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3), aio.transaction(adb):
            await adb.execute("INSERT INTO slow VALUES (1)")
            await aio.on_commit(lambda: seen.append("committed"))
            await aio.on_commit(lambda: seen.append("maybe committed"), also_if_unknown=True)
            await aio.on_rollback(lambda: seen.append("rolled back"))
    assert seen == ["maybe committed"]  # COMMIT was in flight: its outcome is unknown


async def test_connections_and_arguments_of_the_wrong_kind_are_refused(adb: Any, db: psycopg.Connection[Any],
                                                                       dl_pool: DataLayerPool) -> None:
    async def fn(c: Any) -> int:
        return 1

    cases: list[tuple[str, Any]] = [
        ("db", lambda: aio.transaction(db).__aenter__()),
        ("db", lambda: aio.transaction(42).__aenter__()),  # type: ignore[type-var]
        ("db", lambda: aio.run_in_transaction(db, fn)),
        ("isolation", lambda: aio.run_in_transaction(adb, fn, isolation=5)),  # type: ignore[arg-type]
        ("backoff", lambda: aio.run_in_transaction(adb, fn, backoff="1")),  # type: ignore[arg-type]
        ("fn", lambda: aio.run_in_transaction(adb, 5)),  # type: ignore[arg-type]
        ("hook", lambda: aio.on_commit(42)),  # type: ignore[arg-type]
        ("db", lambda: aio.on_commit(lambda: None, db)),  # type: ignore[arg-type]
        ("pool", lambda: aio.connection(dl_pool).__aenter__()),  # type: ignore[arg-type]
    ]
    for field, call in cases:
        with pytest.raises(ValidationError) as e:
            await call()
        assert field in e.value.errors, (field, e.value.errors)
    with pytest.raises(ValidationError) as e, sync_transaction(adb):
        pass
    assert "must be a psycopg.Connection, got AsyncDataLayerConnection" in e.value.errors["db"]
    with pytest.raises(ValidationError):
        aio.set_default_pool("junk")  # type: ignore[arg-type]


async def test_the_aborted_transaction_rule_holds_for_async_repositories(adb: Any) -> None:
    from datalayer import IntegrityConflict

    with pytest.raises(QueryError, match="caught inside the block"):
        async with aio.transaction(adb):
            await _users(adb, 1)
            with contextlib.suppress(IntegrityConflict):
                await _users(adb, 1)
    assert await aio.user_repo.count(adb) == 0


async def test_a_pool_closed_with_its_loop_logs_no_discarded_connections(
    dl_pool: DataLayerPool, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(dl_pool, DataLayerPool)
    pool: AsyncDataLayerPool = await open_pool(settings_for_tests(pool_size=3, pool_min_size=3),
                                               target=dl_pool.target, wait=True)
    from datalayer._aio_defaults import _close_quietly

    await _close_quietly(pool)
    assert pool.closed
    assert not [r for r in caplog.records if "discarding" in r.getMessage()]


async def test_a_pool_that_cannot_open_its_first_connections_is_a_transient_error(dl_pool: DataLayerPool) -> None:
    """open_pool(wait=True), sync and async: psycopg_pool's PoolTimeout never leaves the public API."""
    import uuid

    from datalayer.errors import TransientError
    from datalayer.pool import open_pool as open_sync_pool

    role = f"dl_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dl_pool.target.conninfo(), autocommit=True) as admin:
        password = dl_pool.target.password.value if dl_pool.target.password is not None else None
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 2 PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        try:
            target = attrs.evolve(dl_pool.target, params={**dl_pool.target.params, "user": role})
            settings = settings_for_tests(pool_size=3, pool_min_size=3, max_overflow=0, pool_timeout=1.0)
            with pytest.raises(TransientError, match=r"could not open its first 3 connections \(POOL_MIN_SIZE\)"):
                open_sync_pool(settings, target=target, wait=True)
            with pytest.raises(TransientError, match=r"could not open its first 3 connections"):
                await open_pool(settings, target=target, wait=True)
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            admin.execute(f'DROP ROLE "{role}"')
