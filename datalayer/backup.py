"""Backup and restore: ``backup_database_data``, ``restore_database_data``.

Backups are one text file: JSON control lines around each table's rows in PostgreSQL's COPY text
format (what pg_dump uses for data). The server encodes and decodes the rows, the client only streams
bytes, so memory stays flat and speed stays close to pg_dump; JSON rows would cost the server and the
client several times more in both directions. Each table section carries its row count and a sha256 of
its bytes, so a truncated or corrupted file is refused, naming the line, before anything is committed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import psycopg
from psycopg import sql

from datalayer._translate import translate
from datalayer.errors import BackupError
from datalayer.transactions import transaction

__all__ = ["BACKUP_FORMAT_VERSION", "BACKUP_TABLES", "backup_database_data", "restore_database_data"]

BACKUP_FORMAT_VERSION = 1
# Parents before children, so that foreign keys hold while restoring.
BACKUP_TABLES = ("users", "data_analyses", "analysis_files", "tool_generations", "system_log", "cache_entries")
_CONTROL = b'{"__datalayer__":'
_MAX_RESTORE_PARTITION_DAYS = 400

Progress = Callable[[str, int], object]


def _control(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"__datalayer__": kind, **fields}) + b"\n"


def _columns(db: psycopg.Connection[Any], table: str) -> list[str]:
    rows = db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def _copy_sql(table: str, columns: list[str], direction: str) -> sql.Composed:
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    if direction == "TO":  # the SELECT form: COPY cannot read a partitioned table directly
        return sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, sql.Identifier(table))
    return sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), cols)


def backup_database_data(
    db: psycopg.Connection[Any], path: str | os.PathLike[str], *, progress: Progress | None = None
) -> bool:
    """Write every table to ``path`` from one consistent snapshot; True when the file is complete.

    Streaming (memory stays flat however large the tables), written to a temporary file next to
    ``path``, fsynced and renamed into place, readable by its owner only (it holds password hashes).
    Raises BackupError when it cannot write the file; an existing file at ``path`` is left untouched.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise BackupError(f"cannot write a backup next to {target}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as out, transaction(db):
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            db.execute("SET LOCAL statement_timeout = 0")
            _write_backup(db, out, progress)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, psycopg.Error):
            raise translate(e, conn=db) from e
        if isinstance(e, OSError):
            raise BackupError(f"writing the backup {target} failed: {e.strerror or e}") from e
        raise
    return True


def _write_backup(db: psycopg.Connection[Any], out: BinaryIO, progress: Progress | None) -> None:
    migrations = [r[0] for r in db.execute("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")]
    out.write(
        _control(
            "backup",
            format_version=BACKUP_FORMAT_VERSION,
            created_at=datetime.now(UTC).isoformat(),
            server_version=db.info.server_version,
            migrations=migrations,
            tables=list(BACKUP_TABLES),
        )
    )
    totals: dict[str, int] = {}
    for table in BACKUP_TABLES:
        columns = _columns(db, table)
        extra: dict[str, Any] = {}
        if table == "system_log":
            lo, hi = db.execute("SELECT min(created_at), max(created_at) FROM system_log").fetchone() or (None, None)
            extra = {
                "first_day": lo.astimezone(UTC).date().isoformat() if lo else None,
                "last_day": hi.astimezone(UTC).date().isoformat() if hi else None,
            }
        out.write(_control("table", name=table, columns=columns, **extra))
        digest, rows, pending, size = hashlib.sha256(), 0, [], 0
        with db.cursor().copy(_copy_sql(table, columns, "TO")) as copy:
            for chunk in copy:
                pending.append(bytes(chunk))
                size += len(chunk)
                if size >= 1 << 20:
                    rows += _flush(out, digest, pending)
                    pending, size = [], 0
                    if progress:
                        progress(table, rows)
            rows += _flush(out, digest, pending)
        out.write(_control("end_table", name=table, rows=rows, sha256=digest.hexdigest()))
        totals[table] = rows
        if progress:
            progress(table, rows)
    out.write(_control("end", rows=totals))


def _flush(out: BinaryIO, digest: Any, chunks: list[bytes]) -> int:
    data = b"".join(chunks)
    out.write(data)
    digest.update(data)
    return data.count(b"\n")


