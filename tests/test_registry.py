"""The registry of tables: the built-in one matches the migrated catalog, and a service's own tables
are backed up, restored, granted, sized and named in errors like the built-in ones."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from factories import user
from psycopg import sql as pgsql

from datalayer import (
    IntegrityConflict,
    ValidationError,
    backup_database_data,
    get_database_stats,
    restore_database_data,
    user_repo,
)
from datalayer import sql as dlsql
from datalayer.builtin_schema import CONSTRAINT_FIELDS, REGISTRY
from datalayer.pool import DataLayerPool, connection
from datalayer.registry import Registry, Table, register, registry_from_catalog, resolve_registry
from datalayer.roles import create_roles
from datalayer.testing import TestServer, fresh_database

# Built-in entries the catalog cannot give, each for a reason:
NOT_IN_CATALOG = {
    # lower(email): an expression index of the schema before migration 0005 (its rollback restores it)
    "users_email_lower_key",
    # over status, started_at and completed_at: the field a client sets is status
    "data_analyses_lifecycle_check",
    "tool_generations_lifecycle_check",
}
# On a column computed from what the client typed: the catalog names the column, the registry the field.
INPUT_FIELD_DIFFERS = {"users_email_key_key": ("users", "email_key")}

SERVICE_TABLES = """
CREATE TABLE notes (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id bigint REFERENCES users (id) ON DELETE CASCADE,
    title    text NOT NULL,
    body     text,
    CONSTRAINT notes_title_key UNIQUE (title),
    CONSTRAINT notes_title_length CHECK (length(title) BETWEEN 1 AND 100)
);
CREATE TABLE note_tags (
    id      serial PRIMARY KEY,
    note_id bigint NOT NULL REFERENCES notes (id) ON DELETE CASCADE,
    label   text NOT NULL
);
"""

_n = itertools.count()


def test_builtin_registry_matches_the_migrated_catalog(db: Any) -> None:
    catalog = registry_from_catalog(db)
    assert catalog.names == REGISTRY.names  # the same tables, in the same foreign-key order
    assert [t.references for t in catalog.tables] == [t.references for t in REGISTRY.tables]
    expected = {k: v for k, v in CONSTRAINT_FIELDS.items() if k not in NOT_IN_CATALOG} | INPUT_FIELD_DIFFERS
    assert dict(catalog.constraint_fields) == expected
    # every constraint named above exists, and the exceptions are still exceptions
    present = {r[0] for r in db.execute("SELECT conname::text FROM pg_constraint UNION SELECT relname::text "
                                        "FROM pg_class WHERE relkind = 'i'")}
    assert set(CONSTRAINT_FIELDS) - present == {"users_email_lower_key"}


def test_catalog_order_puts_parents_first_ties_by_name(db: Any) -> None:
    db.execute("CREATE TABLE b_parent (id int PRIMARY KEY)")
    db.execute("CREATE TABLE a_child (id int PRIMARY KEY, parent int REFERENCES b_parent (id), "
               "self int REFERENCES a_child (id))")
    names = registry_from_catalog(db).names
    assert names.index("b_parent") < names.index("a_child")
    assert names[:4] == ("b_parent", "a_child", "cache_entries", "cache_invalidations")
    assert registry_from_catalog(db).table("a_child") == Table("a_child", references=("b_parent",))


def _service(db: Any) -> None:
    db.execute(SERVICE_TABLES)


def _service_rows(db: Any) -> None:
    ann = user(db)
    for i in range(3):
        note = db.execute("INSERT INTO notes (owner_id, title, body) VALUES (%s, %s, %s) RETURNING id",
                          (ann.id, f"note {i}", '{"__datalayer__":"end"}\tx\n' if i == 1 else None)).fetchone()
        db.execute("INSERT INTO note_tags (note_id, label) VALUES (%s, %s), (%s, %s)",
                   (note[0], '{"__datalayer__":"end","rows":{}}', note[0], "b"))


def test_service_tables_show_up_in_the_catalog_registry(db: Any) -> None:
    _service(db)
    reg = registry_from_catalog(db)
    names = reg.names
    assert names.index("users") < names.index("notes") < names.index("note_tags")
    assert reg.table("notes") == Table("notes", references=("users",))
    assert reg.constraint_fields["notes_title_key"] == ("notes", "title")
    assert reg.constraint_fields["notes_title_length"] == ("notes", "title")
    assert reg.constraint_fields["notes_owner_id_fkey"] == ("notes", "owner_id")
    assert reg.constraint_fields["note_tags_note_id_fkey"] == ("note_tags", "note_id")
    # the default registry keeps the built-in facts and adds the service's tables
    resolved = resolve_registry(db)
    assert resolved.table("users") == REGISTRY.table("users") and "email_key" in resolved.table("users").derived
    assert resolved.table("notes") is not None and resolved.table("notes").backed_up
    stats = get_database_stats(db)
    assert {"notes", "note_tags", "users", "system_log"} <= set(stats["tables"])
    assert stats["tables"]["notes"]["total_bytes"] > 0


def _dump(db: Any, tables: tuple[str, ...]) -> dict[str, list[Any]]:
    return {t: db.execute(pgsql.SQL("SELECT * FROM {} ORDER BY id").format(pgsql.Identifier(t))).fetchall()
            for t in tables}


def test_service_tables_are_backed_up_and_restored(dl_pool: DataLayerPool, datalayer_server: TestServer,
                                                  tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    with connection(dl_pool) as db:
        _service(db)
        _service_rows(db)
        before = _dump(db, ("users", "notes", "note_tags"))
        backup_database_data(db, path)
    assert b'"notes"' in path.read_bytes().split(b"\n", 1)[0]
    with fresh_database(datalayer_server) as empty, connection(empty) as db2:
        # a database without the service's tables cannot take the backup, and says why
        with pytest.raises(Exception, match="unknown table 'notes'"):
            restore_database_data(db2, path)
        _service(db2)
        counts = restore_database_data(db2, path)
        assert counts["notes"] == 3 and counts["note_tags"] == 6 and counts["users"] == 1
        assert _dump(db2, ("users", "notes", "note_tags")) == before
        # identity and serial sequences moved past the restored ids
        new_note = db2.execute("INSERT INTO notes (title) VALUES ('new') RETURNING id").fetchone()[0]
        assert new_note > max(r[0] for r in before["notes"])
        new_tag = db2.execute("INSERT INTO note_tags (note_id, label) VALUES (%s, 'x') RETURNING id",
                              (new_note,)).fetchone()[0]
        assert new_tag > max(r[0] for r in before["note_tags"])


def test_an_explicit_registry_backs_up_only_its_tables(dl_pool: DataLayerPool, datalayer_server: TestServer,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    only = Registry(tables=(Table("users"), Table("notes", references=("users",))))
    with connection(dl_pool) as db:
        _service(db)
        _service_rows(db)
        backup_database_data(db, path, registry=only)
    with fresh_database(datalayer_server) as empty, connection(empty) as db2:
        _service(db2)
        assert restore_database_data(db2, path, registry=only) == {"users": 1, "notes": 3}
        assert db2.execute("SELECT count(*) FROM note_tags").fetchone() == (0,)


def test_unique_violation_on_a_service_table_names_its_field(db: Any, tmp_path: Path) -> None:
    _service(db)
    (tmp_path / "notes.sql").write_text("-- name: add :exec\nINSERT INTO notes (title) VALUES (:'title');\n")
    add = dlsql.load(tmp_path / "notes.sql").bind("add")
    add.exec(db, title="first")
    with pytest.raises(IntegrityConflict, match=r"notes\.title already exists") as e:
        add.exec(db, title="first")
    assert (e.value.constraint, e.value.field) == ("notes_title_key", "title")
    # a check constraint names no column in PostgreSQL's error: a registered registry does
    with pytest.raises(IntegrityConflict) as e:
        add.exec(db, title="x" * 101)
    assert e.value.field is None
    catalog = registry_from_catalog(db)
    register("tests.catalog", catalog)  # the built-in schema's facts win over the catalog's names for them
    assert resolve_registry(db).constraint_fields["users_email_key_key"] == ("users", "email")
    register(
        "tests.notes",
        Registry(
            tables=tuple(t for t in catalog.tables if t.name == "notes"),
            constraint_fields={c: f for c, f in catalog.constraint_fields.items() if f[0] == "notes"},
        ),
    )
    with pytest.raises(IntegrityConflict, match=r"notes\.title is not allowed") as e:
        add.exec(db, title="x" * 101)
    assert (e.value.constraint, e.value.field) == ("notes_title_length", "title")


@pytest.fixture
def roles(datalayer_server: TestServer) -> Iterator[tuple[str, str]]:
    """Unique role names, dropped after the test's database is gone (roles are cluster-wide)."""
    n = f"{os.getpid()}_{next(_n)}"
    names = (f"dl_reg_app_{n}", f"dl_reg_ro_{n}")
    yield names
    with psycopg.connect(datalayer_server.target.conninfo(), autocommit=True) as c:
        for name in names:
            c.execute(pgsql.SQL("DROP ROLE IF EXISTS {}").format(pgsql.Identifier(name)))


