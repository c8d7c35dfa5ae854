"""Hostile backup files that pass their own checksums (hypothesis): lines inserted, replaced or dropped
inside a section, then every count and sha256 recomputed, as a careful attacker or a broken tool would.

Whatever the damage, a restore either refuses with a datalayer error and writes nothing, or reports
exactly the rows each table holds afterwards.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from backup_files import Backup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datalayer import DataLayerError, backup_database_data, restore_database_data, system_log_repo, transaction
from datalayer.builtin_schema import REGISTRY
from datalayer.pool import DataLayerPool, connection
from datalayer.repos.system_log import LogEvent

BACKUP_TABLES = tuple(t.name for t in REGISTRY.backed_up)


@pytest.fixture(scope="module")
def backup(dl_module_pool: DataLayerPool, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from factories import analysis, user

    path = tmp_path_factory.mktemp("backup") / "b.json"
    with connection(dl_module_pool) as db:
        people = [user(db) for _ in range(3)]
        analysis(db, people[0])
        system_log_repo.bulk_insert(db, [LogEvent(service="s", level="INFO", message=f"m{i}") for i in range(3)])
        backup_database_data(db, path)
        with transaction(db):
            for t in reversed(BACKUP_TABLES):
                db.execute(f"DELETE FROM {t}")
    return path.read_bytes()


class _Undo(Exception):
    pass


lines = st.one_of(
    st.sampled_from([b"\\.\n", b"\\.\t\n", b"\n", b"\t\n", b"\\N\n", b"\\\\.\n", b"\\.x\n",
                     b'{"__datalayer__":"end_table","name":"users","rows":0,"sha256":""}\n',
                     b'{"__datalayer__":"table","name":"users","columns":["id"]}\n']),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\n"),
)
edits = st.tuples(st.sampled_from(BACKUP_TABLES), st.sampled_from(["insert", "replace", "drop", "duplicate"]),
                  st.integers(min_value=0, max_value=10), lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(edit=edits)
def test_resealed_damage_is_refused_or_counted_exactly(dl_module_pool: DataLayerPool, backup: bytes,
                                                       tmp_path_factory: pytest.TempPathFactory,
                                                       edit: tuple[Any, ...]) -> None:
    table, kind, at, line = edit
    b = Backup(backup)
    _, rows = b.section(table)
    i = at % (len(rows) + 1)
    if kind == "insert":
        rows.insert(i, line)
    elif rows and kind == "replace":
        rows[i % len(rows)] = line
    elif rows and kind == "drop":
        del rows[i % len(rows)]
    elif rows:
        rows.insert(i, rows[i % len(rows)])
    path = tmp_path_factory.getbasetemp() / f"resealed-{os.getpid()}.json"
    b.seal(path)
    with connection(dl_module_pool) as db:
        try:
            with transaction(db):  # the restore's own transaction becomes a savepoint we always undo
                try:
                    counts = restore_database_data(db, path)
                except DataLayerError:
                    for t in BACKUP_TABLES:
                        assert db.execute(f"SELECT count(*) FROM {t}").fetchone() == (0,), f"{t} half-written"
                    raise _Undo from None
                held = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in BACKUP_TABLES}
                assert counts == held, f"reported {counts}, stored {held}"
                raise _Undo
        except _Undo:
            pass
