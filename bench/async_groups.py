"""Groups 10 and 11, asyncio: get a user by id on a held connection, and 64 tasks sharing one pool.

Each group owns one event loop. The harness stays synchronous: a contender's batch is one
``loop.run_until_complete`` call (a few microseconds per batch of hundreds of operations, the same for
every contender), so the method (paired ratios, rotation, checks before timing) is that of groups 1-9.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncSession

from bench import alternatives as alt
from bench.common import (
    POOL_SIZE,
    Result,
    Sizes,
    as_throughput,
    chunks,
    datalayer_settings,
    expected_users,
    paired,
    seed_users,
    throughput_target,
)
from bench.env import BenchEnv
from bench.harness import Contender, measure
from datalayer import aio
from datalayer.pool_async import AsyncDataLayerPool, open_pool
from datalayer.records import User

T = TypeVar("T")

TASKS = 64  # concurrent tasks in group 11
CHECKED = 64  # ids every contender must answer correctly before anything is timed


def _from_orm(obj: Any) -> User:
    return User(*(getattr(obj, c.strip()) for c in alt.COLUMNS.split(",")))


class _Loop:
    """One event loop for a whole group; ``run`` drives a coroutine to its end from synchronous code.

    It is also the current loop while the group runs (asyncpg's create_pool looks it up), and it closes
    what the group opened, newest first, even when a check fails.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._closers: list[Callable[[], Awaitable[Any]]] = []

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def on_close(self, close: Callable[[], Awaitable[Any]]) -> None:
        self._closers.append(close)

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                self.run(close())
        self.run(self.loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        self.loop.close()


async def _open_datalayer_pool(env: BenchEnv, db: str, size: int) -> AsyncDataLayerPool:
    return await open_pool(datalayer_settings(size), target=env.target(db), wait=True)


# ---------------------------------------------------------------------------- 10: held connection


def group_async_get(env: BenchEnv, sizes: Sizes) -> list[Result]:
    db = "bench_aget"
    env.fresh_db(db)
    ids = seed_users(env, db, sizes.users)
    rng = random.Random(1)
    sample = [rng.choice(ids) for _ in range(sizes.ops)]
    checked = sample[:CHECKED]
    expected = expected_users(env, db, checked)
    conninfo = env.conninfo(db)
    lp = _Loop()
    try:
        raw = lp.run(psycopg.AsyncConnection.connect(conninfo, autocommit=True))
        lp.on_close(raw.close)
        raw_cur = raw.cursor()
        apg = lp.run(asyncpg.connect(**alt.asyncpg_params(conninfo)))
        lp.on_close(apg.close)
        engine = alt.async_engine_for(conninfo, pool_size=1, max_overflow=0)
        lp.on_close(engine.dispose)
        sa_conn = lp.run(engine.connect())
        lp.on_close(sa_conn.close)
        orm = AsyncSession(bind=sa_conn)
        lp.on_close(orm.close)
        dl_pool = lp.run(_open_datalayer_pool(env, db, 1))
        lp.on_close(dl_pool.close)
        held = lp.run(dl_pool.getconn())
        lp.on_close(lambda: dl_pool.putconn(held))

        async def floor(n: int) -> None:
            for i in sample[:n]:
                await raw_cur.execute(alt.GET_SQL, (i,))
                await raw_cur.fetchone()

        async def datalayer(n: int) -> None:
            for i in sample[:n]:
                await aio.user_repo.get_by_id(held, i)

        async def asyncpg_record(n: int) -> None:
            for i in sample[:n]:
                await apg.fetchrow(alt.ASYNCPG_GET_SQL, i)

        async def asyncpg_attrs(n: int) -> None:
            for i in sample[:n]:
                User(*await apg.fetchrow(alt.ASYNCPG_GET_SQL, i))

        async def orm_get(n: int) -> None:
            for i in sample[:n]:
                await alt.orm_get_async(orm, i)

        async def floor_one(i: int) -> User:
            await raw_cur.execute(alt.GET_SQL, (i,))
            return alt.to_record(await raw_cur.fetchone())

        async def asyncpg_one(i: int) -> User:
            return User(*await apg.fetchrow(alt.ASYNCPG_GET_SQL, i))

        async def orm_one(i: int) -> User:
            return _from_orm(await alt.orm_get_async(orm, i))

        def check(one: Callable[[int], Awaitable[Any]]) -> Callable[[], bool]:
            async def every() -> bool:
                return [await one(i) for i in checked] == [expected[i] for i in checked]

            return lambda: lp.run(every())

        def timed(batch: Callable[[int], Coroutine[Any, Any, None]]) -> Callable[[int], None]:
            return lambda n: lp.run(batch(n))

        contenders = [
            Contender("psycopg AsyncConnection execute+fetchone -> tuple", timed(floor), check(floor_one), floor=True),
            Contender(
                "datalayer aio await user_repo.get_by_id -> User",
                timed(datalayer),
                check(lambda i: aio.user_repo.get_by_id(held, i)),
            ),
            Contender("asyncpg fetchrow -> asyncpg.Record", timed(asyncpg_record), check(asyncpg_one)),
            Contender("asyncpg fetchrow -> attrs User(*record)", timed(asyncpg_attrs), check(asyncpg_one)),
            Contender("SQLAlchemy asyncio ORM session.get (held conn)", timed(orm_get), check(orm_one)),
        ]
        rows = measure(contenders, ops=sizes.ops, rounds=sizes.rounds)
    finally:
        lp.close()
    dl, apg_row, apg_attrs, orm_row = rows[1], rows[2], rows[3], rows[4]
    faster = paired(orm_row, dl)
    return [
        Result(
            "async_get",
            "10. asyncio: get one user by primary key -> typed record, held connection",
            [
                "one event loop; one reused autocommit connection per contender; all prepare after 5 executions",
                f"{sizes.users:,} users, random ids, the same ids for every contender; SQLAlchemy on psycopg async",
                f"asyncpg fetchrow: {apg_row.ratio:.2f}x the floor ({apg_attrs.ratio:.2f}x with an attrs record); "
                f"datalayer aio takes {paired(dl, apg_attrs):.2f}x the time of asyncpg -> attrs",
            ],
            rows,
            [
                ("datalayer aio <= 1.10x floor", f"{dl.ratio:.2f}x", (dl.ratio or 9) <= 1.10),
                ("datalayer aio >= 4x faster than SQLAlchemy asyncio ORM", f"{faster:.1f}x", faster >= 4),
            ],
        )
    ]


# ------------------------------------------------------------------------------ 11: 64 tasks, a pool


def group_async_pool(env: BenchEnv, sizes: Sizes) -> list[Result]:
    db = "bench_apool"
    env.fresh_db(db)
    ids = seed_users(env, db, sizes.users)
    rng = random.Random(2)
    ops = sizes.ops * 4  # 64 tasks: enough operations per task to keep every one of them busy
    sample = [rng.choice(ids) for _ in range(ops)]
    checked = sample[: CHECKED * 4]
    expected = expected_users(env, db, checked)
    conninfo = env.conninfo(db)
    lp = _Loop()
    try:
        raw_pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False, kwargs={"autocommit": True}
        )
        lp.run(raw_pool.open(wait=True))
        lp.on_close(raw_pool.close)
        dl_pool = lp.run(_open_datalayer_pool(env, db, POOL_SIZE))
        lp.on_close(dl_pool.close)
        apg_pool = lp.run(asyncpg.create_pool(min_size=POOL_SIZE, max_size=POOL_SIZE, **alt.asyncpg_params(conninfo)))
        lp.on_close(apg_pool.close)

        async def floor(chunk: list[int], out: list[Any] | None) -> None:
            for i in chunk:
                async with raw_pool.connection() as c:
                    row = await (await c.execute(alt.GET_SQL, (i,))).fetchone()
                if out is not None:
                    out.append(alt.to_record(row))

        async def datalayer(chunk: list[int], out: list[Any] | None) -> None:
            for i in chunk:
                async with aio.connection(dl_pool) as conn:
                    user = await aio.user_repo.get_by_id(conn, i)
                if out is not None:
                    out.append(user)

        async def asyncpg_pool(chunk: list[int], out: list[Any] | None) -> None:
            for i in chunk:
                async with apg_pool.acquire() as c:
                    row = await c.fetchrow(alt.ASYNCPG_GET_SQL, i)
                if out is not None:
                    out.append(User(*row))

        TaskFn = Callable[[list[int], list[Any] | None], Coroutine[Any, Any, None]]

        async def gather(task: TaskFn, ids_: list[int], collect: bool) -> list[list[Any]]:
            parts = chunks(ids_, TASKS)
            outs: list[list[Any]] = [[] for _ in parts]
            await asyncio.gather(*(task(p, o if collect else None) for p, o in zip(parts, outs, strict=True)))
            return outs

        def contender(name: str, task: TaskFn, *, is_floor: bool = False) -> Contender:
            def check() -> bool:
                outs = lp.run(gather(task, checked, True))
                want = [[expected[i] for i in part] for part in chunks(checked, TASKS)]
                return outs == want

            return Contender(name, lambda n: lp.run(gather(task, sample[:n], False)), check, floor=is_floor)

        rows = measure(
            [
                contender("psycopg_pool AsyncConnectionPool + execute -> tuple", floor, is_floor=True),
                contender("datalayer aio connection() + get_by_id -> User", datalayer),
                contender("asyncpg pool acquire + fetchrow -> attrs User", asyncpg_pool),
            ],
            ops=ops,
            rounds=sizes.rounds,
        )
    finally:
        lp.close()
    rows = as_throughput(rows)
    return [
        Result(
            "async_pool",
            f"11. asyncio: {TASKS} concurrent tasks, pool checkout + get by id per operation",
            [
                f"ops/s; x floor = time / floor time of the same round; every pool holds {POOL_SIZE} connections",
                f"{ops:,} operations per batch dealt to {TASKS} tasks on one event loop; the same ids for all",
                "asyncpg's pool resets each connection it takes back (its default): one more round trip",
            ],
            rows,
            [throughput_target("datalayer aio >= 0.9x floor throughput", rows[1], 0.9)],
            unit="ops/s",
        )
    ]


__all__ = ["group_async_get", "group_async_pool"]
