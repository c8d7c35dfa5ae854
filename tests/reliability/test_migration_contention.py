"""Migrations under contention: concurrent migrators, a migrator killed mid-migration, an edited file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest
from helpers import MIGRATION_IDS, ROOT, clean_env, url_of

from datalayer.config import DatabaseTarget

pytestmark = pytest.mark.slow

MIGRATE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import datalayer.migrate as m
    import datalayer.project
    datalayer.project.builtin_migrations_dir = lambda: Path(sys.argv[1])
    print(json.dumps(m.setup_database()), flush=True)
""")


@pytest.fixture
def slow_migrations(tmp_path: Path) -> Path:
    from datalayer._paths import migrations_dir

    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    (copy / "0099.slow.sql").write_text(
        "-- depends: " + MIGRATION_IDS[-1] + "\nCREATE TABLE slow_marker (id int);\nSELECT pg_sleep(30);\n")
    (copy / "0099.slow.rollback.sql").write_text("DROP TABLE slow_marker;\n")
    return copy


def _spawn(directory: Path, target: DatabaseTarget) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", MIGRATE, str(directory)], cwd=ROOT, text=True,
                            env=clean_env(DATABASE_URL=url_of(target)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _conn(target: DatabaseTarget) -> psycopg.Connection[object]:
    return psycopg.connect(target.conninfo(), autocommit=True)


def test_three_concurrent_migrators_apply_each_migration_once(dl_empty_target: DatabaseTarget) -> None:
    from datalayer._paths import migrations_dir

    procs = [_spawn(migrations_dir(), dl_empty_target) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    applied = [json.loads(out) for out, _ in outs]
    assert sorted(map(len, applied)) == [0, 0, len(MIGRATION_IDS)]
    with _conn(dl_empty_target) as c:
        rows = c.execute("SELECT migration_id, count(*) FROM _yoyo_log WHERE operation = 'apply' AND migration_id ~ '^[0-9]' "
                         "GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [(m, 1) for m in MIGRATION_IDS]


def test_kill_9_mid_migration_recovers_by_itself(dl_empty_target: DatabaseTarget, slow_migrations: Path) -> None:
    proc = _spawn(slow_migrations, dl_empty_target)
    deadline = time.monotonic() + 60
    with _conn(dl_empty_target) as c:
        while time.monotonic() < deadline:  # wait until 0004 is running (its pg_sleep is in flight)
            busy = c.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
                             "AND pid <> pg_backend_pid()").fetchone()
            if busy and busy[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the slow migration never started")
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)  # reaps it and closes its pipes
        # the server notices the dead client (client_connection_check_interval) and ends its session by
        # itself: the transaction rolls back and the advisory lock goes; yoyo's lock row stays behind
        killed_at = time.monotonic()
        while c.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
                        "AND pid <> pg_backend_pid()").fetchone() != (0,):
            assert time.monotonic() - killed_at < 10, "the killed migrator's backend is still running"
            time.sleep(0.1)
        assert c.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (1,)
        assert c.execute("SELECT to_regclass('slow_marker')").fetchone() == (None,)
    # the next migrate clears the stale lock (its pid is gone) and applies 0004, here without the sleep
    (slow_migrations / "0099.slow.sql").write_text("-- depends: " + MIGRATION_IDS[-1] + "\nCREATE TABLE slow_marker (id int);\n")
    again = _spawn(slow_migrations, dl_empty_target)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert json.loads(out) == ["0099.slow"]
    assert "cleared a stale migration lock" in err and "no longer exists" in err
    with _conn(dl_empty_target) as c:
        assert c.execute("SELECT to_regclass('slow_marker') IS NOT NULL").fetchone() == (True,)
        assert c.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,)


def test_edited_applied_migration_refused_across_processes(dl_empty_target: DatabaseTarget, slow_migrations: Path) -> None:
    (slow_migrations / "0099.slow.sql").write_text("-- depends: " + MIGRATION_IDS[-1] + "\nCREATE TABLE slow_marker (id int);\n")
    first = _spawn(slow_migrations, dl_empty_target)
    assert first.communicate(timeout=120)[0] and first.returncode == 0
    (slow_migrations / "0099.slow.sql").write_text("-- depends: " + MIGRATION_IDS[-1] + "\nCREATE TABLE slow_marker (id bigint);\n")
    second = _spawn(slow_migrations, dl_empty_target)
    _, err = second.communicate(timeout=120)
    assert second.returncode != 0
    assert "0099.slow changed since it was applied" in err
