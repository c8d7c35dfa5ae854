"""Migrations: up/down/up, the checksum ledger, locks, concurrency, plain yoyo, plan, partitions, health."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import MIGRATION_IDS, ROOT, clean_env, url_of

from datalayer import (
    MigrationError,
    ValidationError,
    check_database_health,
    ensure_log_partitions,
    list_log_partitions,
    migration_status,
    plan_sql,
    reset_database,
    setup_database,
)
from datalayer import migrate as migrate_mod
from datalayer import project as project_mod
from datalayer.config import DatabaseTarget, Secret
from datalayer.testing import settings_for_tests

TABLES = {"users", "data_analyses", "analysis_files", "tool_generations", "system_log", "cache_entries"}


def _conn(target: DatabaseTarget) -> psycopg.Connection[Any]:
    return psycopg.connect(target.conninfo(), autocommit=True)


def _tables(target: DatabaseTarget) -> set[str]:
    with _conn(target) as c:
        rows = c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows} & TABLES


def test_up_down_up(dl_empty_target: DatabaseTarget) -> None:
    s = settings_for_tests()
    applied = setup_database(target=dl_empty_target, settings=s)
    assert applied == MIGRATION_IDS
    assert _tables(dl_empty_target) == TABLES
    assert setup_database(target=dl_empty_target, settings=s) == []  # idempotent
    assert migrate_mod.rollback_all(target=dl_empty_target, settings=s) == MIGRATION_IDS[::-1]
    assert _tables(dl_empty_target) == set()
    with _conn(dl_empty_target) as c:
        assert c.execute("SELECT count(*) FROM datalayer_migration_ledger").fetchone() == (0,)
    assert len(setup_database(target=dl_empty_target, settings=s)) == len(MIGRATION_IDS)
    assert _tables(dl_empty_target) == TABLES
    assert all(st.applied and not st.changed for st in migration_status(target=dl_empty_target, settings=s))


def test_reset_requires_confirm(dl_empty_target: DatabaseTarget) -> None:
    s = settings_for_tests()
    setup_database(target=dl_empty_target, settings=s)
    with _conn(dl_empty_target) as c:
        c.execute(
            "INSERT INTO users (username, email, email_key, hashed_password) "
            "VALUES ('keep', 'k@example.com', 'k@example.com', 'h')"
        )
    with pytest.raises(MigrationError, match="confirm=True"):
        reset_database(target=dl_empty_target, settings=s)
    with _conn(dl_empty_target) as c:
        assert c.execute("SELECT count(*) FROM users").fetchone() == (1,)
    reset_database(confirm=True, target=dl_empty_target, settings=s)
    with _conn(dl_empty_target) as c:
        assert c.execute("SELECT count(*) FROM users").fetchone() == (0,)


@pytest.fixture
def migrations_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The built-in migrations as an editable copy (every tool finds the built-in folder through project)."""
    copy = tmp_path / "migrations"
    shutil.copytree(project_mod.builtin_migrations_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(project_mod, "builtin_migrations_dir", lambda: copy)
    return copy


def test_edited_applied_migration_is_refused(dl_empty_target: DatabaseTarget, migrations_copy: Path) -> None:
    s = settings_for_tests()
    setup_database(target=dl_empty_target, settings=s)
    path = migrations_copy / "0003.cache-entries.sql"
    path.write_text(path.read_text() + "\n-- an innocent-looking edit\n")
    (migrations_copy / "0004.more.sql").write_text("CREATE TABLE should_not_appear (id int);\n")
    (migrations_copy / "0004.more.rollback.sql").write_text("DROP TABLE should_not_appear;\n")
    states = {st.id: st for st in migration_status(target=dl_empty_target, settings=s)}
    assert states["0003.cache-entries"].changed
    assert "0003.cache-entries changed since it was applied" in str(states["0003.cache-entries"].problem)
    assert not states["0004.more"].applied
    with pytest.raises(MigrationError, match="0003.cache-entries changed since it was applied"):
        setup_database(target=dl_empty_target, settings=s)
    with _conn(dl_empty_target) as c:
        assert c.execute("SELECT to_regclass('should_not_appear')").fetchone() == (None,)
    health = check_database_health(target=dl_empty_target, settings=s)
    assert health["status"] == "unhealthy" and not health["checks"]["migrations"]["ok"]
    # restoring the file resolves it
    path.write_text(path.read_text().replace("\n-- an innocent-looking edit\n", ""))
    assert setup_database(target=dl_empty_target, settings=s) == ["0004.more"]


def test_crlf_checkout_is_not_a_change(dl_empty_target: DatabaseTarget, migrations_copy: Path) -> None:
    s = settings_for_tests()
    setup_database(target=dl_empty_target, settings=s)
    path = migrations_copy / "0001.core-tables.sql"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert not any(st.changed for st in migration_status(target=dl_empty_target, settings=s))


def test_stale_lock_from_dead_process_is_cleared(
    dl_empty_target: DatabaseTarget, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings_for_tests()
    setup_database(target=dl_empty_target, settings=s)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    with _conn(dl_empty_target) as c:
        c.execute(
            "INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now() AT TIME ZONE 'UTC', %s)", (int(dead.stdout),)
        )
    setup_database(target=dl_empty_target, settings=s)
    assert "cleared a stale migration lock" in caplog.text and "no longer exists" in caplog.text
    with _conn(dl_empty_target) as c:
        assert c.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,)


def test_old_lock_is_cleared(dl_empty_target: DatabaseTarget, caplog: pytest.LogCaptureFixture) -> None:
    s = settings_for_tests()
    setup_database(target=dl_empty_target, settings=s)
    with _conn(dl_empty_target) as c:
        c.execute(
            "INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now() AT TIME ZONE 'UTC' - interval '1 hour', %s)",
            (os.getpid(),),
        )
    setup_database(target=dl_empty_target, settings=s)
    assert "60 minutes old" in caplog.text


def test_concurrent_setup_from_two_processes(dl_empty_target: DatabaseTarget) -> None:
    code = textwrap.dedent("""
        import json
        from datalayer import setup_database
        print(json.dumps(setup_database()))
    """)
    env = clean_env(DATABASE_URL=url_of(dl_empty_target))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    applied = sorted((json.loads(out) for out, _ in outs), key=len)
    assert applied == [[], MIGRATION_IDS]
    with _conn(dl_empty_target) as c:
        assert c.execute("SELECT count(*) FROM _yoyo_migration").fetchone() == (len(MIGRATION_IDS),)


def test_plain_yoyo_apply_with_repo_ini_runs_the_checksum_hook(dl_empty_target: DatabaseTarget) -> None:
    yoyo = Path(sys.executable).parent / "yoyo"
    url = url_of(dl_empty_target).replace("postgresql://", "postgresql+psycopg://", 1)
    r = subprocess.run(
        [str(yoyo), "apply", "--database", url], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0, r.stderr
    assert _tables(dl_empty_target) == TABLES
    with _conn(dl_empty_target) as c:
        ids = [row[0] for row in c.execute("SELECT migration_id FROM datalayer_migration_ledger ORDER BY 1")]
    assert ids == MIGRATION_IDS


def test_plan_prints_pending_sql_without_running(dl_empty_target: DatabaseTarget) -> None:
    s = settings_for_tests()
    sql = plan_sql(target=dl_empty_target, settings=s)
    assert sql.index("-- migration 0001.core-tables") < sql.index("-- migration 0002.system-log")
    assert "CREATE TABLE users" in sql and "CREATE TABLE cache_entries" in sql
    assert "SELECT datalayer_ensure_log_partition(" in sql
    assert "-- python step" in sql  # a Python migration is named, not silently empty
    with _conn(dl_empty_target) as c:  # nothing written, not even yoyo's own tables
        assert c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
    setup_database(target=dl_empty_target, settings=s)
    after = plan_sql(target=dl_empty_target, settings=s)
    assert "-- migration" not in after


def test_status_and_plan_of_an_unreachable_database_are_migration_errors(dl_empty_target: DatabaseTarget) -> None:
    missing = DatabaseTarget(
        params={**dl_empty_target.params, "dbname": "dl_no_such_db"}, password=dl_empty_target.password
    )
    for call in (migrate_mod.migration_status, plan_sql):
        with pytest.raises(MigrationError, match="dl_no_such_db"):
            call(target=missing, settings=settings_for_tests())


def test_bad_partitions_ahead_is_refused_before_migrating(dl_empty_target: DatabaseTarget) -> None:
    with pytest.raises(ValidationError, match="partitions_ahead"):
        setup_database(target=dl_empty_target, settings=settings_for_tests(), partitions_ahead=-1)
    assert _tables(dl_empty_target) == set()


def test_partitions_ahead_and_waiting_rows(db: psycopg.Connection[Any]) -> None:
    today = datetime.now(UTC).date()
    names = {p.name for p in list_log_partitions(db)}
    for i in range(8):
        assert f"system_log_p{today + timedelta(days=i):%Y%m%d}" in names
    assert "system_log_default" in names
    far = datetime.now(UTC) + timedelta(days=20)
    db.execute(
        "INSERT INTO system_log (service, level, message, created_at) VALUES ('svc', 'INFO', 'early', %s)", (far,)
    )
    assert db.execute("SELECT tableoid::regclass::text FROM system_log").fetchone() == ("system_log_default",)
    assert (
        check_database_health(target=db_target(db), settings=settings_for_tests())["checks"]["default_partition"]["ok"]
        is False
    )
    created = ensure_log_partitions(db, ahead=21)
    assert created == 21 - 7
    row = db.execute("SELECT tableoid::regclass::text, message FROM system_log").fetchone()
    assert row == (f"system_log_p{far:%Y%m%d}", "early")
    assert db.execute("SELECT count(*) FROM system_log_default").fetchone() == (0,)
    assert ensure_log_partitions(db, ahead=21) == 0


def db_target(db: psycopg.Connection[Any]) -> DatabaseTarget:
    info = db.info
    return DatabaseTarget(
        params={"host": info.host, "port": str(info.port), "user": info.user, "dbname": info.dbname},
        password=Secret(info.password) if info.password else None,
    )  # the embedded server asks


def test_health_healthy_and_unreachable(db: psycopg.Connection[Any]) -> None:
    report = check_database_health(target=db_target(db), settings=settings_for_tests())
    assert report["status"] == "healthy", report
    assert set(report["checks"]) == {"connect", "migrations", "partitions", "default_partition", "indexes"}
    down = DatabaseTarget(params={"host": "127.0.0.1", "port": "1", "dbname": "x", "user": "u"})
    bad = check_database_health(target=down, settings=settings_for_tests())
    assert bad["status"] == "unhealthy" and not bad["checks"]["connect"]["ok"]


def test_health_reports_missing_partitions_and_invalid_indexes(db: psycopg.Connection[Any]) -> None:
    today = datetime.now(UTC).date()
    tomorrow = f"system_log_p{today + timedelta(days=1):%Y%m%d}"
    db.execute(f"ALTER TABLE system_log DETACH PARTITION {tomorrow}")
    db.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'users_email_key_key'::regclass")
    report = check_database_health(target=db_target(db), settings=settings_for_tests())
    assert report["status"] == "unhealthy"
    assert (today + timedelta(days=1)).isoformat() in report["checks"]["partitions"]["detail"]
    assert "users_email_key_key" in report["checks"]["indexes"]["detail"]


def test_on_delete_cascade_from_users(db: psycopg.Connection[Any]) -> None:
    uid = db.execute(
        "INSERT INTO users (username, email, email_key, hashed_password) "
        "VALUES ('own', 'o@example.com', 'o@example.com', 'h') "
        "RETURNING id"
    ).fetchone()[0]  # type: ignore[index]
    aid = db.execute(
        "INSERT INTO data_analyses (user_id, name, analysis_type) VALUES (%s, 'a', 't') RETURNING id", (uid,)
    ).fetchone()[0]  # type: ignore[index]
    db.execute(
        "INSERT INTO analysis_files (analysis_id, filename, file_type, size_bytes, storage_uri) "
        "VALUES (%s, 'f.csv', 'csv', 1, 's3://b/f.csv')",
        (aid,),
    )
    db.execute("INSERT INTO tool_generations (user_id, tool_type) VALUES (%s, 'chart')", (uid,))
    db.execute("INSERT INTO system_log (service, level, message, user_id) VALUES ('s', 'INFO', 'm', %s)", (uid,))
    db.execute("DELETE FROM users WHERE id = %s", (uid,))
    counts = db.execute(
        "SELECT (SELECT count(*) FROM data_analyses), (SELECT count(*) FROM analysis_files), "
        "(SELECT count(*) FROM tool_generations), (SELECT count(*) FROM system_log)"
    ).fetchone()
    assert counts == (0, 0, 0, 1)  # owned rows go with the user; log lines stay


def test_a_server_that_never_answers_cannot_hang_a_migration() -> None:
    # It accepts the TCP connection and says nothing: a deploy must fail within CONNECT_TIMEOUT, not hang.
    import socket
    import time

    from datalayer.contracts import check_scratch
    from datalayer.errors import DataLayerError

    with socket.create_server(("127.0.0.1", 0)) as mute:
        port = mute.getsockname()[1]
        target = DatabaseTarget(params={"host": "127.0.0.1", "port": str(port), "dbname": "x", "user": "u"})
        s = settings_for_tests(connect_timeout=1)
        calls = [
            lambda: setup_database(target=target, settings=s),
            lambda: migration_status(target=target, settings=s),
            lambda: plan_sql(target=target, settings=s),
        ]
        for call in calls:
            t0 = time.monotonic()
            with pytest.raises(MigrationError):
                call()
            assert time.monotonic() - t0 < 5
        t0 = time.monotonic()
        with pytest.raises(DataLayerError):
            check_scratch(settings_for_tests(connect_timeout=1, database=target))
        assert time.monotonic() - t0 < 5
