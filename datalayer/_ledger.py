"""The checksum ledger: which migration file content was applied, from which source, so that edits are caught.

yoyo keeps no checksum of applied files. ``datalayer_migration_ledger`` records the sha256 of each
applied migration file, SQL or Python, and the source it came from (``datalayer`` for the built-in
schema, else the folder relative to the project root); ``changed`` compares it with the files on
disk. The ledger is written by ``datalayer migrate`` (every source of the project) and by each
folder's ``post-apply.py``, which yoyo runs after a ``yoyo apply`` and which knows only its folder.

A source passed alone (a hook) checks only its own migrations: an applied id it has no file for is
another source's unless the ledger says it was this one's. The whole project (``whole_project=True``)
also reports an applied id that no source has a file for.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import psycopg

from datalayer.errors import MigrationError

__all__ = [
    "BUILTIN_SOURCE",
    "LedgerEntry",
    "LedgerIssue",
    "applied",
    "applied_since",
    "builtin_in_use_at",
    "changed",
    "entries",
    "file_hashes",
    "is_migration_file",
    "migration_files",
    "record",
    "snapshot",
    "verify",
    "yoyo_lock_time",
]

log = logging.getLogger("datalayer")

BUILTIN_SOURCE = "datalayer"

# Databases migrated before sources existed have rows without the column: they were all built-in.
LEDGER_DDL = f"""
CREATE TABLE IF NOT EXISTS datalayer_migration_ledger (
    migration_id text PRIMARY KEY,
    sha256       text        NOT NULL,
    applied_at   timestamp   NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    source       text        NOT NULL DEFAULT '{BUILTIN_SOURCE}'
)
"""
ADD_SOURCE = (
    f"ALTER TABLE datalayer_migration_ledger ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT '{BUILTIN_SOURCE}'"
)


@attrs.frozen
class LedgerEntry:
    sha256: str
    applied_at: datetime
    source: str


@attrs.frozen
class LedgerIssue:
    migration_id: str
    problem: str  # "changed" | "missing file"
    recorded: str | None
    current: str | None
    source: str | None = None  # the source the file belongs to (or belonged to), when known

    def describe(self) -> str:
        if self.problem == "missing file":
            where = f"gone from {source_label(self.source)}" if self.source else "in no migration folder of the project"
            return (
                f"migration {self.migration_id} is applied but its file is {where}; restore the file "
                "(a rollback needs it too)"
            )
        return (
            f"migration {self.migration_id} changed since it was applied (in {source_label(self.source)}: "
            f"applied sha256 {str(self.recorded)[:12]}…, file now {str(self.current)[:12]}…); "
            "restore the file (git checkout) and put the change in a new migration"
        )


def source_label(source: str | None) -> str:
    """How messages name a source: the built-in schema's migrations, or the service's folder."""
    return "datalayer's built-in migrations" if source == BUILTIN_SOURCE else f"{source}/"


def is_migration_file(path: Path) -> bool:
    """True for the files yoyo applies as migrations: ``*.sql`` and ``*.py``, except rollbacks and hooks.

    ``post-apply*`` files are yoyo hooks that run after every apply and are never recorded as
    applied, so they have no ledger row (a Python migration's rollback is in its own file).
    """
    return (
        path.is_file()
        and path.suffix in (".sql", ".py")
        and not path.name.endswith(".rollback.sql")
        and not path.name.startswith(("post-apply", "_tmp_yoyonew"))  # yoyo new's editor temp files
    )


def migration_files(directory: Path) -> dict[str, Path]:
    """Every forward migration file of ``directory`` by migration id (the file stem, as yoyo keys them)."""
    return {path.stem: path for path in sorted(directory.iterdir()) if is_migration_file(path)}


def file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every forward migration file (SQL and Python), line endings normalised, by migration id."""
    return {
        mid: hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()
        for mid, path in migration_files(directory).items()
    }


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def applied(conn: psycopg.Connection[Any]) -> dict[str, datetime]:
    """Every applied migration id (yoyo's table) with its UTC apply time; {} before the first migration."""
    if not _exists(conn, "_yoyo_migration"):
        return {}
    rows = conn.execute("SELECT migration_id, applied_at_utc FROM _yoyo_migration").fetchall()
    return {r[0]: r[1] for r in rows}


def _has_source_column(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'datalayer_migration_ledger'::regclass "
        "AND attname = 'source' AND NOT attisdropped)"
    ).fetchone()
    return bool(row and row[0])


def entries(conn: psycopg.Connection[Any]) -> dict[str, LedgerEntry]:
    """The ledger's rows by migration id ({} when there is no ledger yet); read-only."""
    if not _exists(conn, "datalayer_migration_ledger"):
        return {}
    source = "source" if _has_source_column(conn) else f"'{BUILTIN_SOURCE}'"
    rows = conn.execute(f"SELECT migration_id, sha256, applied_at, {source} FROM datalayer_migration_ledger").fetchall()
    return {r[0]: LedgerEntry(r[1], r[2], r[3]) for r in rows}


def snapshot(sources: Mapping[str, Path]) -> dict[str, tuple[str, str]]:
    """{migration id: (source, sha256)} over ``sources`` (ids are unique across them: checked before)."""
    out: dict[str, tuple[str, str]] = {}
    for name, directory in sources.items():
        for mid, digest in file_hashes(directory).items():
            out.setdefault(mid, (name, digest))
    return out


def changed(
    conn: psycopg.Connection[Any], sources: Mapping[str, Path], *, whole_project: bool = True
) -> list[LedgerIssue]:
    """Applied migrations of ``sources`` whose file changed (or vanished) since the ledger recorded them."""
    files = snapshot(sources)
    ledger = entries(conn)
    issues = []
    for mid, applied_at in sorted(applied(conn).items()):
        entry = ledger.get(mid)
        if mid not in files:
            owner = entry.source if entry is not None else None
            if whole_project or owner in sources:
                issues.append(LedgerIssue(mid, "missing file", entry.sha256 if entry else None, None, owner))
            continue
        source, digest = files[mid]
        # A ledger row older than yoyo's apply time belongs to an earlier application (rolled back and
        # re-applied since): it says nothing about the file applied now.
        if entry is not None and entry.applied_at >= applied_at and entry.sha256 != digest:
            issues.append(LedgerIssue(mid, "changed", entry.sha256, digest, source))
    return issues


def verify(conn: psycopg.Connection[Any], sources: Mapping[str, Path], *, whole_project: bool = True) -> None:
    """Raise MigrationError naming every applied migration of ``sources`` whose file changed."""
    issues = changed(conn, sources, whole_project=whole_project)
    if issues:
        raise MigrationError("; ".join(i.describe() for i in issues))


def _ensure_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(LEDGER_DDL)
    if not _has_source_column(conn):  # checked first: ALTER TABLE locks the table even when it is a no-op
        conn.execute(ADD_SOURCE)


def record(
    conn: psycopg.Connection[Any],
    sources: Mapping[str, Path],
    *,
    files: Mapping[str, tuple[str, str]] | None = None,
    since: datetime | None = None,
) -> list[str]:
    """Bring the ledger in line with what is applied: new rows for new applications of ``sources``' files,
    none for rollbacks (of any source). Returns the ids given a new row.

    ``files`` is the ``snapshot`` taken before applying (default: the files now). An application before
    ``since`` (the start of this run; None: unknown) that has no row was never recorded - plain yoyo without
    the folder's hook, or a run stopped between applying and recording - so the content applied is unknown:
    the file as it is now is recorded, with a warning. Rows that disagree with their file are left alone
    (``verify`` reports them); a row whose file is now found in another source gets that source.
    """
    files = snapshot(sources) if files is None else files
    now_applied = applied(conn)
    _ensure_table(conn)
    ledger = entries(conn)
    gone = [mid for mid in ledger if mid not in now_applied]
    if gone:
        conn.execute("DELETE FROM datalayer_migration_ledger WHERE migration_id = ANY(%s)", (gone,))
    added = []
    for mid, applied_at in sorted(now_applied.items()):
        if mid not in files:
            continue
        source, digest = files[mid]
        entry = ledger.get(mid)
        if entry is None or entry.applied_at < applied_at:
            if entry is None and (since is None or applied_at < since):
                log.warning(
                    "datalayer: migration %s (%s) was applied at %s UTC but never recorded in the ledger (plain "
                    "yoyo apply without the folder's post-apply hook, or a run stopped between applying and "
                    "recording): recording its file as it is now (sha256 %s…), which cannot be checked against "
                    "what was applied",
                    mid,
                    source_label(source),
                    applied_at,
                    digest[:12],
                )
            conn.execute(
                "INSERT INTO datalayer_migration_ledger (migration_id, sha256, applied_at, source) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (migration_id) DO UPDATE SET sha256 = EXCLUDED.sha256, "
                "applied_at = EXCLUDED.applied_at, source = EXCLUDED.source, recorded_at = now()",
                (mid, digest, applied_at, source),
            )
            added.append(mid)
        elif entry.source != source and entry.sha256 == digest:
            conn.execute("UPDATE datalayer_migration_ledger SET source = %s WHERE migration_id = %s", (source, mid))
    return added


def applied_since(conn: psycopg.Connection[Any], since: datetime) -> list[str]:
    """The migration ids applied at or after ``since`` (UTC), in apply order."""
    return [mid for mid, at in sorted(applied(conn).items(), key=lambda kv: kv[1]) if at >= since]


def yoyo_lock_time(conn: psycopg.Connection[Any]) -> datetime | None:
    """When the running yoyo apply took yoyo's lock (UTC), or None when no lock is held."""
    if not _exists(conn, "yoyo_lock"):
        return None
    row = conn.execute("SELECT min(ctime) FROM yoyo_lock").fetchone()
    return row[0] if row else None


def builtin_in_use_at(conn: psycopg.Connection[Any], builtin_ids: Iterable[str], when: datetime) -> bool:
    """True when yoyo's log shows a built-in migration applied (and not yet rolled back) at ``when`` (UTC)."""
    if not _exists(conn, "_yoyo_log"):
        return False
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM (SELECT DISTINCT ON (migration_id) operation FROM _yoyo_log "
        "WHERE migration_id = ANY(%s) AND created_at_utc <= %s ORDER BY migration_id, created_at_utc DESC) last "
        "WHERE operation IN ('apply', 'mark'))",
        (list(builtin_ids), when),
    ).fetchone()
    return bool(row and row[0])