def test_service_tables_get_the_role_grants(roles: tuple[str, str], dl_pool: DataLayerPool) -> None:
    app, ro = roles
    with connection(dl_pool) as db:
        _service(db)
        create_roles(db, app_role=app, readonly_role=ro)

        def can(role: str, table: str, privilege: str) -> bool:
            return bool(db.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege)).fetchone()[0])

        for table in ("notes", "note_tags"):
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                assert can(app, table, privilege), (table, privilege)
            assert can(ro, table, "SELECT") and not can(ro, table, "INSERT")
        assert not can(app, "notes", "TRUNCATE")
        # a serial column's default needs USAGE on its sequence
        assert db.execute("SELECT has_sequence_privilege(%s, 'note_tags_id_seq', 'USAGE')", (app,)).fetchone() == (True,)
        assert db.execute("SELECT has_sequence_privilege(%s, 'note_tags_id_seq', 'USAGE')", (ro,)).fetchone() == (False,)
        # the built-in facts still hold beside them
        assert can(app, "system_log", "INSERT") and not can(app, "system_log", "UPDATE")
        assert not can(ro, "cache_entries", "SELECT")
        assert can(ro, "system_log_default", "SELECT")


# -- a service of its own (builtin = false) with what real schemas hold ------------------------------

WEIRD_SCHEMA = '''
CREATE TABLE "Weird ""Tbl""" (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "Näme" text NOT NULL,
    up     text GENERATED ALWAYS AS (upper("Näme")) STORED,
    CONSTRAINT "weird name uniq" UNIQUE ("Näme")
);
CREATE TABLE "UPPER" (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    weird_id bigint REFERENCES "Weird ""Tbl""" (id),
    qty      int NOT NULL,
    CONSTRAINT qty_pos CHECK (qty > 0)
);
CREATE TABLE cyc_a (id int PRIMARY KEY, b_id int);
CREATE TABLE cyc_b (id int PRIMARY KEY, a_id int REFERENCES cyc_a (id));
ALTER TABLE cyc_a ADD FOREIGN KEY (b_id) REFERENCES cyc_b (id);
CREATE TABLE ev (id bigint, at timestamptz NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE ev_default PARTITION OF ev DEFAULT;
CREATE SCHEMA other;
CREATE TABLE other.things (id int PRIMARY KEY);
CREATE VIEW weird_v AS SELECT id, "Näme" FROM "Weird ""Tbl""";
CREATE TABLE noid (k text PRIMARY KEY, v text);
'''
WEIRD_TABLES = ('Weird "Tbl"', "UPPER", "cyc_a", "cyc_b", "ev", "noid")


