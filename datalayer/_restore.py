"""Restore: every line of a backup file checked, loaded into empty tables in one transaction.

The file is hostile input: each field of the header and of the control lines is checked for type and
value, each section's row count is compared with the count of rows PostgreSQL itself stored (COPY's
row count), and anything the writer never produces (an end-of-data line, a carriage return, a
byte-order mark, bytes after the end marker) is refused, naming the line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
import psycopg
from psycopg import sql

from datalayer._backup_format import (
    BACKUP_FORMAT_VERSION,
    CONTROL_PREFIX,
    READABLE_VERSIONS,
    Progress,
    columns_of,
    copy_sql,
    generated_columns_of,
    require_schema,
)
from datalayer._restore_stage import create_stage, derived_columns, unstage
from datalayer._translate import is_connection_lost, translate
from datalayer.errors import BackupError
from datalayer.registry import Registry, Table, resolve_registry
from datalayer.transactions import transaction

if TYPE_CHECKING:
    from datalayer.project import Project

log = logging.getLogger("datalayer")

_MAX_CONTROL_BYTES = 1 << 20
_MAX_ROW_BYTES = 1 << 30  # PostgreSQL refuses a longer COPY line anyway
_BOM = b"\xef\xbb\xbf"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def restore_from(
    db: psycopg.Connection[Any],
    source: Path,
    progress: Progress | None,
    *,
    registry: Registry | None = None,
    project: Project | None = None,
) -> dict[str, int]:
    """``restore_database_data`` (see there)."""
    with _open_regular(source) as f:
        reader = _Reader(f, source)
        tables = reader.header()
        try:
            with transaction(db):
                db.execute("SET LOCAL statement_timeout = 0")
                reg = resolve_registry(db, registry, project=project)
                require_schema(db, reg, "restore into")
                order = _check_tables(reg, tables)
                _check_empty(db, order)
                counts = {t.name: _restore_table(db, reader, t, progress) for t in order}
                reader.end(counts)
                _reset_identities(db, order)
        except psycopg.Error as e:
            raise translate(e, conn=db) from e
    return counts


def _open_regular(source: Path) -> BinaryIO:
    # O_NONBLOCK: opening a FIFO must not hang waiting for a writer before we can refuse it.
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise BackupError(f"cannot read the backup {source}: {e.strerror}") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BackupError(
                f"{source} is not a regular file (a directory, pipe or device); restore reads a backup "
                "file: save the stream to a file first"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class _Reader:
    """Lines of a backup file with their numbers, for error messages."""

    def __init__(self, f: BinaryIO, source: Path) -> None:
        self.f = f
        self.source = source
        self.line = 0

    def next_line(self, limit: int) -> bytes:
        raw = self.f.readline(limit + 1)
        if raw:
            self.line += 1
            if len(raw) > limit:
                raise BackupError(f"line {self.line} is longer than {limit:,} bytes: not a backup line", line=self.line)
            if b"\r" in raw:
                raise BackupError(
                    f"line {self.line} holds a carriage return, which a backup never does: the file was "
                    "altered (converted to Windows line endings?); copy backups as binary files",
                    line=self.line,
                )
        return raw

    def control(self, expected: str, raw: bytes | None = None) -> dict[str, Any]:
        if raw is None:
            raw = self.next_line(_MAX_CONTROL_BYTES)
        if not raw.endswith(b"\n"):
            raise BackupError(
                f"the backup is truncated: it ends at line {self.line}, where a {expected!r} marker was expected",
                line=self.line,
            )
        if not raw.startswith(CONTROL_PREFIX):
            raise BackupError(f"line {self.line}: expected a {expected!r} marker", line=self.line)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BackupError(f"line {self.line}: the {expected!r} marker is not valid JSON", line=self.line) from None
        if not isinstance(doc, dict) or doc.get("__datalayer__") != expected:
            found = doc.get("__datalayer__") if isinstance(doc, dict) else None
            raise BackupError(f"line {self.line}: expected a {expected!r} marker, found {_show(found)}", line=self.line)
        return doc

    def header(self) -> list[str]:
        raw = self.next_line(_MAX_CONTROL_BYTES)
        if raw.startswith(_BOM):
            raise BackupError(
                f"{self.source} starts with a byte-order mark, which a backup never does: it was re-saved by "
                "an editor; restore the original file",
                line=1,
            )
        try:
            doc = self.control("backup", raw)
        except BackupError as e:
            raise BackupError(f"{self.source} is not a datalayer backup ({e})", line=1) from None
        version = doc.get("format_version")
        if type(version) is not int or version not in READABLE_VERSIONS:
            readable = ", ".join(map(str, READABLE_VERSIONS))
            newer = type(version) is int and version > BACKUP_FORMAT_VERSION
            raise BackupError(
                f"{self.source} has backup format {_show(version)}"
                + ("; it was written by a newer datalayer: upgrade datalayer to restore it" if newer else "")
                + f" (this datalayer reads formats {readable})",
                line=1,
            )
        tables = doc.get("tables")
        if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
            raise BackupError("line 1: the header's tables are not a list of table names", line=1)
        return list(tables)

    def end(self, counts: dict[str, int]) -> None:
        doc = self.control("end")
        rows = doc.get("rows")
        if not isinstance(rows, dict) or any(type(v) is not int for v in rows.values()) or rows != counts:
            raise BackupError(
                f"line {self.line}: the end marker's row counts do not match the sections", line=self.line
            )
        if self.f.read(1):
            raise BackupError(
                f"line {self.line + 1}: data after the end marker; the file was altered or two files were joined",
                line=self.line + 1,
            )


def _check_tables(registry: Registry, tables: list[str]) -> list[Table]:
    """The header's tables: exactly those the registry backs up, each after the tables it references."""
    held = {t.name: t for t in registry.backed_up}
    names = ", ".join(held)
    seen: set[str] = set()
    for name in tables:
        if name not in held:
            raise BackupError(
                f"line 1: the header names an unknown table {_show(name)} (a backup holds {names})", line=1
            )
        if name in seen:
            raise BackupError(f"line 1: the header names table {name} twice", line=1)
        seen.add(name)
    if seen != set(held):
        raise BackupError(
            f"line 1: the header names the tables {', '.join(tables) or 'none'}; a backup of this database "
            f"holds {names}",
            line=1,
        )
    # Any order with parents first restores (older backups list the built-in tables in another one);
    # where the registry puts a table before one that references it, the file must too.
    position = {name: i for i, name in enumerate(tables)}
    rank = {name: i for i, name in enumerate(held)}
    for name in tables:
        for parent in held[name].references:
            if parent in position and rank[parent] < rank[name] and position[parent] > position[name]:
                raise BackupError(
                    f"line 1: the header names {name} before {parent}, which it references; a backup lists "
                    "parents before children, in this order: " + names,
                    line=1,
                )
    return [held[name] for name in tables]


