"""datalayer.aio's units of work: commit, rollback, savepoints, hooks (sync and async), retries."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import psycopg
import pytest

from datalayer import aio
from datalayer.errors import CommitUnknown, IntegrityConflict, TransientError, ValidationError
from datalayer.pool_async import AsyncDataLayerPool
from datalayer.transactions_async import current_transaction

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def adl_pool(adl_pool: AsyncDataLayerPool) -> AsyncDataLayerPool:
    """The test's async pool, with a table of its own to write to."""
    async with aio.connection(adl_pool) as db:
        await db.execute("CREATE TABLE notes (name text PRIMARY KEY)")
    return adl_pool


async def _add_note(db: aio.AsyncConnection, name: str | None = None) -> str:
    name = name or f"n{uuid.uuid4().hex[:10]}"
    await db.execute("INSERT INTO notes (name) VALUES (%s)", (name,))
    return name


async def _names(pool: AsyncDataLayerPool) -> set[str]:
    async with aio.connection(pool) as other:
        cur = await other.execute("SELECT name FROM notes")
        return {r[0] for r in await cur.fetchall()}


class Events:
    """Hooks of both kinds that record when they ran."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def sync(self, what: str) -> Any:
        return lambda: self.seen.append(what)

    def async_(self, what: str) -> Any:
        async def hook() -> None:
            await asyncio.sleep(0)  # a real await: the hook is awaited, not just called
            self.seen.append(what)

        return hook


async def test_transaction_commits_then_runs_sync_and_async_hooks(adl_pool: AsyncDataLayerPool) -> None:
    ev = Events()
    async with aio.connection() as db:
        async with aio.transaction(db) as tx:
            assert tx is db
            name = await _add_note(db)
            await aio.on_commit(ev.sync("sync committed"))
            await aio.on_commit(ev.async_("async committed"))
            await aio.on_rollback(ev.async_("rolled back"))
            assert aio.in_transaction(db) and current_transaction() is db
            assert ev.seen == []
            assert name not in await _names(adl_pool)  # not visible before COMMIT
        assert ev.seen == ["sync committed", "async committed"]
        assert not aio.in_transaction(db) and current_transaction() is None
    assert name in await _names(adl_pool)


async def test_transaction_rolls_back_on_error_and_runs_rollback_hooks(adl_pool: AsyncDataLayerPool) -> None:
    ev = Events()
    async with aio.connection() as db:
        with pytest.raises(RuntimeError, match="boom"):
            async with aio.transaction(db):
                name = await _add_note(db)
                await aio.on_commit(ev.sync("committed"))
                await aio.on_rollback(ev.sync("sync rolled back"))
                await aio.on_rollback(ev.async_("async rolled back"))
                raise RuntimeError("boom")
        assert ev.seen == ["sync rolled back", "async rolled back"]
        assert not aio.in_transaction(db) and db.autocommit
    assert name not in await _names(adl_pool)


async def test_savepoints_drop_the_hooks_of_what_rolled_back(adl_pool: AsyncDataLayerPool) -> None:
    ev = Events()
    async with aio.connection() as db:
        async with aio.transaction(db):
            outer = await _add_note(db)
            await aio.on_commit(ev.sync("outer"))
            with pytest.raises(ValueError, match="inner"):
                async with aio.transaction(db):  # a savepoint
                    dropped = await _add_note(db)
                    await aio.on_commit(ev.async_("dropped"))
                    await aio.on_rollback(ev.async_("inner rolled back"))
                    raise ValueError("inner")
            assert ev.seen == ["inner rolled back"]  # at once: the savepoint is over
            async with aio.transaction(db):  # released: its hooks wait for the outermost COMMIT
                kept = await _add_note(db)
                await aio.on_commit(ev.async_("released"))
            assert ev.seen == ["inner rolled back"]
        assert ev.seen == ["inner rolled back", "outer", "released"]
    names = await _names(adl_pool)
    assert {outer, kept} <= names and dropped not in names


async def test_explicit_rollback_of_a_savepoint(adl_pool: AsyncDataLayerPool) -> None:
    ev = Events()
    async with aio.connection() as db, aio.transaction(db):
        outer = await _add_note(db)
        async with aio.transaction(db):
            inner = await _add_note(db)
            await aio.on_commit(ev.sync("inner committed"))
            await aio.on_rollback(ev.sync("inner rolled back"))
            raise psycopg.Rollback
    assert ev.seen == ["inner rolled back"]
    names = await _names(adl_pool)
    assert outer in names and inner not in names


async def test_hooks_outside_a_transaction(adl_pool: AsyncDataLayerPool) -> None:
    ev = Events()
    await aio.on_commit(ev.async_("now"))  # nothing to wait for: run (and awaited) at once
    await aio.on_rollback(ev.sync("never"))
    assert ev.seen == ["now"]


async def test_a_failing_hook_is_logged_not_raised(
    adl_pool: AsyncDataLayerPool, caplog: pytest.LogCaptureFixture
) -> None:
    ev = Events()

    async def broken() -> None:
        raise OSError("cache down")

    async with aio.connection() as db, aio.transaction(db):
        name = await _add_note(db)
        await aio.on_commit(broken)
        await aio.on_commit(ev.sync("after the broken one"))
    assert ev.seen == ["after the broken one"]
    assert "transaction hook" in caplog.text and "cache down" in caplog.text
    assert name in await _names(adl_pool)


async def test_borrowed_transaction_and_errors_of_the_error_tree(adl_pool: AsyncDataLayerPool) -> None:
    async with aio.transaction() as db:  # borrows a connection of the default pool for the block
        assert isinstance(db, aio.AsyncConnection) and aio.in_transaction(db)
        name = await _add_note(db)
    assert name in await _names(adl_pool)
    with pytest.raises(IntegrityConflict) as e:
        async with aio.transaction() as db:
            await _add_note(db, name)
    assert e.value.constraint == "notes_pkey" and name not in str(e.value)  # never the value
    assert adl_pool.get_stats()["pool_size"] >= 1 and not adl_pool.closed


async def test_each_task_sees_its_own_current_transaction(adl_pool: AsyncDataLayerPool) -> None:
    both_inside = asyncio.Barrier(2)
    seen: dict[str, Any] = {}

    async def unit(key: str) -> None:
        async with aio.connection() as db, aio.transaction(db):
            await both_inside.wait()
            seen[key] = (current_transaction() is db, db)
            await both_inside.wait()

    await asyncio.gather(unit("a"), unit("b"))
    assert seen["a"][0] and seen["b"][0] and seen["a"][1] is not seen["b"][1]
    assert current_transaction() is None


async def _setup_accounts(pool: AsyncDataLayerPool) -> None:
    async with aio.connection(pool) as db:
        await db.execute("CREATE TABLE accounts (id int PRIMARY KEY, on_call boolean NOT NULL)")
        await db.execute("INSERT INTO accounts VALUES (1, true), (2, true)")


async def test_run_in_transaction_retries_a_real_serialization_failure(adl_pool: AsyncDataLayerPool) -> None:
    # Write skew: each unit checks that two doctors are on call and takes one off. Under SERIALIZABLE,
    # PostgreSQL fails one of the two concurrent units with 40001; the retry then sees the other's write.
    await _setup_accounts(adl_pool)
    both_read = asyncio.Barrier(2)
    attempts = {1: 0, 2: 0}
    ev = Events()

    def unit(me: int) -> Any:
        async def fn(db: aio.AsyncConnection) -> int:
            attempts[me] += 1
            cur = await db.execute("SELECT count(*) FROM accounts WHERE on_call")
            (on_call,) = await cur.fetchone() or (0,)
            if attempts[me] == 1:
                await both_read.wait()  # both first attempts read before either writes
            if on_call < 2:
                return 0
            await db.execute("UPDATE accounts SET on_call = false WHERE id = %s", (me,))
            await aio.on_commit(ev.sync(f"{me} committed"))  # once, after the attempt that commits
            return 1

        return fn

    async def run(me: int) -> int:
        async with aio.connection(adl_pool) as db:
            return await aio.run_in_transaction(db, unit(me), retries=3, isolation="serializable", backoff=0.01)

    taken = await asyncio.gather(run(1), run(2))
    assert sorted(taken) == [0, 1]  # exactly one doctor went off call
    assert sorted(attempts.values()) == [1, 2]  # the loser ran again, once
    assert len(ev.seen) == 1
    async with aio.connection(adl_pool) as db:
        cur = await db.execute("SELECT count(*) FROM accounts WHERE on_call")
        assert await cur.fetchone() == (1,)


async def test_run_in_transaction_without_retries_raises_the_transient_error(adl_pool: AsyncDataLayerPool) -> None:
    await _setup_accounts(adl_pool)
    both_read = asyncio.Barrier(2)

    async def fn(db: aio.AsyncConnection) -> None:
        cur = await db.execute("SELECT count(*) FROM accounts WHERE on_call")
        await cur.fetchone()
        await both_read.wait()
        await db.execute("UPDATE accounts SET on_call = false WHERE id = (SELECT min(id) FROM accounts WHERE on_call)")

    async def run() -> BaseException | None:
        async with aio.connection(adl_pool) as db:
            try:
                await aio.run_in_transaction(db, fn, retries=0, isolation="serializable")
            except TransientError as e:
                return e
        return None

    outcomes = await asyncio.gather(run(), run())
    errors = [e for e in outcomes if e is not None]
    assert len(errors) == 1 and isinstance(errors[0], TransientError) and errors[0].sqlstate in ("40001", "40P01")


async def test_run_in_transaction_refuses_bad_arguments(adl_pool: AsyncDataLayerPool) -> None:
    async def fn(db: aio.AsyncConnection) -> str:
        return "done"

    async with aio.connection() as db:
        with pytest.raises(ValidationError, match="retries"):
            await aio.run_in_transaction(db, fn, retries=-1)
        with pytest.raises(ValidationError, match="isolation"):
            await aio.run_in_transaction(db, fn, isolation="chaotic")
        async with aio.transaction(db):
            with pytest.raises(ValidationError, match="inside a transaction"):
                await aio.run_in_transaction(db, fn)
        assert await aio.run_in_transaction(db, fn) == "done"


async def _terminate_others(pool: AsyncDataLayerPool) -> None:
    async with await psycopg.AsyncConnection.connect(pool.target.conninfo(), autocommit=True) as c:
        await c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )


async def test_connection_lost_before_commit_is_transient_not_commit_unknown(
    adl_pool: AsyncDataLayerPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, "psycopg.pool")  # the pool replaces the killed connections
    ev = Events()
    async with aio.connection() as db:
        with pytest.raises(TransientError) as e:
            async with aio.transaction(db):
                name = await _add_note(db)
                await aio.on_commit(ev.sync("committed"), also_if_unknown=True)
                await aio.on_rollback(ev.async_("rolled back"))
                await _terminate_others(adl_pool)
                await asyncio.sleep(0.3)  # the server's goodbye reaches the socket
        assert not isinstance(e.value, CommitUnknown)
    assert ev.seen == ["rolled back"]
    assert name not in await _names(adl_pool)


async def test_a_caught_statement_error_is_never_committed_silently(adl_pool: AsyncDataLayerPool) -> None:
    """PostgreSQL answers COMMIT of an aborted transaction with ROLLBACK and no error: the block raises."""
    from datalayer.errors import QueryError

    ev = Events()
    async with aio.connection() as db:
        with pytest.raises(QueryError, match=r"its error was caught inside the block.*nested transaction\(db\)"):
            async with aio.transaction(db):
                kept = await _add_note(db)
                await aio.on_commit(ev.sync("committed"))
                await aio.on_rollback(ev.sync("rolled back"))
                try:
                    await _add_note(db, kept)  # duplicate key: the transaction is now aborted
                except psycopg.errors.UniqueViolation:
                    pass  # swallowed: the COMMIT at the end of the block would silently roll back
        assert ev.seen == ["rolled back"]
        assert kept not in await _names(adl_pool)

        # The idiom that works: the statement that may fail in a savepoint of its own.
        async with aio.transaction(db):
            first = await _add_note(db)
            with pytest.raises(IntegrityConflict):  # translated when it leaves the savepoint's block
                async with aio.transaction(db):
                    await _add_note(db, first)
            second = await _add_note(db)
    assert {first, second} <= await _names(adl_pool)