class Weird:
    """A migrated builtin = false service: its project and a database it owns (more on request)."""

    def __init__(self, server: TestServer, root: Path) -> None:
        from datalayer.project import find_project

        self.server, self.root = server, root
        (root / "migrations").mkdir(parents=True)
        (root / "pyproject.toml").write_text('[project]\nname = "weird"\n\n[tool.datalayer]\n'
                                             'migrations = ["migrations"]\nbuiltin = false\n')
        (root / "migrations" / "0001.weird.sql").write_text(WEIRD_SCHEMA)
        (root / "migrations" / "0001.weird.rollback.sql").write_text(
            "DROP VIEW weird_v; DROP SCHEMA other CASCADE; DROP TABLE noid, ev, cyc_b, cyc_a, \"UPPER\", "
            '"Weird ""Tbl""" CASCADE;\n')
        self.project = find_project(root)
        self.janitors: list[Any] = []

    def database(self) -> str:
        from datalayer.migrate import setup_database

        name = f"dl_weird_{os.getpid()}_{next(_n)}"
        janitor = self.server.janitor(name)
        janitor.drop()
        janitor.__enter__()
        self.janitors.append(janitor)
        setup_database(target=self.server.target_for(name), project=self.project)
        return name

    def connect(self, name: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self.server.target_for(name).conninfo(), autocommit=True)


