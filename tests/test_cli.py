"""The command line mirrors the library: every command against a real database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import clean_env, run_py

from datalayer.pool import DataLayerPool


def _cli(args: list[str], env: dict[str, str]) -> Any:
    return run_py(f"import sys\nfrom datalayer.cli import main\nsys.exit(main({args!r}))", env, timeout=180)


def _env(pool: DataLayerPool) -> dict[str, str]:
    from helpers import url_of

    return clean_env(DATABASE_URL=url_of(pool.target))


def test_status_health_plan_stats(dl_pool: DataLayerPool) -> None:
    env = _env(dl_pool)
    status = _cli(["status", "--json"], env)
    assert status.returncode == 0, status.stderr
    assert [m["id"] for m in json.loads(status.stdout)] == ["0001.core-tables", "0002.system-log", "0003.cache-entries"]
    health = _cli(["health", "--json"], env)
    assert health.returncode == 0 and json.loads(health.stdout)["status"] == "healthy"
    plan = _cli(["plan", "--sql"], env)
    assert plan.returncode == 0 and "-- migration" not in plan.stdout and "datalayer_ensure_log_partition" in plan.stdout
    stats = _cli(["stats", "--json"], env)
    assert stats.returncode == 0 and json.loads(stats.stdout)["users"] == 0
    human = _cli(["stats"], env)
    assert human.returncode == 0 and "users: 0" in human.stdout
    parts = _cli(["partitions", "maintain", "--ahead", "9"], env)
    assert parts.returncode == 0 and "created:" in parts.stdout and "system_log_default" in parts.stdout


def test_backup_restore_cleanup(dl_pool: DataLayerPool, tmp_path: Path) -> None:
    from datalayer import user_repo
    from datalayer.pool import connection

    with connection(dl_pool) as db:
        user_repo.create(db, username="cli_user", email="cli@example.com", hashed_password="h")
    env = _env(dl_pool)
    backup = _cli(["backup", str(tmp_path / "b.json")], env)
    assert backup.returncode == 0, backup.stderr
    assert "users" in backup.stderr and "backup written" in backup.stdout  # progress, then the result
    refused = _cli(["restore", str(tmp_path / "b.json")], env)
    assert refused.returncode == 1 and "BackupError" in refused.stderr and "empty tables" in refused.stderr
    cleanup = _cli(["cleanup", "--days", "30"], env)
    assert cleanup.returncode == 0 and "removed 0 log rows" in cleanup.stdout
    bad = _cli(["cleanup", "--days", "0"], env)
    assert bad.returncode == 1 and "ValidationError" in bad.stderr and "days" in bad.stderr
    reset = _cli(["reset"], env)
    assert reset.returncode == 2 and "--yes" in reset.stderr
    assert _cli(["reset", "--yes"], env).returncode == 0
    restored = _cli(["restore", str(tmp_path / "b.json")], env)
    assert restored.returncode == 0, restored.stderr
    assert "users 1" in restored.stdout


def test_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    r = _cli(["status"], clean_env(DATABASE_URL="mysql://x/y"))
    assert r.returncode == 1 and "ConfigError" in r.stderr and "Traceback" not in r.stderr
    health = _cli(["health"], clean_env(DATABASE_URL="mysql://x/y"))  # health reports, never raises
    assert health.returncode == 1 and "unhealthy" in health.stdout and "DATABASE_URL" in health.stdout
