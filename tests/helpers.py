"""Small helpers shared by tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datalayer._environ import DATABASE_ROUTING
from datalayer.config import DATABASE_VARIABLES, REDIS_VARIABLES, DatabaseTarget

ROOT = Path(__file__).resolve().parent.parent

DATABASE_VARS = DATABASE_VARIABLES + DATABASE_ROUTING
REDIS_VARS = REDIS_VARIABLES
# The built-in migrations in the order they apply (ids sort in dependency order), read from the folder.
MIGRATION_IDS = sorted(
    p.name.removesuffix(p.suffix) for p in (ROOT / "migrations").iterdir()
    if p.suffix in (".sql", ".py") and not p.name.startswith("post-apply") and ".rollback." not in p.name
)


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment minus every datalayer setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in DATABASE_VARS + REDIS_VARS}
    env.pop("DATALAYER_EMBEDDED", None)
    env.pop("DATALAYER_PROJECT", None)
    env.update(extra)
    return env


def url_of(target: DatabaseTarget) -> str:
    """A postgresql:// URL (password included) for a target, for subprocesses."""
    p = target.params
    auth = p.get("user", "postgres")
    if target.password is not None:
        auth += ":" + target.password.value
    host = p.get("host", "")
    if host.startswith("/"):
        return f"postgresql://{auth}@/{p['dbname']}?host={host}&port={p.get('port', '5432')}"
    return f"postgresql://{auth}@{host}:{p.get('port', '5432')}/{p['dbname']}"


def direct_target(pool: Any) -> DatabaseTarget:
    """``pool``'s database on the server itself, not through the session's PgBouncer (TEST_PGBOUNCER=1):
    for tests that log in as roles they create, which that bouncer does not know."""
    return pool.settings.direct or pool.target  # type: ignore[no-any-return]


def pool_env(pool: Any) -> dict[str, str]:
    """The database variables that reach ``pool``'s database the way it does (behind a transaction
    pooler when TEST_PGBOUNCER=1), for subprocesses."""
    env = {"DATABASE_URL": url_of(pool.target)}
    if pool.settings.pooler != "none":
        env["DATABASE_POOLER"] = pool.settings.pooler
        env["DATABASE_DIRECT_URL"] = url_of(pool.settings.direct)
    return env


def run_py(code: str, env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run Python code in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", code], env=dict(env), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)


def wait_idle(pool: Any, timeout: float = 10.0) -> None:
    """Wait until every connection of ``pool`` is back in it (no leak), or fail with its stats."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = pool.get_stats()
        if stats.get("pool_size", 0) == stats.get("pool_available", 0):
            return
        time.sleep(0.02)
    raise AssertionError(f"pool not idle: {pool.get_stats()}")