class _Reader:
    """Lines of a backup file with their numbers, for error messages."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.line = 0

    def control(self, expected: str) -> dict[str, Any]:
        raw = self.f.readline()
        self.line += 1
        if not raw:
            raise BackupError(
                f"the backup is truncated: it ends at line {self.line - 1}, where a {expected!r} marker was expected",
                line=self.line,
            )
        if not raw.startswith(_CONTROL):
            raise BackupError(f"line {self.line}: expected a {expected!r} marker", line=self.line)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BackupError(f"line {self.line}: the {expected!r} marker is not valid JSON", line=self.line) from None
        if not isinstance(doc, dict) or doc.get("__datalayer__") != expected:
            raise BackupError(f"line {self.line}: expected a {expected!r} marker", line=self.line)
        return doc


def restore_database_data(
    db: psycopg.Connection[Any], path: str | os.PathLike[str], *, progress: Progress | None = None
) -> dict[str, int]:
    """Load a backup into empty tables in one transaction; returns the rows restored per table.

    The tables must be empty (restore into a freshly migrated database). A file that is truncated,
    corrupted or not a datalayer backup raises BackupError naming the line, and changes nothing.
    """
    source = Path(path)
    try:
        f = source.open("rb")
    except OSError as e:
        raise BackupError(f"cannot read the backup {source}: {e.strerror}") from e
    with f:
        reader = _Reader(f)
        try:
            header = reader.control("backup")
        except BackupError as e:
            raise BackupError(f"{source} is not a datalayer backup ({e})", line=1) from None
        if header.get("format_version") != BACKUP_FORMAT_VERSION:
            raise BackupError(
                f"{source} has backup format {header.get('format_version')!r}; this datalayer reads "
                f"format {BACKUP_FORMAT_VERSION}",
                line=1,
            )
        tables = header.get("tables")
        if not isinstance(tables, list) or not set(tables) <= set(BACKUP_TABLES):
            raise BackupError(f"line 1: unknown tables in the backup: {tables!r}", line=1)
        try:
            with transaction(db):
                db.execute("SET LOCAL statement_timeout = 0")
                _check_empty(db, tables)
                counts = {table: _restore_table(db, reader, table, progress) for table in tables}
                end = reader.control("end")
                if end.get("rows") != counts:
                    raise BackupError(
                        f"line {reader.line}: the end marker's row counts do not match the sections", line=reader.line
                    )
                _reset_identities(db, tables)
        except psycopg.Error as e:
            raise translate(e, conn=db) from e
    return counts


def _check_empty(db: psycopg.Connection[Any], tables: list[str]) -> None:
    for table in tables:
        row = db.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))).fetchone()
        if row and row[0]:
            raise BackupError(
                f"restore needs empty tables, and {table} has rows; restore into a freshly "
                "migrated database (datalayer reset --yes empties this one)"
            )


def _restore_table(db: psycopg.Connection[Any], reader: _Reader, table: str, progress: Progress | None) -> int:
    head = reader.control("table")
    if head.get("name") != table:
        raise BackupError(
            f"line {reader.line}: expected the section of {table}, found {head.get('name')!r}", line=reader.line
        )
    columns = head.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise BackupError(f"line {reader.line}: the {table} section has no column list", line=reader.line)
    missing = set(columns) - set(_columns(db, table))
    if missing:
        raise BackupError(
            f"line {reader.line}: {table} has no column(s) {', '.join(sorted(missing))} in this "
            "database; migrate it to the backup's schema first",
            line=reader.line,
        )
    if table == "system_log":
        _partitions_for(db, head.get("first_day"), head.get("last_day"))
    start = reader.line
    digest, rows, pending, size = hashlib.sha256(), 0, [], 0
    try:
        with db.cursor().copy(_copy_sql(table, columns, "FROM")) as copy:
            for raw in reader.f:
                if raw.startswith(_CONTROL):
                    break
                reader.line += 1
                if not raw.endswith(b"\n"):
                    raise BackupError(f"the backup is truncated inside {table} at line {reader.line}", line=reader.line)
                pending.append(raw)
                size += len(raw)
                if size >= 1 << 20:
                    rows += _feed(copy, digest, pending)
                    pending, size = [], 0
                    if progress:
                        progress(table, rows)
            else:
                raw = b""
            rows += _feed(copy, digest, pending)
    except psycopg.Error as e:
        where = _copy_line(e)
        line = start + where if where else None
        raise BackupError(f"line {line or '?'}: {table} row refused: {e.diag.message_primary or e}", line=line) from e
    reader.line += 1
    if not raw:
        raise BackupError(
            f"the backup is truncated: the {table} section has no end marker (last line {reader.line - 1})",
            line=reader.line - 1,
        )
    try:
        end = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BackupError(
            f"line {reader.line}: the end marker of {table} is not valid JSON", line=reader.line
        ) from None
    if not isinstance(end, dict) or end.get("__datalayer__") != "end_table" or end.get("name") != table:
        raise BackupError(f"line {reader.line}: expected the end marker of {table}", line=reader.line)
    if end.get("rows") != rows or end.get("sha256") != digest.hexdigest():
        raise BackupError(
            f"lines {start + 1}-{reader.line - 1}: the {table} rows do not match their recorded count "
            f"and checksum ({rows} read, {end.get('rows')} recorded): the file is corrupt",
            line=reader.line,
        )
    if progress:
        progress(table, rows)
    return rows


def _feed(copy: Any, digest: Any, lines: list[bytes]) -> int:
    data = b"".join(lines)
    digest.update(data)
    copy.write(data)
    return len(lines)


def _copy_line(e: psycopg.Error) -> int | None:
    import re

    m = re.search(r"line (\d+)", e.diag.context or "")
    return int(m.group(1)) if m else None


def _partitions_for(db: psycopg.Connection[Any], first: object, last: object) -> None:
    # Restored log rows should land in their day's partition, not in the default one.
    if not isinstance(first, str) or not isinstance(last, str):
        return
    try:
        lo, hi = datetime.fromisoformat(first).date(), datetime.fromisoformat(last).date()
    except ValueError:
        return
    if not 0 <= (hi - lo).days <= _MAX_RESTORE_PARTITION_DAYS:
        return
    day = lo
    while day <= hi:
        db.execute("SELECT datalayer_ensure_log_partition(%s)", (day,))
        day += timedelta(days=1)


def _reset_identities(db: psycopg.Connection[Any], tables: list[str]) -> None:
    # Rows came with their ids: move each identity sequence past the largest one.
    for table in tables:
        db.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence({t}, 'id'), coalesce(max(id), 1), max(id) IS NOT NULL) FROM {i}"
            ).format(t=sql.Literal(table), i=sql.Identifier(table))
        )
