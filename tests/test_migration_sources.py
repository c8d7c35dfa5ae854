"""A service's own migrations next to the built-in ones: one ledger, per-source checks, plain yoyo, the rules."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import MIGRATION_IDS, clean_env, url_of

from datalayer import MigrationError, check_database_health, migration_status, plan_sql, setup_database
from datalayer.config import DatabaseTarget
from datalayer.lint import lint_migrations
from datalayer.migrate import ledger_steps, reset_database, rollback_all
from datalayer.project import Project, builtin_migrations_dir, find_project
from datalayer.testing import settings_for_tests

LATEST = MIGRATION_IDS[-1]
LIMITS = "SET LOCAL lock_timeout = '10s';\nSET LOCAL statement_timeout = '10min';\n"
NOTES = LIMITS + "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL);\n"
TAGS_PY = """from yoyo import step

__depends__ = {"0001.notes"}

step("ALTER TABLE notes ADD COLUMN tag text", "ALTER TABLE notes DROP COLUMN tag")
"""
HOOK = "from datalayer.migrate import ledger_steps\n\nledger_steps(__file__)\n"


def make_project(
    root: Path,
    *,
    builtin: bool,
    depends: bool | None = None,
    hook: bool = False,
    folders: tuple[str, ...] = ("migrations",),
) -> Project:
    """A service: pyproject.toml with [tool.datalayer], migrations/0001.notes.sql and its rollback."""
    root.mkdir(parents=True, exist_ok=True)
    names = ", ".join(f'"{f}"' for f in folders)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "svc"\nversion = "0"\n\n[tool.datalayer]\nmigrations = [{names}]\n'
        f"builtin = {'true' if builtin else 'false'}\n"
    )
    for folder in folders:
        (root / folder).mkdir(exist_ok=True)
    folder = root / folders[0]
    header = f"-- depends: {LATEST}\n" if (builtin if depends is None else depends) else ""
    (folder / "0001.notes.sql").write_text(header + "-- The service's notes.\n" + NOTES)
    (folder / "0001.notes.rollback.sql").write_text("DROP TABLE notes;\n")
    if hook:
        (folder / "post-apply.py").write_text(HOOK)
    return find_project(root, environ={})


def _conn(target: DatabaseTarget) -> psycopg.Connection[Any]:
    return psycopg.connect(target.conninfo(), autocommit=True)


def _tables(target: DatabaseTarget) -> set[str]:
    with _conn(target) as c:
        return {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def _ledger(target: DatabaseTarget) -> dict[str, str]:
    with _conn(target) as c:
        return dict(c.execute("SELECT migration_id, source FROM datalayer_migration_ledger").fetchall())


def _yoyo(target: DatabaseTarget, *folders: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Plain `yoyo apply`, as CI would run it."""
    url = url_of(target).replace("postgresql://", "postgresql+psycopg://", 1)
    yoyo = Path(sys.executable).parent / "yoyo"
    return subprocess.run(
        [str(yoyo), "apply", "--batch", "--database", url, *map(str, folders)],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize("builtin", [True, False], ids=["builtin", "service-only"])
def test_migrate_status_plan_health_and_rollback(
    dl_empty_target: DatabaseTarget, tmp_path: Path, builtin: bool
) -> None:
    s, t = settings_for_tests(), dl_empty_target
    p = make_project(tmp_path / "svc", builtin=builtin)
    (p.root / "migrations" / "0002.tags.py").write_text(TAGS_PY)
    builtin_ids = MIGRATION_IDS if builtin else []

    plan = plan_sql(target=t, settings=s, project=p)
    assert "-- migration 0001.notes (migrations/, one transaction)" in plan and "CREATE TABLE notes" in plan
    assert plan.index("-- migration 0001.notes") < plan.index("-- migration 0002.tags")
    if builtin:
        assert plan.index(f"-- migration {LATEST} (built-in") < plan.index("-- migration 0001.notes")
        assert "SELECT datalayer_ensure_log_partition(" in plan
    else:
        assert "built-in" not in plan and "datalayer_ensure_log_partition" not in plan
    assert _tables(t) == set()  # planning writes nothing

    assert setup_database(target=t, settings=s, project=p) == [*builtin_ids, "0001.notes", "0002.tags"]
    assert ("users" in _tables(t)) is builtin and "notes" in _tables(t)
    assert _ledger(t) == {
        **dict.fromkeys(builtin_ids, "datalayer"),
        "0001.notes": "migrations",
        "0002.tags": "migrations",
    }
    states = migration_status(target=t, settings=s, project=p)
    assert [(st.id, st.source) for st in states] == [
        *((mid, "datalayer") for mid in builtin_ids),
        ("0001.notes", "migrations"),
        ("0002.tags", "migrations"),
    ]
    assert all(st.applied and not st.changed and st.problem is None for st in states)
    report = check_database_health(target=t, settings=s, project=p)
    assert report["status"] == "healthy", report
    assert ("partitions" in report["checks"]) is builtin
    assert setup_database(target=t, settings=s, project=p) == []

    assert rollback_all(target=t, settings=s, project=p) == ["0002.tags", "0001.notes", *builtin_ids[::-1]]
    assert not _tables(t) & {"notes", "users", "system_log"}
    assert _ledger(t) == {}


def test_edited_applied_service_files_are_refused(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    s, t = settings_for_tests(), dl_empty_target
    p = make_project(tmp_path / "svc", builtin=True)
    tags = p.root / "migrations" / "0002.tags.py"
    tags.write_text(TAGS_PY)
    setup_database(target=t, settings=s, project=p)
    (p.root / "migrations" / "0003.more.sql").write_text(LIMITS + "CREATE TABLE should_not_appear (id int);\n")
    for edited in (p.root / "migrations" / "0001.notes.sql", tags):  # SQL and Python are both hashed
        original = edited.read_text()
        edited.write_text(original + ("\n-- an edit\n" if edited.suffix == ".sql" else "\n# an edit\n"))
        mid = edited.stem
        with pytest.raises(MigrationError, match=f"{mid} changed since it was applied \\(in migrations/"):
            setup_database(target=t, settings=s, project=p)
        assert "should_not_appear" not in _tables(t)
        states = {st.id: st for st in migration_status(target=t, settings=s, project=p)}
        assert states[mid].changed and not states["0003.more"].applied
        assert not any(st.changed for st in states.values() if st.id != mid)
        health = check_database_health(target=t, settings=s, project=p)
        assert not health["checks"]["migrations"]["ok"] and mid in health["checks"]["migrations"]["detail"]
        edited.write_text(original)
    assert setup_database(target=t, settings=s, project=p) == ["0003.more"]


def test_a_deleted_applied_service_file_is_named(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    s, t = settings_for_tests(), dl_empty_target
    p = make_project(tmp_path / "svc", builtin=False)
    extra = p.root / "migrations" / "0002.gone.sql"
    extra.write_text(LIMITS + "CREATE TABLE gone (id int);\n")
    setup_database(target=t, settings=s, project=p)
    extra.unlink()
    with pytest.raises(MigrationError, match="0002.gone is applied but its file is gone from migrations/"):
        setup_database(target=t, settings=s, project=p)


def test_plain_yoyo_apply_with_both_folders(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    """The CI line: `yoyo apply --batch --database … "$(datalayer path migrations)" ./migrations`."""
    t = dl_empty_target
    p = make_project(tmp_path / "svc", builtin=True, hook=True)
    r = _yoyo(t, builtin_migrations_dir(), Path("migrations"), cwd=p.root)
    assert r.returncode == 0, r.stderr
    assert "is applied but its file is gone" not in r.stderr
    assert {"users", "notes"} <= _tables(t)
    # Both hooks ran: the built-in one recorded its files and made the partitions, the service's its own.
    assert _ledger(t) == {**dict.fromkeys(MIGRATION_IDS, "datalayer"), "0001.notes": "migrations"}
    assert any(name.startswith("system_log_p") for name in _tables(t))
    s = settings_for_tests()
    assert setup_database(target=t, settings=s, project=p) == []
    assert check_database_health(target=t, settings=s, project=p)["status"] == "healthy"

    # An edited applied service file is caught by the service's own hook under plain yoyo too.
    notes = p.root / "migrations" / "0001.notes.sql"
    notes.write_text(notes.read_text() + "-- edited\n")
    (p.root / "migrations" / "0002.more.sql").write_text(LIMITS + "CREATE TABLE more (id int);\n")
    r = _yoyo(t, builtin_migrations_dir(), Path("migrations"), cwd=p.root)
    assert r.returncode != 0 and "0001.notes changed since it was applied" in r.stderr, r.stderr
    # yoyo runs the hook after applying: what it applied is said, and recorded despite the refusal.
    assert "this yoyo apply applied 0002.more (recorded in the ledger: 0002.more)" in r.stderr, r.stderr
    assert "the edited file migrations/0001.notes.sql was refused" in r.stderr
    assert "more" in _tables(t) and _ledger(t)["0002.more"] == "migrations"
    more = p.root / "migrations" / "0002.more.sql"
    more.write_text(more.read_text() + "-- edited too\n")
    with pytest.raises(MigrationError, match="0002.more changed since it was applied"):
        setup_database(target=t, settings=s, project=p)


def test_plain_yoyo_without_a_service_hook_then_migrate_records_it(
    dl_empty_target: DatabaseTarget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t, s = dl_empty_target, settings_for_tests()
    p = make_project(tmp_path / "svc", builtin=True)
    r = _yoyo(t, builtin_migrations_dir(), p.root / "migrations", cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # the built-in hook leaves the service's id alone
    assert _ledger(t) == dict.fromkeys(MIGRATION_IDS, "datalayer")
    with caplog.at_level(logging.WARNING, logger="datalayer"):
        assert setup_database(target=t, settings=s, project=p) == []
    assert _ledger(t)["0001.notes"] == "migrations"
    # The content yoyo applied is unknown: the file is recorded as it is now, and that is said.
    assert "migration 0001.notes (migrations/) was applied at" in caplog.text
    assert "never recorded in the ledger" in caplog.text and "cannot be checked" in caplog.text


def test_plain_yoyo_service_only_with_its_hook(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    t = dl_empty_target
    p = make_project(tmp_path / "svc", builtin=False, hook=True)
    r = _yoyo(t, Path("migrations"), cwd=p.root)
    assert r.returncode == 0, r.stderr
    assert _ledger(t) == {"0001.notes": "migrations"} and "users" not in _tables(t)
    assert check_database_health(target=t, settings=settings_for_tests(), project=p)["status"] == "healthy"


def test_duplicate_ids_are_refused_before_anything_is_applied(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    s, t = settings_for_tests(), dl_empty_target
    p = make_project(tmp_path / "svc", builtin=True)
    (p.root / "migrations" / "0001.core-tables.sql").write_text(f"-- depends: {LATEST}\n" + NOTES)
    with pytest.raises(MigrationError) as e:
        setup_database(target=t, settings=s, project=p)
    msg = str(e.value)
    assert "migration id 0001.core-tables is defined twice" in msg
    assert str(builtin_migrations_dir() / "0001.core-tables.sql") in msg and "migrations/0001.core-tables.sql" in msg
    assert "rename the service's file with a prefix" in msg
    assert _tables(t) == set()
    code, report = lint_migrations(project=p)
    assert code != 0 and "0001.core-tables is defined twice" in report

    # two folders of one service
    q = make_project(tmp_path / "two", builtin=False, folders=("a", "b"))
    (q.root / "b" / "0001.notes.sql").write_text(NOTES)
    with pytest.raises(MigrationError, match="0001.notes is defined twice: a/0001.notes.sql and b/0001.notes.sql"):
        setup_database(target=t, settings=s, project=q)
    assert _tables(t) == set()


def test_builtin_true_needs_the_service_to_depend_on_it(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    s, t = settings_for_tests(), dl_empty_target
    p = make_project(tmp_path / "svc", builtin=True, depends=False)
    (p.root / "migrations" / "0002.more.sql").write_text(LIMITS + "SELECT 1;\n")  # later ones need no depends
    with pytest.raises(MigrationError) as e:
        setup_database(target=t, settings=s, project=p)
    msg = str(e.value)
    assert "migrations/0001.notes.sql is the first migration of migrations/" in msg and "0002.more" not in msg
    assert f"add the line `-- depends: {LATEST}` at its top" in msg
    assert _tables(t) == set()
    code, report = lint_migrations(project=p)
    assert code != 0 and f"-- depends: {LATEST}" in report
    states = {st.id: st for st in migration_status(target=t, settings=s, project=p)}
    assert "first migration of migrations/" in str(states["0001.notes"].problem)

    # Naming any built-in migration is enough; the rule then holds and migrate applies after the built-in ones.
    notes = p.root / "migrations" / "0001.notes.sql"
    notes.write_text("-- depends: 0001.core-tables\n" + notes.read_text())
    assert "first migration" not in lint_migrations(project=p)[1]
    assert setup_database(target=t, settings=s, project=p) == [*MIGRATION_IDS, "0001.notes", "0002.more"]

    # A Python first migration is told about __depends__.
    q = make_project(tmp_path / "py", builtin=True)
    (q.root / "migrations" / "0001.notes.sql").rename(q.root / "migrations" / "0003.notes.sql")
    (q.root / "migrations" / "0001.notes.rollback.sql").unlink()
    (q.root / "migrations" / "0000.first.py").write_text('from yoyo import step\n\nstep("SELECT 1")\n')
    with pytest.raises(MigrationError, match=f'add `__depends__ = {{"{LATEST}"}}` at module level'):
        plan_sql(target=t, settings=s, project=q)


def test_builtin_false_has_no_depends_rule(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    p = make_project(tmp_path / "svc", builtin=False)
    assert setup_database(target=dl_empty_target, settings=settings_for_tests(), project=p) == ["0001.notes"]
    assert lint_migrations(project=p)[1].count("first migration") == 0


def test_switching_builtin_is_refused(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    s, t = settings_for_tests(), dl_empty_target
    with_builtin = make_project(tmp_path / "on", builtin=True)
    setup_database(target=t, settings=s, project=with_builtin)
    without = make_project(tmp_path / "off", builtin=False)
    for call in (setup_database, rollback_all, migration_status, plan_sql):
        with pytest.raises(
            MigrationError,
            match=r"this database was migrated with the built-in schema "
            r"\(builtin = true\); the project now says builtin = false",
        ):
            call(target=t, settings=s, project=without)
    detail = check_database_health(target=t, settings=s, project=without)["checks"]["migrations"]
    assert not detail["ok"] and "builtin = false" in detail["detail"]
    assert "users" in _tables(t) and "notes" in _tables(t)  # nothing was rolled back


def test_builtin_only_database_refuses_a_service_only_project(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    s, t = settings_for_tests(), dl_empty_target
    setup_database(target=t, settings=s, project=Project(root=tmp_path))  # no [tool.datalayer]: built-in only
    without = make_project(tmp_path / "off", builtin=False)
    with pytest.raises(MigrationError, match="migrated with the built-in schema"):
        setup_database(target=t, settings=s, project=without)
    assert "notes" not in _tables(t)


def test_service_only_database_refuses_builtin(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    s, t = settings_for_tests(), dl_empty_target
    setup_database(target=t, settings=s, project=make_project(tmp_path / "off", builtin=False))
    with pytest.raises(
        MigrationError,
        match=r"migrated without the built-in schema \(builtin = false\); the "
        r"project now says builtin = true",
    ):
        setup_database(target=t, settings=s, project=make_project(tmp_path / "on", builtin=True))
    assert "users" not in _tables(t)
    with pytest.raises(MigrationError) as e:  # the key may never have been written: no "again"
        setup_database(target=t, settings=s, project=Project(root=tmp_path / "bare"))
    assert f"set builtin = false in [tool.datalayer] of {tmp_path / 'bare' / 'pyproject.toml'}" in str(e.value)
    assert "again" not in str(e.value)


def test_a_ledger_from_before_sources_gains_the_column(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    s, t = settings_for_tests(), dl_empty_target
    setup_database(target=t, settings=s, project=Project(root=tmp_path))
    with _conn(t) as c:
        c.execute("ALTER TABLE datalayer_migration_ledger DROP COLUMN source")
        before = c.execute("SELECT migration_id, sha256 FROM datalayer_migration_ledger ORDER BY 1").fetchall()
    p = make_project(tmp_path / "svc", builtin=True)
    assert all(
        st.applied and not st.changed
        for st in migration_status(target=t, settings=s, project=p)
        if st.source == "datalayer"
    )  # read without the column
    assert setup_database(target=t, settings=s, project=p) == ["0001.notes"]
    with _conn(t) as c:
        after = c.execute(
            "SELECT migration_id, sha256 FROM datalayer_migration_ledger WHERE source = 'datalayer' ORDER BY 1"
        ).fetchall()
    assert after == before and _ledger(t)["0001.notes"] == "migrations"


def test_stale_lock_is_cleared_for_a_service(
    dl_empty_target: DatabaseTarget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s, t = settings_for_tests(), dl_empty_target
    p = make_project(tmp_path / "svc", builtin=False)
    setup_database(target=t, settings=s, project=p)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    with _conn(t) as c:
        c.execute(
            "INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now() AT TIME ZONE 'UTC', %s)", (int(dead.stdout),)
        )
    (p.root / "migrations" / "0002.more.sql").write_text(LIMITS + "CREATE TABLE more (id int);\n")
    with caplog.at_level(logging.WARNING, logger="datalayer"):
        assert setup_database(target=t, settings=s, project=p) == ["0002.more"]
    assert "cleared a stale migration lock" in caplog.text


def test_ledger_steps_outside_a_post_apply_file_is_explained() -> None:
    with pytest.raises(MigrationError, match="post-apply.py"):
        ledger_steps(__file__)


def test_a_failed_migrate_records_what_it_applied_and_names_the_failure(
    dl_empty_target: DatabaseTarget, tmp_path: Path
) -> None:
    s, t = settings_for_tests(), dl_empty_target
    p = make_project(tmp_path / "svc", builtin=False)
    folder = p.root / "migrations"
    good, bad = folder / "0003.good.sql", folder / "0004.bad.sql"
    good.write_text("-- depends: 0001.notes\n" + LIMITS + "CREATE TABLE t3 (id int);\n")
    (folder / "0003.good.rollback.sql").write_text("DROP TABLE t3;\n")
    bad.write_text("-- depends: 0003.good\n" + LIMITS + "CREATE TABLE t4 (id int);\nSELECT 1/0;\n")
    (folder / "0004.bad.rollback.sql").write_text("DROP TABLE t4;\n")
    with pytest.raises(MigrationError) as e:
        setup_database(target=t, settings=s, project=p)
    msg = str(e.value)
    assert "failed at migration 0004.bad (migrations/0004.bad.sql): division by zero" in msg, msg
    assert "applied and recorded before it: 0001.notes, 0003.good" in msg and "rolled back" in msg
    assert "t3" in _tables(t) and "t4" not in _tables(t)
    assert _ledger(t) == {"0001.notes": "migrations", "0003.good": "migrations"}

    # An edit of the applied 0003.good is caught, though the run that applied it failed.
    good.write_text(good.read_text() + "ALTER TABLE t3 ADD COLUMN x int;\n")
    bad.write_text(bad.read_text().replace("SELECT 1/0;", "SELECT 1;"))
    states = {st.id: st for st in migration_status(target=t, settings=s, project=p)}
    assert states["0003.good"].changed and not states["0004.bad"].applied
    with pytest.raises(MigrationError, match="0003.good changed since it was applied"):
        setup_database(target=t, settings=s, project=p)
    assert "t4" not in _tables(t)


def test_reset_and_rollback_refuse_before_dropping_anything(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    s, t = settings_for_tests(), dl_empty_target
    p = make_project(tmp_path / "svc", builtin=True)
    gone = p.root / "migrations" / "0002.gone.sql"
    gone.write_text("-- depends: 0001.notes\n" + LIMITS + "CREATE TABLE gone (id int);\n")
    (p.root / "migrations" / "0002.gone.rollback.sql").write_text("DROP TABLE gone;\n")
    setup_database(target=t, settings=s, project=p)
    text = gone.read_text()
    gone.unlink()
    for call in (rollback_all, lambda **kw: reset_database(confirm=True, **kw)):
        with pytest.raises(MigrationError, match="0002.gone is applied but its file is gone from migrations/"):
            call(target=t, settings=s, project=p)
        assert {"users", "notes", "gone"} <= _tables(t)  # nothing was dropped
    notes = p.root / "migrations" / "0001.notes.sql"
    gone.write_text(text)
    notes.write_text(notes.read_text() + "-- edited\n")
    with pytest.raises(MigrationError, match="0001.notes changed since it was applied"):
        reset_database(confirm=True, target=t, settings=s, project=p)
    assert {"users", "notes", "gone"} <= _tables(t)


def test_a_partly_rolled_back_builtin_database_stays_builtin(dl_empty_target: DatabaseTarget, tmp_path: Path) -> None:
    """Built-in migrations rolled back from under a service's (as an old reset did) leave a built-in database."""
    from yoyo import read_migrations
    from yoyo.migrations import MigrationList

    from datalayer.migrate import yoyo_backend

    s, t = settings_for_tests(), dl_empty_target
    p = make_project(tmp_path / "svc", builtin=True)
    (p.root / "migrations" / "0002.kept.sql").write_text(LIMITS + "CREATE TABLE kept (id int);\n")
    setup_database(target=t, settings=s, project=p)
    backend = yoyo_backend(t, s)
    try:
        with backend.lock():
            service = MigrationList([m for m in read_migrations(str(p.root / "migrations")) if m.id == "0001.notes"])
            backend.rollback_migrations(backend.to_rollback(service))
            backend.rollback_migrations(backend.to_rollback(read_migrations(str(builtin_migrations_dir()))))
    finally:
        backend.connection.close()
    with _conn(t) as c:
        c.execute("DELETE FROM datalayer_migration_ledger WHERE migration_id <> '0002.kept'")
    assert "users" not in _tables(t) and "kept" in _tables(t)
    without = make_project(tmp_path / "off", builtin=False)
    with pytest.raises(MigrationError, match="migrated with the built-in schema"):
        migration_status(target=t, settings=s, project=without)
    assert setup_database(target=t, settings=s, project=p) == [*MIGRATION_IDS, "0001.notes"]  # recoverable
