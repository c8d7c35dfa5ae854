"""The checksum ledger: which migration file content was applied, so that edits are caught.

yoyo keeps no checksum of applied files. ``datalayer_migration_ledger`` records the sha256 of each
applied migration file, SQL or Python; ``changed`` compares it with the files on disk. The ledger is written by
``datalayer migrate`` and by ``migrations/post-apply.py``, which yoyo runs after every ``yoyo apply``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import attrs
import psycopg
from psycopg import sql

from datalayer.errors import MigrationError

__all__ = ["LedgerIssue", "changed", "file_hashes", "is_migration_file", "record", "verify"]

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS datalayer_migration_ledger (
    migration_id text PRIMARY KEY,
    sha256       text        NOT NULL,
    applied_at   timestamp   NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
)
"""


@attrs.frozen
class LedgerIssue:
    migration_id: str
    problem: str  # "changed" | "missing file"
    recorded: str | None
    current: str | None

    def describe(self) -> str:
        if self.problem == "missing file":
            return f"migration {self.migration_id} is applied but its file is gone from migrations/"
        return (
            f"migration {self.migration_id} changed since it was applied "
            f"(applied sha256 {str(self.recorded)[:12]}…, file now {str(self.current)[:12]}…); "
            "restore the file (git checkout) and put the change in a new migration"
        )


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


def file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every forward migration file (SQL and Python), line endings normalised, by migration id."""
    out: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if not is_migration_file(path):
            continue
        data = path.read_bytes().replace(b"\r\n", b"\n")
        out[path.stem] = hashlib.sha256(data).hexdigest()
    return out


def _applied(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    exists = conn.execute("SELECT to_regclass('_yoyo_migration') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT migration_id, applied_at_utc FROM _yoyo_migration").fetchall()
    return {r[0]: r[1] for r in rows}


def _ledger(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, Any]]:
    exists = conn.execute("SELECT to_regclass('datalayer_migration_ledger') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT migration_id, sha256, applied_at FROM datalayer_migration_ledger").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def changed(conn: psycopg.Connection[Any], directory: Path) -> list[LedgerIssue]:
    """Applied migrations whose file changed (or vanished) since the ledger recorded them."""
    files = file_hashes(directory)
    applied = _applied(conn)
    ledger = _ledger(conn)
    issues = []
    for mid, applied_at in sorted(applied.items()):
        if mid not in files:
            issues.append(LedgerIssue(mid, "missing file", ledger.get(mid, (None, None))[0], None))
            continue
        entry = ledger.get(mid)
        # A ledger row older than yoyo's apply time belongs to an earlier application (rolled back and
        # re-applied since): it says nothing about the file applied now.
        if entry is not None and entry[1] >= applied_at and entry[0] != files[mid]:
            issues.append(LedgerIssue(mid, "changed", entry[0], files[mid]))
    return issues


def verify(conn: psycopg.Connection[Any], directory: Path) -> None:
    """Raise MigrationError naming every applied migration whose file changed."""
    issues = changed(conn, directory)
    if issues:
        raise MigrationError("; ".join(i.describe() for i in issues))


def record(conn: psycopg.Connection[Any], directory: Path) -> None:
    """Bring the ledger in line with what is applied: new rows for new applications, none for rollbacks.

    Rows that disagree with their file are left alone (``verify`` reports them).
    """
    files = file_hashes(directory)
    applied = _applied(conn)
    conn.execute(LEDGER_DDL)
    ledger = _ledger(conn)
    gone = [mid for mid in ledger if mid not in applied]
    if gone:
        conn.execute("DELETE FROM datalayer_migration_ledger WHERE migration_id = ANY(%s)", (gone,))
    for mid, applied_at in applied.items():
        entry = ledger.get(mid)
        if mid in files and (entry is None or entry[1] < applied_at):
            conn.execute(
                sql.SQL(
                    "INSERT INTO datalayer_migration_ledger (migration_id, sha256, applied_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (migration_id) DO UPDATE SET sha256 = EXCLUDED.sha256, "
                    "applied_at = EXCLUDED.applied_at, recorded_at = now()"
                ),
                (mid, files[mid], applied_at),
            )