def _check_empty(db: psycopg.Connection[Any], tables: list[Table]) -> None:
    for table in (t.name for t in tables):
        row = db.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))).fetchone()
        if row and row[0]:
            raise BackupError(
                f"restore needs empty tables, and {table} has rows; restore into a freshly "
                "migrated database (datalayer reset --yes empties this one)"
            )


def _restore_table(db: psycopg.Connection[Any], reader: _Reader, spec: Table, progress: Progress | None) -> int:
    table = spec.name
    head = reader.control("table")
    start = reader.line
    if head.get("name") != table:
        raise BackupError(f"line {start}: expected the section of {table}, found {_show(head.get('name'))}", line=start)
    columns = head.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise BackupError(f"line {start}: the {table} section has no column list", line=start)
    if len(set(columns)) != len(columns):
        raise BackupError(f"line {start}: the {table} section names a column twice", line=start)
    known = columns_of(db, table)
    # Generated columns: PostgreSQL computes them, and COPY cannot write them. A backup leaves them
    # out; one from before that did holds values that are computed again rather than trusted.
    generated = [c for c in generated_columns_of(db, table) if c in columns]
    if generated:
        log.warning(
            "datalayer: line %d: the %s section holds the generated column(s) %s; their values in the file "
            "are ignored, PostgreSQL computes them",
            start,
            table,
            ", ".join(generated),
        )
    missing = [c for c in columns if c not in known and c not in generated]
    if missing:
        raise BackupError(
            f"line {start}: {table} has no column {_show(missing[0])} in this database; migrate it to the "
            "backup's schema first",
            line=start,
        )
    derived = derived_columns(spec, known)
    # Every column a backup holds must be there: one left out would quietly take its default (now(),
    # a new id) instead of what was backed up. Derived columns are computed, whatever the file says.
    absent = [c for c in known if c not in columns and c not in derived]
    if absent:
        raise BackupError(
            f"line {start}: the {table} section has no column {_show(absent[0])}; the file was altered or "
            "comes from another schema",
            line=start,
        )
    stage = f"datalayer_restore_{table}" if derived or generated or spec.partitioned_by_day else None
    if stage:
        create_stage(db, table, stage, derived)
    rows = _copy_section(db, reader, table, columns, stage=stage, progress=progress)
    if stage:
        rows_at = f"lines {start + 1}-{reader.line - 1}"
        try:
            unstage(db, spec, stage, known, derived=derived, rows=rows)
        except psycopg.Error as e:
            if is_connection_lost(e, db):
                raise
            raise BackupError(f"{rows_at}: {table} rows refused: {_refusal(e)}", line=start + 1) from e
        except BackupError as e:
            raise BackupError(f"{rows_at}: {e}", line=start + 1) from e
    log.debug("datalayer: restored %d %s rows (lines %d-%d)", rows, table, start + 1, reader.line - 1)
    if progress:
        progress(table, rows)
    return rows