@pytest.fixture
def weird(datalayer_server: TestServer, tmp_path: Path) -> Iterator[Weird]:
    w = Weird(datalayer_server, tmp_path / "weird")
    yield w
    for janitor in reversed(w.janitors):
        janitor.__exit__(None, None, None)


def _weird_rows(db: Any) -> None:
    db.execute('INSERT INTO "Weird ""Tbl""" ("Näme") VALUES (\'ä\'), (\'b\')')
    db.execute('INSERT INTO "UPPER" (weird_id, qty) SELECT id, 2 FROM "Weird ""Tbl"""')
    db.execute("INSERT INTO ev VALUES (1, now()); INSERT INTO noid VALUES ('k', 'v'); INSERT INTO other.things VALUES (1)")


def _weird_dump(db: Any) -> dict[str, list[Any]]:
    return {t: sorted(db.execute(pgsql.SQL("SELECT * FROM {}").format(pgsql.Identifier(t))).fetchall(), key=str)
            for t in WEIRD_TABLES}


def test_a_service_backup_leaves_out_generated_columns_and_says_what_it_leaves_out(
        weird: Weird, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "w.backup"
    with weird.connect(weird.database()) as db:
        _weird_rows(db)
        before = _weird_dump(db)
        with caplog.at_level("WARNING", logger="datalayer"):
            assert backup_database_data(db, path, project=weird.project) is False  # not all of the database
    assert "leaves out 1 table(s) outside schema public: other.things" in caplog.text
    from backup_files import Backup
    taken = Backup(path.read_bytes())
    assert taken.header["left_out"] == ["other.things"]
    # parents first; the tables of a foreign-key cycle after the others
    assert taken.header["tables"] == ['Weird "Tbl"', "UPPER", "ev", "noid", "cyc_a", "cyc_b"]
    assert taken.section('Weird "Tbl"')[0]["columns"] == ["id", "Näme"]  # no generated column
    with weird.connect(weird.database()) as db2:
        counts = restore_database_data(db2, path, project=weird.project)
        assert counts == {'Weird "Tbl"': 2, "UPPER": 2, "cyc_a": 0, "cyc_b": 0, "ev": 1, "noid": 1}
        assert _weird_dump(db2) == before  # up computed again by PostgreSQL
    # an explicit registry is the caller's choice of tables: nothing is said to be left out
    with weird.connect(weird.janitors[0].dbname) as db:
        assert backup_database_data(db, path, registry=Registry(tables=(Table("noid"),))) is True


def test_an_older_backup_holding_a_generated_column_restores_without_it(
        weird: Weird, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from backup_files import Backup
    path = tmp_path / "w.backup"
    with weird.connect(weird.database()) as db:
        _weird_rows(db)
        backup_database_data(db, path, project=weird.project)
    old = Backup(path.read_bytes())
    head, rows = old.section('Weird "Tbl"')
    head["columns"] = ["id", "Näme", "up"]  # what an earlier datalayer wrote
    rows[:] = [r[:-1] + b"\tforged\n" for r in rows]
    old.seal(path)
    with weird.connect(weird.database()) as db2, caplog.at_level("WARNING", logger="datalayer"):
        assert restore_database_data(db2, path, project=weird.project)['Weird "Tbl"'] == 2
        assert db2.execute('SELECT "Näme", up FROM "Weird ""Tbl""" ORDER BY id').fetchall() == [
            ("ä", "Ä"), ("b", "B")]
    assert "line 2: the Weird \"Tbl\" section holds the generated column(s) up" in caplog.text


def test_refused_rows_name_their_line_whatever_refuses_them(weird: Weird, tmp_path: Path) -> None:
    from backup_files import Backup

    from datalayer import BackupError
    path = tmp_path / "w.backup"
    with weird.connect(weird.database()) as db:
        _weird_rows(db)
        backup_database_data(db, path, project=weird.project)
    good = Backup(path.read_bytes())
    target = weird.database()

    def refused(damage: Any, match: str) -> BackupError:
        b = Backup(path.read_bytes())
        damage(b)
        b.seal(tmp_path / "bad.backup")
        with weird.connect(target) as db2, pytest.raises(BackupError, match=match) as e:
            restore_database_data(db2, tmp_path / "bad.backup", project=weird.project)
        assert e.value.line is not None
        assert str(e.value).startswith((f"line {e.value.line}:", f"lines {e.value.line}-")), str(e.value)
        return e.value

    # a row a CHECK refuses: COPY names it (header, Weird section 2 rows + 2 markers, UPPER marker, row 1)
    e = refused(lambda b: b.section("UPPER")[1].__setitem__(0, b"1\t1\t0\n"), "qty_pos")
    assert e.line == 7
    # a row whose parent is missing: foreign keys are checked after the last row, so the section's rows
    e = refused(lambda b: b.section("cyc_a")[1].append(b"1\t5\n"), r"Key \(b_id\)=\(5\) is not present")
    assert e.line == 17 and str(e).startswith("lines 17-17: cyc_a rows refused")
    # a column the table does not have, refused before any row: the section header
    e = refused(lambda b: b.section("noid")[0].__setitem__("columns", ["k", "nope"]), "has no column 'nope'")
    assert e.line == 13 == 1 + sum(2 + len(rows) for _, rows in good.sections[:3]) + 1


def test_a_service_constraint_names_its_field_quoted_and_non_ascii(weird: Weird, tmp_path: Path) -> None:
    (tmp_path / "w.sql").write_text('-- name: add :exec\nINSERT INTO "Weird ""Tbl""" ("Näme") VALUES (:\'name\');\n'
                                    '-- name: qty :exec\nINSERT INTO "UPPER" (qty) VALUES (:qty);\n')
    queries = dlsql.load(tmp_path / "w.sql")
    add, qty = queries.bind("add"), queries.bind("qty")
    with weird.connect(weird.database()) as db:
        add.exec(db, name="x")
        # unregistered: PostgreSQL's detail names the column, quoted as an identifier: Key ("Näme")=(x)
        with pytest.raises(IntegrityConflict, match='Weird "Tbl".Näme already exists') as e:
            add.exec(db, name="x")
        assert (e.value.constraint, e.value.field) == ("weird name uniq", "Näme")
        with pytest.raises(IntegrityConflict) as e:
            qty.exec(db, qty=0)
        assert (e.value.constraint, e.value.field) == ("qty_pos", None)
        try:
            register("tests.weird", registry_from_catalog(db))
            with pytest.raises(IntegrityConflict, match=r"UPPER\.qty is not allowed") as e:
                qty.exec(db, qty=0)
            assert (e.value.constraint, e.value.field) == ("qty_pos", "qty")
        finally:
            register("tests.weird", Registry(tables=()))


def test_the_builtin_facts_win_over_a_registered_catalog(db: Any) -> None:
    catalog = registry_from_catalog(db)
    assert catalog.constraint_fields["users_email_key_key"] == ("users", "email_key")
    try:
        register("tests.whole_catalog", catalog)  # the built-in schema's own facts stay
        assert resolve_registry(db).table("users") == REGISTRY.table("users")
        with pytest.raises(IntegrityConflict) as e:
            for name in ("twice1", "twice2"):
                user_repo.create(db, username=name, email="twice@example.com", hashed_password="h")
        assert (e.value.constraint, e.value.field) == ("users_email_key_key", "email")
        # two registries of services that disagree on a constraint are still refused
        register("tests.one", Registry(tables=(), constraint_fields={"svc_key": ("svc", "a")}))
        with pytest.raises(ValidationError, match="svc_key is registered by 'tests.one' as svc.a, not svc.b"):
            register("tests.two", Registry(tables=(), constraint_fields={"svc_key": ("svc", "b")}))
    finally:
        for name in ("tests.whole_catalog", "tests.one"):
            register(name, Registry(tables=()))


def test_stats_of_a_service_without_the_builtin_schema(weird: Weird) -> None:
    from helpers import clean_env, run_py, url_of
    name = weird.database()
    env = clean_env(DATABASE_URL=url_of(weird.server.target_for(name)))
    code = "import sys\nfrom datalayer.cli import main\nsys.exit(main({!r}))"
    human = run_py(code.format(["--project", str(weird.root), "stats"]), env)
    assert human.returncode == 0, human.stderr
    assert "users" not in human.stdout and 'Weird "Tbl"' in human.stdout and "noid" in human.stdout
    js = run_py(code.format(["--project", str(weird.root), "stats", "--json"]), env)
    assert js.returncode == 0 and "users" not in js.stdout and '"UPPER"' in js.stdout, js.stderr


def test_views_get_the_role_grants(roles: tuple[str, str], dl_pool: DataLayerPool) -> None:
    app, ro = roles
    with connection(dl_pool) as db:
        _service(db)
        db.execute("CREATE VIEW note_titles AS SELECT id, title FROM notes")
        db.execute("CREATE VIEW note_title_lengths AS SELECT id, length(title) AS n FROM note_titles")
        db.execute("CREATE MATERIALIZED VIEW note_count AS SELECT count(*) AS n FROM notes")
        db.execute("CREATE VIEW user_names AS SELECT id, username FROM users")
        db.execute("CREATE VIEW recent_logs AS SELECT * FROM system_log")
        create_roles(db, app_role=app, readonly_role=ro)

        def can(role: str, table: str, privilege: str) -> bool:
            return bool(db.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege)).fetchone()[0])

        for view in ("note_titles", "note_title_lengths"):
            assert all(can(app, view, p) for p in ("SELECT", "INSERT", "UPDATE", "DELETE")), view
            assert can(ro, view, "SELECT") and not can(ro, view, "INSERT"), view
        assert can(app, "note_count", "SELECT") and not can(app, "note_count", "INSERT")
        assert can(ro, "note_count", "SELECT")
        # a view runs with its owner's rights: over a table with secret columns the read-only role gets none
        assert can(app, "user_names", "SELECT") and not can(ro, "user_names", "SELECT")
        # over an append-only table the application role may not UPDATE through it
        assert can(app, "recent_logs", "INSERT") and not can(app, "recent_logs", "UPDATE")
        assert can(ro, "recent_logs", "SELECT")
