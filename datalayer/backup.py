"""Backup and restore: ``backup_database_data``, ``restore_database_data``.

Backups are one text file: JSON control lines around each table's rows in PostgreSQL's COPY text
format (what pg_dump uses for data). The server encodes and decodes the rows, the client only streams
bytes, so memory stays flat and speed stays close to pg_dump; JSON rows would cost the server and the
client several times more in both directions. Each table section carries its row count and a sha256 of
its bytes, so a truncated or corrupted file is refused, naming the line, before anything is committed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import psycopg

from datalayer._backup_format import (
    BACKUP_FORMAT_VERSION,
    CONTROL_PREFIX,
    Progress,
    check_path,
    columns_of,
    control,
    copy_sql,
    require_schema,
)
from datalayer._restore import restore_from
from datalayer._translate import translate
from datalayer.errors import BackupError
from datalayer.registry import Registry, resolve_registry
from datalayer.transactions import transaction

if TYPE_CHECKING:
    from datalayer.project import Project

__all__ = ["BACKUP_FORMAT_VERSION", "backup_database_data", "restore_database_data"]

log = logging.getLogger("datalayer")

# Tables of the database outside the current schema (where a project's tables live): not those of
# PostgreSQL itself, of other sessions' temporary schemas, or of extensions (their own data).
_ELSEWHERE = """
SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.oid <> pg_catalog.current_schema()::regnamespace
  AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema', 'pg_toast'])
  AND n.nspname !~ '^pg_(toast_)?temp_'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1
"""


def backup_database_data(
    db: psycopg.Connection[Any],
    path: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    registry: Registry | None = None,
    project: Project | None = None,
) -> bool:
    """Write every table to ``path`` from one consistent snapshot; True when it holds all the data.

    The tables are ``registry``'s (those it backs up), by default the database's own tables with the
    facts registered for them (``datalayer.registry.resolve_registry``; ``project`` defaults to
    ``find_project()``): those of the current schema. Tables of other schemas (not PostgreSQL's or
    an extension's) are not in the backup: with the default registry each is named in a warning on
    the ``datalayer`` logger and in the file's header (``left_out``), and the backup, complete for
    the project's tables, returns False; back those up with pg_dump. Generated columns are not
    written: PostgreSQL computes them again on restore.

    Streaming (memory stays flat however large the tables), written to a new file with a random name
    next to ``path`` (created exclusively, never through a symbolic link, readable by its owner only:
    it holds password hashes), fsynced and renamed into place. Raises BackupError when it cannot write
    the file, or when ``path`` is a symbolic link, a directory or anything but a regular file; an
    existing file at ``path`` is left untouched until the new one is complete.
    """
    target = check_path(path)
    try:
        st = target.lstat()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise BackupError(f"cannot write the backup {target}: {e.strerror}") from e
    else:
        if stat.S_ISLNK(st.st_mode):
            # Renaming over the link would silently replace it; writing through it is what an attacker wants.
            raise BackupError(f"{target} is a symbolic link; give the path of the file itself")
        if not stat.S_ISREG(st.st_mode):
            raise BackupError(
                f"{target} exists and is not a regular file (a directory, pipe or device); choose another path"
            )
    try:
        # mkstemp: a random name, O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, in the target's directory
        # (so that the rename below is atomic).
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise BackupError(f"cannot write a backup next to {target}: {e.strerror}") from e
    tmp = Path(tmp_name)
    left_out: list[str] = []
    try:
        with os.fdopen(fd, "wb") as out:
            with transaction(db):
                db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                db.execute("SET LOCAL statement_timeout = 0")
                reg = resolve_registry(db, registry, project=project)
                require_schema(db, reg, "back up")
                left_out = [] if registry is not None else [str(r[0]) for r in db.execute(_ELSEWHERE)]
                if left_out:
                    log.warning(
                        "datalayer: the backup of %s leaves out %d table(s) outside schema %s: %s; back them "
                        "up with pg_dump",
                        db.info.dbname,
                        len(left_out),
                        _current_schema(db),
                        ", ".join(left_out),
                    )
                _write_backup(db, reg, out, progress, left_out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
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
    return not left_out


def _current_schema(db: psycopg.Connection[Any]) -> str:
    row = db.execute("SELECT pg_catalog.current_schema()::text").fetchone()
    return str(row[0]) if row else "?"


def restore_database_data(
    db: psycopg.Connection[Any],
    path: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    registry: Registry | None = None,
    project: Project | None = None,
) -> dict[str, int]:
    """Load a backup into empty tables in one transaction; returns the rows restored per table.

    The database must be migrated and its tables empty (restore into a freshly migrated database).
    Every section's row count is the server's own count of the rows it stored, checked against the
    file's; a file that is truncated, corrupted, not a datalayer backup or not a regular file raises
    BackupError naming the line, and changes nothing. The file must hold exactly the tables the
    registry backs up (as for ``backup_database_data``), parents before children. Partitions are
    created for the days the rows of a table partitioned by day hold; derived columns (the built-in
    ``users.email_key``) are computed, whatever the file holds, so backups of format 1 restore.
    """
    return restore_from(db, check_path(path), progress, registry=registry, project=project)


def _write_backup(
    db: psycopg.Connection[Any], registry: Registry, out: BinaryIO, progress: Progress | None, left_out: list[str]
) -> None:
    migrations = [r[0] for r in db.execute("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")]
    out.write(
        control(
            "backup",
            format_version=BACKUP_FORMAT_VERSION,
            created_at=datetime.now(UTC).isoformat(),
            server_version=db.info.server_version,
            migrations=migrations,
            tables=[t.name for t in registry.backed_up],
            left_out=left_out,
        )
    )
    totals: dict[str, int] = {}
    for table in (t.name for t in registry.backed_up):
        columns = columns_of(db, table)
        # The integer id first: a row line then never starts like a control line, whatever text it holds.
        columns.sort(key=lambda c: c != "id")
        out.write(control("table", name=table, columns=columns))
        digest, rows, pending, size = hashlib.sha256(), 0, [], 0
        with db.cursor().copy(copy_sql(table, columns, "TO")) as copy:
            for chunk in copy:
                pending.append(bytes(chunk))
                size += len(chunk)
                if size >= 1 << 20:
                    rows += _flush(out, digest, pending)
                    pending, size = [], 0
                    if progress:
                        progress(table, rows)
            rows += _flush(out, digest, pending)
        out.write(control("end_table", name=table, rows=rows, sha256=digest.hexdigest()))
        totals[table] = rows
        if progress:
            progress(table, rows)
    out.write(control("end", rows=totals))


def _flush(out: BinaryIO, digest: Any, chunks: list[bytes]) -> int:
    # Each chunk is one row (libpq hands COPY data over a row at a time). A row whose first field is
    # text could look like a control line: COPY reads a backslash before "{" as the "{" itself.
    data = b"".join(b"\\" + c if c.startswith(CONTROL_PREFIX) else c for c in chunks)
    out.write(data)
    digest.update(data)
    return data.count(b"\n")