def _copy_section(
    db: psycopg.Connection[Any],
    reader: _Reader,
    table: str,
    columns: list[str],
    *,
    stage: str | None,
    progress: Progress | None,
) -> int:
    start = reader.line
    digest, rows, pending, size = hashlib.sha256(), 0, [], 0
    cur = db.cursor()
    try:
        with cur.copy(copy_sql(table, columns, "FROM", into=stage)) as copy:
            while True:
                raw = reader.next_line(_MAX_ROW_BYTES)
                if not raw or raw.startswith(CONTROL_PREFIX):
                    break
                if not raw.endswith(b"\n"):
                    raise BackupError(f"the backup is truncated inside {table} at line {reader.line}", line=reader.line)
                if raw.startswith(b"\\."):
                    # COPY reads \. as the end of its data: the server would stop there while we go on.
                    raise BackupError(
                        f"line {reader.line}: an end-of-data line (\\.) inside the {table} section, which a "
                        "backup never holds: the file was altered",
                        line=reader.line,
                    )
                pending.append(raw)
                size += len(raw)
                if size >= 1 << 20:
                    rows += _feed(copy, digest, pending)
                    pending, size = [], 0
                    if progress:
                        progress(table, rows)
            rows += _feed(copy, digest, pending)
    except psycopg.Error as e:
        if is_connection_lost(e, db):
            raise
        raise _refused(e, table, stage or table, start=start, last=reader.line) from e
    if not raw:
        raise BackupError(
            f"the backup is truncated: the {table} section has no end marker (last line {reader.line})",
            line=reader.line,
        )
    end = reader.control("end_table", raw)
    if end.get("name") != table:
        raise BackupError(f"line {reader.line}: expected the end marker of {table}", line=reader.line)
    recorded = end.get("rows")
    if type(recorded) is not int or recorded != rows or end.get("sha256") != digest.hexdigest():
        raise BackupError(
            f"lines {start + 1}-{reader.line - 1}: the {table} rows do not match their recorded count "
            f"and checksum ({rows} read, {_show(recorded)} recorded): the file is corrupt",
            line=reader.line,
        )
    if cur.rowcount != rows:
        raise BackupError(
            f"lines {start + 1}-{reader.line - 1}: PostgreSQL stored {cur.rowcount} {table} rows where the "
            f"section holds {rows}: the file was altered",
            line=reader.line,
        )
    return rows


def _feed(copy: Any, digest: Any, lines: list[bytes]) -> int:
    data = b"".join(lines)
    digest.update(data)
    copy.write(data)
    return len(lines)


def _refused(e: psycopg.Error, table: str, copied: str, *, start: int, last: int) -> BackupError:
    """The error for rows PostgreSQL refused, at the line of the row where COPY names it.

    COPY names the row it was reading (its context: ``COPY <relation>, line N``); an error raised
    before any row (the section's columns) or after the last (foreign keys are checked at the end of
    the statement) names none: it points at the section header or at the section's rows.
    """
    m = re.match(rf"COPY {re.escape(copied)}, line (\d+)", e.diag.context or "")
    if m:
        line = start + int(m.group(1))
        return BackupError(f"line {line}: {table} row refused: {_refusal(e)}", line=line)
    if last <= start + 1:  # refused before its first row was read: the columns the header names
        return BackupError(f"line {start}: the {table} section is refused: {_refusal(e)}", line=start)
    return BackupError(f"lines {start + 1}-{last - 1}: {table} rows refused: {_refusal(e)}", line=start + 1)


def _refusal(e: psycopg.Error) -> str:
    detail = f" ({e.diag.message_detail})" if e.diag.message_detail else ""
    return f"{e.diag.message_primary or e}{detail}"


def _reset_identities(db: psycopg.Connection[Any], tables: list[Table]) -> None:
    # Rows came with their ids: move each identity (or serial) sequence past the largest value.
    for table in (t.name for t in tables):
        qualified = sql.Identifier(table).as_string(db)
        columns = db.execute(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = pg_catalog.to_regclass(%s) "
            "AND a.attnum > 0 AND NOT a.attisdropped AND pg_catalog.pg_get_serial_sequence(%s, a.attname) IS NOT NULL",
            (qualified, qualified),
        ).fetchall()
        for (column,) in columns:
            db.execute(
                sql.SQL(
                    "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence({t}, {c}), "
                    "coalesce(pg_catalog.max({i}), 1), pg_catalog.max({i}) IS NOT NULL) "
                    "FROM {tab}"
                ).format(
                    t=sql.Literal(qualified), c=sql.Literal(column), i=sql.Identifier(column), tab=sql.Identifier(table)
                )
            )
