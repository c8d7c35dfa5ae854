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
    with pytest.raises(ValidationError, match="users_email_key_key is registered by 'datalayer'"):
        register("tests.catalog", catalog)  # the whole catalog would rename the built-in schema's facts
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
