"""`datalayer check`: the shipped queries pass; deliberately broken ones fail with the right file:line."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import clean_env, run_py, url_of

from datalayer import check
from datalayer._run import bindings
from datalayer._sql import load_file
from datalayer.contracts import check_contracts

FIXTURES = Path(__file__).parent / "fixtures"


def test_every_shipped_query_matches_its_record(db: psycopg.Connection[Any]) -> None:
    findings = check(db)
    assert findings == [], "\n".join(map(str, findings))


@pytest.fixture
def broken_findings(db: psycopg.Connection[Any]) -> list[str]:
    sys.path.insert(0, str(FIXTURES))
    try:
        module = importlib.import_module("brokenrepo")
    finally:
        sys.path.remove(str(FIXTURES))
    bound = [b for b in bindings() if b.module == module.__name__]
    queries = list(load_file(FIXTURES / "brokenrepo" / "broken.sql").queries.values())
    return [str(f) for f in check_contracts(db, bound, queries)]


def _one(findings: list[str], needle: str) -> str:
    hits = [f for f in findings if needle in f]
    assert len(hits) == 1, f"{needle!r} in:\n" + "\n".join(findings)
    return hits[0]


def test_renamed_column_fails_to_prepare_at_its_line(broken_findings: list[str]) -> None:
    f = _one(broken_findings, "broken.renamed_column")
    assert f.startswith("sql/broken.sql:3 broken.renamed_column: does not prepare")
    assert '"mail" does not exist' in f


def test_not_null_field_fed_by_left_join(broken_findings: list[str]) -> None:
    f = _one(broken_findings, "broken.joined")
    assert f.startswith("sql/broken.sql:6 broken.joined: field 'email': column may be NULL")
    assert "str | None" in f and "-- not-null: email:" in f


def test_missing_parameter(broken_findings: list[str]) -> None:
    f = _one(broken_findings, "broken.missing_param")
    assert f.startswith("sql/broken.sql:10 broken.missing_param (called at ")
    assert "brokenrepo/__init__.py:" in f and "missing parameter(s) :email" in f


def test_wrong_method_and_extra_parameter(broken_findings: list[str]) -> None:
    hits = [f for f in broken_findings if "broken.good" in f]
    assert any("declared :maybe but called with .many()" in f for f in hits), hits
    assert any("parameter(s) extra passed but not used" in f for f in hits), hits


def test_record_fields_and_types(broken_findings: list[str]) -> None:
    f = _one(broken_findings, "broken.renamed_field")
    assert f.startswith("sql/broken.sql:16 broken.renamed_field: result columns do not match Row")
    assert "fields without a column: email" in f and "columns without a field: username" in f
    t = _one(broken_findings, "broken.wrong_type")
    assert t.startswith("sql/broken.sql:19 broken.wrong_type: field 'id': column is text but the field is int")


def test_missing_and_unused_queries(broken_findings: list[str]) -> None:
    _one(broken_findings, "binds query 'ghost', which the file does not define")
    f = _one(broken_findings, "broken.unused")
    assert f.startswith("sql/broken.sql:22 broken.unused: no function uses this query")


def test_cli_check_exit_codes(datalayer_server: Any) -> None:
    env = clean_env(DATABASE_URL=url_of(datalayer_server.target_for("postgres")))
    r = run_py("import sys\nfrom datalayer.cli import main\nsys.exit(main(['check']))", env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every query matches its record" in r.stderr


def test_cli_lint_migrations() -> None:
    r = run_py("import sys\nfrom datalayer.cli import main\nsys.exit(main(['lint-migrations']))", clean_env())
    assert r.returncode == 0, r.stdout + r.stderr


def test_lint_catches_an_unsafe_migration(tmp_path: Path) -> None:
    from datalayer.lint import lint_migrations

    (tmp_path / "0001.bad.sql").write_text(
        "ALTER TABLE users ADD COLUMN age integer NOT NULL DEFAULT 0;\nCREATE INDEX users_age_idx ON users (age);\n"
    )
    (tmp_path / "0001.bad.rollback.sql").write_text("DROP TABLE users;\n")
    code, report = lint_migrations(tmp_path)
    assert code != 0
    assert "require-concurrent-index-creation" in report or "require-lock-timeout" in report
    assert "ban-drop-table" not in report  # allowed in rollback files


# ---------------------------------------------------------------------------------- a service's project


def _service(tmp_path: Path, *, broken: bool) -> tuple[Path, str]:
    """A project outside this repository: its own pyproject.toml, migration, SQL and two binding modules."""
    pkg = f"svc_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "svc"
    for folder in ("sql", "migrations", pkg):
        (root / folder).mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "svc"\nversion = "0"\n\n[tool.datalayer]\nsql = ["sql"]\nmigrations = ["migrations"]\n'
        f'modules = ["{pkg}.repo"]\nbuiltin = false\n'
    )
    (root / "migrations" / "0001.notes.sql").write_text(
        "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text NOT NULL, body text);\n"
    )
    (root / "migrations" / "0001.notes.rollback.sql").write_text("DROP TABLE notes;\n")
    (root / "sql" / "notes.sql").write_text(
        "-- name: get :maybe\nSELECT id, title FROM notes WHERE id = :note_id;\n\n"
        "-- name: count :scalar\nSELECT count(*) FROM notes WHERE title = :'title';\n"
        + ("\n-- name: unused :many\nSELECT id, title FROM notes;\n" if broken else "")
    )
    (root / pkg / "__init__.py").write_text("")
    (root / pkg / "repo.py").write_text(
        "from pathlib import Path\nfrom typing import Any\n\nimport attrs\n\nfrom datalayer import sql\n\n"
        f"from {pkg} import admin  # noqa: F401  (binds the count query)\n\n\n"
        "@attrs.frozen\nclass Note:\n    id: int\n    title: str\n\n\n"
        'notes = sql.load(Path(__file__).parent.parent / "sql")\n_get = notes.bind("get", Note)\n\n\n'
        "def get(db: Any, note_id: int) -> Note | None:\n    return _get.maybe(db, note_id=note_id)\n"
    )
    title = "titel" if broken else "title"
    (root / pkg / "admin.py").write_text(
        "from pathlib import Path\nfrom typing import Any\n\nfrom datalayer import sql\n\n"
        '_count = sql.load(Path(__file__).parent.parent / "sql").bind("count", int)\n\n\n'
        f"def count(db: Any, title: str) -> int:\n    return _count.scalar(db, {title}=title)\n"
    )
    return root, pkg


def test_a_projects_queries_bound_in_a_second_module_are_checked(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    from datalayer.project import load_project

    root, pkg = _service(tmp_path, broken=True)
    db.execute((root / "migrations" / "0001.notes.sql").read_text())
    findings = [str(f) for f in check(db, project=load_project(root))]
    assert len(findings) == 3, "\n".join(findings)
    assert any(
        f.startswith(f"sql/notes.sql:4 notes.count (called at {pkg}/admin.py:10)")
        and "missing parameter(s) :title" in f
        for f in findings
    ), findings
    assert any(f.startswith("sql/notes.sql:7 notes.unused: no function uses this query") for f in findings)
    # Nothing of the built-in schema: the project says builtin = false.
    assert not [f for f in findings if "users" in f]


def test_cli_check_of_a_service_fails_at_the_renamed_column(datalayer_server: Any, tmp_path: Path) -> None:
    root, _ = _service(tmp_path, broken=False)
    env = clean_env(DATABASE_URL=url_of(datalayer_server.target_for("postgres")))
    code = f"import sys\nfrom datalayer.cli import main\nsys.exit(main(['--project', {str(root)!r}, 'check']))"
    r = run_py(code, env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    migration = root / "migrations" / "0001.notes.sql"
    migration.write_text(migration.read_text().replace("title text", "heading text"))
    r = run_py(code, env, timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sql/notes.sql:2 notes.get: does not prepare" in r.stdout, r.stdout + r.stderr


def test_a_module_that_cannot_import_is_a_finding(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    from datalayer.project import Project

    project = Project(root=tmp_path, modules=("no_such_module_for_check",), builtin=False)
    (f,) = check(db, project=project)
    assert f.location == "no_such_module_for_check"
    assert "cannot import module no_such_module_for_check: ModuleNotFoundError" in f.message


def test_a_service_sees_no_notes_about_datalayers_own_queries(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    from datalayer.project import Project

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'svc'\n")
    findings = check(db, project=Project(root=tmp_path, builtin=True), notes=True)
    assert findings == [], "\n".join(map(str, findings))
    # Run from the datalayer checkout itself, its repositories are the project's own: their notes show.
    own = check(db, project=Project(root=Path(__file__).parents[1], builtin=True), notes=True)
    assert own and all(f.note for f in own), "\n".join(map(str, own))


def test_async_call_sites_are_checked_like_sync_ones(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    """``await q.amaybe(db, ...)`` is a call of ``maybe``: parameters and cardinality are checked."""
    from datalayer.project import load_project

    root, pkg = _service(tmp_path, broken=False)
    (root / pkg / "admin.py").write_text(
        "from pathlib import Path\nfrom typing import Any\n\nfrom datalayer import sql\n\n"
        '_count = sql.load(Path(__file__).parent.parent / "sql").bind("count", int)\n\n\n'
        "async def count(db: Any, title: str) -> int:\n    return await _count.ascalar(db, titel=title)\n\n\n"
        "async def every(db: Any, title: str) -> list[int]:\n    return await _count.amany(db, title=title)\n"
    )
    db.execute((root / "migrations" / "0001.notes.sql").read_text())
    findings = [str(f) for f in check(db, project=load_project(root))]
    assert any(f"called at {pkg}/admin.py:10" in f and "missing parameter(s) :title" in f for f in findings), findings
    assert any(
        f"called at {pkg}/admin.py:14" in f and "declared :scalar but called with .amany(); use .ascalar()" in f
        for f in findings
    ), findings
    assert not [f for f in findings if "used as a value" in f or "unverifiable" in f], findings
