"""Group 13, scale: read throughput from 4 client processes, reported (not targeted) on a 2-CPU machine.

Each process holds a datalayer pool and reads users by id, one pool checkout per read (a request's
pattern). Contenders, side by side in the same rounds:

- the primary alone, direct (the floor);
- ``connection(replica=True)`` with one streaming replica (``pg_basebackup -R`` of the bench's own
  embedded server), every read on the replica;
- ``connection(replica=True)`` with two of the processes on the primary (``replica=False``): the
  read load spread over both servers;
- the primary through PgBouncer in transaction mode (``DATABASE_POOLER=transaction``).

The processes start once per contender and are warmed (each read checked against psycopg's answer,
and the replica's reads checked to run in recovery) before any timing.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import attrs
import psycopg

from bench.common import Result, Sizes, as_throughput, chunks, expected_users, seed_users
from bench.env import BenchEnv
from bench.harness import Contender, measure
from datalayer import connection, user_repo
from datalayer._testing_pgbouncer import PgBouncer, pgbouncer_binary
from datalayer._testing_replica import StreamingReplica
from datalayer.config import DatabaseTarget, Settings
from datalayer.pool import open_pool

PROCS = 4
POOL = 2  # connections per client process


def _client(settings: Settings, replica: bool, pipe: Connection) -> None:
    """A client process: reads the ids it is sent, answers with the rows' ids (warm-up) or the count."""
    pool = open_pool(settings, wait=True)
    try:
        while (job := pipe.recv()) is not None:
            ids, check = job
            got = []
            for i in ids:
                with connection(pool, replica=replica) as db:
                    user = user_repo.get_by_id(db, i)
                    if check:
                        got.append((user.id if user else None, db.execute("SELECT pg_is_in_recovery()").fetchone()))
            pipe.send(got if check else len(ids))
    finally:
        pool.close()


class _Clients:
    """PROCS client processes, started once; ``run`` hands each its share of the ids and waits for all."""

    def __init__(self, settings: Settings, replicas: list[bool]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        for replica in replicas:
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_client, args=(settings, replica, theirs), daemon=True)
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)

    def run(self, ids: list[int], *, check: bool = False) -> list[Any]:
        for pipe, share in zip(self.pipes, chunks(ids, len(self.pipes)), strict=True):
            pipe.send((share, check))
        return [pipe.recv() for pipe in self.pipes]

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for proc in self.procs:
            proc.join(30)


def _warm(clients: _Clients, ids: list[int], expected: dict[int, Any], on_replica: list[bool]) -> None:
    """Every read right, and the replica's readers really on the replica (its first check takes a moment)."""
    deadline = time.monotonic() + 30
    while True:
        answers = clients.run(ids, check=True)
        wrong = [i for part in answers for i, _ in part if i not in expected]
        if wrong:
            raise AssertionError(f"wrong users read: {wrong[:5]}")
        placed = [all(row == (want,) for _, row in part) for part, want in zip(answers, on_replica, strict=True)]
        if all(placed):
            return
        if time.monotonic() > deadline:
            raise AssertionError("the replica readers did not reach the replica within 30 s")
        time.sleep(0.5)


@contextmanager
def _contender(
    name: str, settings: Settings, readers: list[bool], ids: list[int], expected: dict[int, Any]
) -> Iterator[Contender]:
    clients = _Clients(settings, readers)
    try:
        _warm(clients, ids[:64], expected, [r and bool(settings.replicas) for r in readers])

        def batch(n: int) -> None:
            clients.run(ids[:n])

        yield Contender(name, batch, floor=not any(readers) and settings.pooler == "none")
    finally:
        clients.close()


def _caught_up(env: BenchEnv, replica: StreamingReplica) -> None:
    with psycopg.connect(env.conninfo("postgres"), autocommit=True) as c:
        lsn = c.execute("SELECT pg_current_wal_lsn()").fetchone()
    deadline = time.monotonic() + 60
    while not replica.sql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn[0] if lsn else '0/0'}'::pg_lsn"):
        if time.monotonic() > deadline:
            raise AssertionError("the replica did not catch up within 60 s")
        time.sleep(0.1)


def group_scale(env: BenchEnv, sizes: Sizes) -> list[Result]:
    notes = [
        f"{PROCS} client processes, a pool of {POOL} each, one checkout per read; not pinned (three servers "
        "and four clients share the machine's CPUs); reported, not targeted"
    ]
    if env.prefix:
        return [
            Result(
                "scale",
                "13. read throughput: replicas and PgBouncer",
                [*notes, "skipped: a shared server (DATABASE_URL) gets no streaming replica of ours"],
                [],
            )
        ]
    db = "bench_scale"
    target = env.fresh_db(db)
    ids = seed_users(env, db, sizes.users)
    rng = random.Random(13)
    sample = [rng.choice(ids) for _ in range(sizes.ops * 4)]
    expected = expected_users(env, db, sample[:256])
    base = Settings(database=target, pool_size=POOL, pool_min_size=POOL, max_overflow=0, home=env.root)
    pgdata = Path(env.admin["host"])
    shutil.rmtree(pgdata.parent / "replica", ignore_errors=True)
    with ExitStack() as stack:
        replica = StreamingReplica(pgdata, env.target(db), env.dbname(db))
        stack.callback(replica.close)
        _caught_up(env, replica)
        # Its unix socket, as the primary's: TCP would cost the replica's reads alone a loopback hop.
        local = attrs.evolve(replica.target, params={**replica.target.params, "host": str(replica.datadir)})
        with_replica = attrs.evolve(base, replicas=(local,))
        contenders = [
            ("primary alone, direct", base, [False] * PROCS),
            ("replica=True, 1 replica: every read on it", with_replica, [True] * PROCS),
            ("replica=True for 2 of 4 processes: both servers read", with_replica, [True, False] * (PROCS // 2)),
        ]
        if pgbouncer_binary() is not None:
            bouncer = PgBouncer(pgdata.parent / "pgbouncer", env.admin_target, session=base.session_settings())
            bouncer.start()
            stack.callback(bouncer.stop)
            through: DatabaseTarget = attrs.evolve(bouncer.target_for(env.dbname(db)), password=target.password)
            pooled = attrs.evolve(base, database=through, pooler="transaction", direct=target)
            contenders.append(("primary through PgBouncer (transaction mode)", pooled, [False] * PROCS))
        else:
            notes.append("PgBouncer not installed (apt-get install pgbouncer): its row is missing")
        entered = [stack.enter_context(_contender(n, s, r, sample, expected)) for n, s, r in contenders]
        rows = as_throughput(measure(entered, ops=len(sample), rounds=sizes.rounds))
    notes.append(
        f"{len(sample)} reads per round, split over the processes; ops/s is the whole round's; x floor is a "
        "time ratio (above 1: slower); the servers over unix sockets, PgBouncer over loopback TCP"
    )
    return [Result("scale", "13. read throughput: replicas and PgBouncer", notes, rows, unit="ops/s")]
