"""The pytest plugin on a service's own project: its migrations build the template, its prefix names the
databases, and strict records catch what a query returns against what its record says (run as pytest
subprocesses over a tmp project, as a user would run them)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import psycopg
import pytest

from datalayer.pool import DataLayerConnection
from datalayer.project import builtin_migrations_dir
from datalayer.testing import TestServer

pytest_plugins = ["pytester"]

PREFIX = f"svc{os.getpid()}_test"

NOTES_SQL = """\
-- name: create :one
INSERT INTO notes (title, body) VALUES (:'title', :'body')
RETURNING id, title, body;

-- name: get :maybe
SELECT id, title, body FROM notes WHERE id = :note_id;

-- name: count :scalar
SELECT count(*) FROM notes;

-- name: get_blank :one
-- body is NULL here although Note.body is str: what strict records exist to catch.
SELECT id, title, NULL::text AS body FROM notes WHERE id = :note_id;
"""

RECORDS = """\
import attrs


@attrs.frozen
class Note:
    id: int
    title: str
    body: str
"""

REPO = """\
from pathlib import Path

from datalayer import sql

from notes.records import Note

_q = sql.load(Path(__file__).resolve().parent.parent / "sql" / "notes.sql")
_create = _q.bind("create", Note)
_get = _q.bind("get", Note)
_count = _q.bind("count", int)
_get_blank = _q.bind("get_blank", Note)


def create(db, *, title, body):
    return _create.one(db, title=title, body=body)


def get(db, note_id):
    return _get.maybe(db, note_id=note_id)


def count(db):
    return _count.scalar(db)


def get_blank(db, note_id):
    return _get_blank.one(db, note_id=note_id)
"""

TESTS = """\
from notes import repo

PREFIX = "__PREFIX__"


def test_notes_live_in_a_migrated_clone(db):
    note = repo.create(db, title="hello", body="world")
    assert repo.get(db, note.id) == note
    print(f"DBNAME={db.execute('SELECT current_database()').fetchone()[0]}")
    query = "SELECT count(*) FROM pg_database WHERE datistemplate AND datname LIKE %s"
    print(f"TEMPLATES={db.execute(query, (PREFIX + '_tmpl_%',)).fetchone()[0]}")
    builtin = db.execute("SELECT to_regclass('users') IS NOT NULL").fetchone()[0]
    print(f"BUILTIN={builtin}")


def test_each_test_gets_an_empty_clone(db):
    assert repo.count(db) == 0
    repo.create(db, title="one", body="")
    assert repo.count(db) == 1


def test_a_null_body(db):
    note = repo.create(db, title="t", body="b")
    assert repo.get_blank(db, note.id).body is None
"""


def _latest_builtin_migration() -> str:
    ids = [
        p.name.removesuffix(".sql").removesuffix(".py")
        for p in builtin_migrations_dir().iterdir()
        if p.suffix in (".sql", ".py") and not p.name.endswith(".rollback.sql") and not p.name.startswith("post-")
    ]
    return max(ids)


def _project(pytester: pytest.Pytester, *, builtin: bool, ini: str = "") -> Path:
    root = pytester.path
    depends = f"-- depends: {_latest_builtin_migration()}\n" if builtin else ""
    files = {
        "pyproject.toml": f"""\
            [project]
            name = "notes"
            version = "0"

            [tool.datalayer]
            sql = ["sql"]
            migrations = ["migrations"]
            modules = ["notes.repo"]
            builtin = {"true" if builtin else "false"}
            test_database_prefix = "{PREFIX}"

            [tool.pytest.ini_options]
            pythonpath = ["."]
            testpaths = ["tests"]
            {ini}
            """,
        "conftest.py": 'pytest_plugins = ["datalayer.testing"]\n',
        "migrations/0001.notes.sql": depends
        + "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text NOT NULL,"
        " body text NOT NULL);\n",
        "migrations/0001.notes.rollback.sql": "DROP TABLE notes;\n",
        "sql/notes.sql": NOTES_SQL,
        "notes/__init__.py": "",
        "notes/records.py": RECORDS,
        "notes/repo.py": REPO,
        "tests/test_notes.py": TESTS.replace("__PREFIX__", PREFIX),
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text) if name == "pyproject.toml" else text)
    return root


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # The subprocess inherits this run's environment: TEST_DATABASE_URL, TEST_REDIS_URL, DATALAYER_TEST_HOME.
    return pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *args, timeout=300)


def _leftovers(server: TestServer) -> list[str]:
    with psycopg.connect(server.target_for("postgres").conninfo(), autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)).fetchall()
    return [r[0] for r in rows]


@pytest.fixture(autouse=True)
def _no_project_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATALAYER_PROJECT", raising=False)


def test_a_service_project_without_the_builtin_schema(pytester: pytest.Pytester, datalayer_server: TestServer) -> None:
    _project(pytester, builtin=False)
    result = _run(pytester)
    # Strict records are on by default: the NULL body fails its test with the query's location and the field.
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*QueryError: sql/notes.sql:*notes.get_blank*strict records*field body: got None, expected str"
            " (not Optional)*"
        ]
    )
    result.stdout.fnmatch_lines([f"*DBNAME={PREFIX}_*", "*TEMPLATES=1*", "*BUILTIN=False*"])
    assert _leftovers(datalayer_server) == []

    off = _run(pytester, "--datalayer-strict-records=off")
    off.assert_outcomes(passed=3)


def test_a_service_project_on_the_builtin_schema(pytester: pytest.Pytester, datalayer_server: TestServer) -> None:
    _project(pytester, builtin=True, ini="datalayer_strict_records = false")
    result = _run(pytester)
    result.assert_outcomes(passed=3)  # the ini turned strict records off
    result.stdout.fnmatch_lines([f"*DBNAME={PREFIX}_*", "*BUILTIN=True*"])

    on = _run(pytester, "--datalayer-strict-records=on")  # the command line wins over the ini
    on.assert_outcomes(passed=2, failed=1)
    on.stdout.fnmatch_lines(["*strict records*field body: got None*"])
    assert _leftovers(datalayer_server) == []


def test_this_run_is_strict_and_uses_the_default_prefix(db: DataLayerConnection) -> None:
    from datalayer.sql import strict_records

    previous = strict_records(True)
    strict_records(previous)
    assert previous is True
    row = db.execute("SELECT current_database()").fetchone()
    assert row is not None
    assert row[0].startswith(f"datalayer_test_{os.getpid()}_")
