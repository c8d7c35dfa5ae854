"""What every group module shares: the sizes a run uses, the result a group returns, seeded users, a pool.

The groups live in several modules (``groups``, ``async_groups``, ``thread_groups``); the registry
(``groups.GROUPS``) imports them all, so none of them may import ``groups``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg

from bench.alternatives import COLUMNS
from bench.env import BenchEnv
from bench.harness import Row, render
from datalayer.pool import DataLayerPool, open_pool
from datalayer.records import User
from datalayer.testing import settings_for_tests


@dataclass
class Result:
    key: str
    title: str
    notes: list[str]
    rows: list[Row]
    targets: list[tuple[str, str, bool]] = field(default_factory=list)  # (target, measured, met)
    unit: str = "us/op"

    def text(self) -> str:
        out = render(self.title, self.notes, self.rows, unit=self.unit)
        for target, measured, met in self.targets:
            out += f"\n   target {target}: {measured} -> {'MET' if met else 'MISSED'}"
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "notes": self.notes,
            "rows": [r.as_dict() for r in self.rows],
            "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in self.targets],
        }


@dataclass
class Sizes:
    quick: bool
    users: int
    ops: int
    rounds: int
    bulk_rows: int
    bulk_rounds: int
    retention_per_day: int
    log_small: int
    backup_rows: int

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(
                True,
                users=2000,
                ops=200,
                rounds=3,
                bulk_rows=5000,
                bulk_rounds=1,
                retention_per_day=300,
                log_small=20_000,
                backup_rows=20_000,
            )
        return cls(
            False,
            users=100_000,
            ops=1000,
            rounds=11,
            bulk_rows=100_000,
            bulk_rounds=3,
            retention_per_day=33_000,
            log_small=1_000_000,
            backup_rows=1_000_000,
        )


# Every pool of the concurrent groups (11: 64 tasks, 12: 32 threads) holds exactly this many connections.
POOL_SIZE = 8


def datalayer_settings(size: int) -> Any:
    """datalayer settings for a pool of exactly ``size`` connections, all opened up front."""
    return settings_for_tests(pool_size=size, pool_min_size=size, max_overflow=0, statement_timeout="0")


def datalayer_pool(env: BenchEnv, db: str, size: int = 1) -> DataLayerPool:
    return open_pool(datalayer_settings(size), target=env.target(db), wait=True)


def seed_users(env: BenchEnv, db: str, n: int) -> list[int]:
    with psycopg.connect(env.conninfo(db), autocommit=True) as c:
        with c.cursor().copy("COPY users (username, email, email_key, hashed_password) FROM STDIN") as cp:
            for i in range(n):
                e = f"user{i}@example.com"
                cp.write_row((f"user{i}", e, e, "$argon2id$v=19$m=65536,t=3,p=4$x$y"))
        c.execute("ANALYZE users")
        return [r[0] for r in c.execute("SELECT id FROM users")]


def expected_users(env: BenchEnv, db: str, ids: list[int]) -> dict[int, User]:
    """The record every contender must return for each id (read by plain psycopg, before any timing)."""
    with psycopg.connect(env.conninfo(db), autocommit=True) as c:
        rows = c.execute(f"SELECT {COLUMNS} FROM users WHERE id = ANY(%s)", (ids,)).fetchall()
    found = {row[0]: User(*row) for row in rows}
    if set(found) != set(ids):
        raise AssertionError(f"users missing from {db}: {sorted(set(ids) - set(found))[:5]}")
    return found


def chunks(ids: list[int], parts: int) -> list[list[int]]:
    """``ids`` dealt round-robin into ``parts`` lists: the share of each task or thread."""
    return [ids[k::parts] for k in range(parts)]


def as_throughput(rows: list[Row]) -> list[Row]:
    """The same rows in operations per second (``x floor`` stays time / floor time of the same round)."""
    return [replace(r, us_per_op=1e6 / r.us_per_op, note=f"{r.us_per_op:.1f} us/op {r.note}".strip()) for r in rows]


def paired(slow: Row, fast: Row) -> float:
    """How many times faster ``fast`` is than ``slow``: the median over rounds of their time ratio in the
    same round (as ``x floor`` is), steadier on a busy machine than a ratio of two medians."""
    return statistics.median(a / b for a, b in zip(slow.samples, fast.samples, strict=True))


def throughput_target(label: str, row: Row, at_least: float) -> tuple[str, str, bool]:
    """A target on throughput relative to the floor: the inverse of the median paired time ratio."""
    got = 1 / (row.ratio or 1e9)
    return (label, f"{got:.2f}x", got >= at_least)


__all__ = [
    "POOL_SIZE",
    "Result",
    "Sizes",
    "as_throughput",
    "chunks",
    "datalayer_pool",
    "datalayer_settings",
    "expected_users",
    "paired",
    "seed_users",
    "throughput_target",
]
