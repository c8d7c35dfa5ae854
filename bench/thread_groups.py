"""Group 12, threads: 32 threads sharing one pool, a checkout and a get by id per operation.

The threads are started once (a ThreadPoolExecutor, warmed by the untimed round) and each batch hands
every thread its share of the ids, so no batch pays for starting threads.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from psycopg_pool import ConnectionPool

from bench import alternatives as alt
from bench.common import (
    POOL_SIZE,
    Result,
    Sizes,
    as_throughput,
    chunks,
    datalayer_pool,
    expected_users,
    paired,
    seed_users,
    throughput_target,
)
from bench.env import BenchEnv
from bench.harness import Contender, measure
from datalayer import connection, user_repo

THREADS = 32
CHECKED = 256  # ids every contender must answer correctly (through its threads) before any timing

Task = Callable[[list[int], list[Any] | None], None]


def group_threads_pool(env: BenchEnv, sizes: Sizes) -> list[Result]:
    db = "bench_tpool"
    env.fresh_db(db)
    ids = seed_users(env, db, sizes.users)
    rng = random.Random(3)
    ops = sizes.ops * 4  # 32 threads: enough operations per thread to keep every one of them busy
    sample = [rng.choice(ids) for _ in range(ops)]
    checked = sample[:CHECKED]
    expected = expected_users(env, db, checked)
    conninfo = env.conninfo(db)
    raw_pool: ConnectionPool[Any] = ConnectionPool(
        conninfo, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False, kwargs={"autocommit": True}
    )
    raw_pool.open(wait=True)
    dl_pool = datalayer_pool(env, db, POOL_SIZE)
    # AUTOCOMMIT: one statement per operation, as for the others (SQLAlchemy's default adds BEGIN and
    # ROLLBACK); QueuePool's reset-on-return is then a local no-op.
    engine = alt.engine_for(conninfo, pool_size=POOL_SIZE, max_overflow=0, isolation_level="AUTOCOMMIT")
    stmt = alt.core_select()
    workers = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="bench")

    def floor(chunk: list[int], out: list[Any] | None) -> None:
        for i in chunk:
            with raw_pool.connection() as c:
                row = c.execute(alt.GET_SQL, (i,)).fetchone()
            if out is not None:
                out.append(alt.to_record(row))

    def datalayer(chunk: list[int], out: list[Any] | None) -> None:
        for i in chunk:
            with connection(dl_pool) as db_:
                user = user_repo.get_by_id(db_, i)
            if out is not None:
                out.append(user)

    def core(chunk: list[int], out: list[Any] | None) -> None:
        for i in chunk:
            with engine.connect() as c:
                user = alt.to_record(c.execute(stmt, {"id": i}).one())
            if out is not None:
                out.append(user)

    def spread(task: Task, ids_: list[int], collect: bool) -> list[list[Any]]:
        parts = chunks(ids_, THREADS)
        outs: list[list[Any]] = [[] for _ in parts]
        futures = [workers.submit(task, p, o if collect else None) for p, o in zip(parts, outs, strict=True)]
        for f in futures:
            f.result()
        return outs

    def contender(name: str, task: Task, *, is_floor: bool = False) -> Contender:
        def check() -> bool:
            want = [[expected[i] for i in part] for part in chunks(checked, THREADS)]
            return spread(task, checked, True) == want

        return Contender(name, lambda n: spread(task, sample[:n], False), check, floor=is_floor)

    try:
        rows = measure(
            [
                contender("psycopg_pool ConnectionPool + execute -> tuple", floor, is_floor=True),
                contender("datalayer connection() + get_by_id -> User", datalayer),
                contender("SQLAlchemy QueuePool + Core select -> attrs", core),
            ],
            ops=ops,
            rounds=sizes.rounds,
        )
    finally:
        workers.shutdown()
        engine.dispose()
        dl_pool.close()
        raw_pool.close()
    rows = as_throughput(rows)
    dl, sa = rows[1], rows[2]
    vs_sa = paired(sa, dl)
    return [
        Result(
            "threads_pool",
            f"12. {THREADS} threads, pool checkout + get by id per operation",
            [
                f"ops/s; x floor = time / floor time of the same round; every pool holds {POOL_SIZE} connections",
                f"{ops:,} operations per batch dealt to {THREADS} threads; the same ids for all; "
                "SQLAlchemy engine in AUTOCOMMIT (one statement per operation)",
            ],
            rows,
            [
                throughput_target("datalayer >= 0.9x floor throughput", dl, 0.9),
                ("datalayer >= 2x SQLAlchemy QueuePool + Core throughput", f"{vs_sa:.2f}x", vs_sa >= 2),
            ],
            unit="ops/s",
        )
    ]


__all__ = ["group_threads_pool"]
