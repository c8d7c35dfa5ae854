"""The facts of the backup format, shared by the writer (backup.py) and the reader (_restore.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from datalayer.errors import BackupError, ValidationError
from datalayer.registry import Registry

# 2: users carry email_key (migration 0005). Format 1 files are still read: the key is computed.
BACKUP_FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CONTROL_PREFIX = b'{"__datalayer__":'

Progress = Callable[[str, int], object]


def control(kind: str, **fields: Any) -> bytes:
    """One JSON control line."""
    return orjson.dumps({"__datalayer__": kind, **fields}) + b"\n"


def columns_of(db: psycopg.Connection[Any], table: str) -> list[str]:
    """The table's stored columns in the database, in their order: generated columns are left out, as
    PostgreSQL computes them (and COPY cannot write them)."""
    return [c for c, generated in _columns(db, table) if not generated]


def generated_columns_of(db: psycopg.Connection[Any], table: str) -> list[str]:
    """The table's generated columns (``GENERATED ALWAYS AS (...)``), in their order."""
    return [c for c, generated in _columns(db, table) if generated]


def _columns(db: psycopg.Connection[Any], table: str) -> list[tuple[str, bool]]:
    rows = db.execute(
        "SELECT attname::text, attgenerated <> '' FROM pg_catalog.pg_attribute "
        "WHERE attrelid = pg_catalog.to_regclass(pg_catalog.format('%%I', %s::text)) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    return [(str(r[0]), bool(r[1])) for r in rows]


def copy_sql(table: str, columns: list[str], direction: str, *, into: str | None = None) -> sql.Composed:
    """COPY of ``columns`` of ``table`` to STDOUT, or from STDIN (into the table ``into`` if given)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    if direction == "TO":  # the SELECT form: COPY cannot read a partitioned table directly
        return sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, sql.Identifier(table))
    dest = sql.SQL("pg_temp.{}").format(sql.Identifier(into)) if into else sql.Identifier(table)
    return sql.SQL("COPY {} ({}) FROM STDIN").format(dest, cols)


def check_path(path: object) -> Path:
    """``path`` as a Path, or ValidationError naming ``path``."""
    if not isinstance(path, str | os.PathLike) or isinstance(path, bytes):
        raise ValidationError({"path": f"must be a str or os.PathLike, got {type(path).__name__}"})
    p = Path(path)
    if "\x00" in str(p) or not str(p) or str(p) == ".":
        raise ValidationError({"path": "must be a file path without NUL characters"})
    return p


def require_schema(db: psycopg.Connection[Any], registry: Registry, doing: str) -> None:
    """BackupError unless the database is migrated and holds every table of ``registry``."""
    missing = [
        t
        for t in ("_yoyo_migration", *(t.name for t in registry.backed_up))
        if db.execute("SELECT pg_catalog.to_regclass(pg_catalog.format('%%I', %s::text))", (t,)).fetchone() == (None,)
    ]
    if missing or not registry.backed_up:
        what = f"table {missing[0]} does not exist" if missing else "it holds no tables"
        raise BackupError(
            f"cannot {doing} {db.info.dbname}: it is not migrated ({what}); "
            "run `datalayer migrate` (setup_database()) against it first"
        )
