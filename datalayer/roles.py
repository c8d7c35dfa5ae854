"""Least privilege: an application role (DML only) and a read-only role, created idempotently.

Roles are cluster-wide, so they are not created by the per-database migrations (a second database on
the same server would fail to migrate). Run ``datalayer roles create`` once per database, after
``migrate`` (again after a migration that adds tables): it creates the roles if missing and (re)grants.

The application role gets SELECT/INSERT/UPDATE/DELETE on datalayer's tables (not on the migration
bookkeeping) and EXECUTE on the
partition functions, which run as the schema owner (SECURITY DEFINER): it can keep log partitions
ahead and clean up old ones without any DDL right of its own. Passwords are hashed client-side
(SCRAM-SHA-256) before they reach the server, so they never appear in a statement or a server log.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from datalayer.errors import ValidationError

__all__ = ["APP_TABLES", "create_roles"]

APP_TABLES = ("users", "data_analyses", "analysis_files", "tool_generations", "system_log", "cache_entries")
PARTITION_FUNCTIONS = (
    "datalayer_ensure_log_partition(date)",
    "datalayer_ensure_log_partitions(integer)",
    "datalayer_drop_log_partitions(timestamptz)",
    "datalayer_log_partition_name(date)",
)
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _role(name: object, field: str) -> str:
    if not isinstance(name, str) or not _ROLE.fullmatch(name):
        raise ValidationError({field: "must be a lower-case identifier of at most 63 characters"})
    return name


def _ensure_role(db: psycopg.Connection[Any], name: str, password: str | None) -> bool:
    exists = db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    created = False
    if not exists:
        try:
            db.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(sql.Identifier(name)))
            created = True
        except psycopg.errors.DuplicateObject:
            pass  # created by a concurrent run
    if password is not None:
        if not password or "\x00" in password:
            raise ValidationError({"password": "must be a non-empty string without NUL characters"})
        verifier = db.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
        db.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(verifier)))
    return created


def create_roles(
    db: psycopg.Connection[Any],
    *,
    app_role: str = "datalayer_app",
    readonly_role: str = "datalayer_readonly",
    app_password: str | None = None,
    readonly_password: str | None = None,
) -> dict[str, bool]:
    """Create (if missing) and grant the two roles in the current database; returns {role: created}.

    Run it as the schema owner (the role that ran the migrations).
    """
    app = _role(app_role, "app_role")
    ro = _role(readonly_role, "readonly_role")
    if app == ro:
        raise ValidationError({"readonly_role": "must differ from app_role"})
    created = {app: _ensure_role(db, app, app_password), ro: _ensure_role(db, ro, readonly_password)}
    roles = sql.SQL(", ").join([sql.Identifier(app), sql.Identifier(ro)])
    dbname = db.execute("SELECT current_database()").fetchone()
    assert dbname is not None
    tables = sql.SQL(", ").join(sql.Identifier(t) for t in APP_TABLES)
    functions = sql.SQL(", ").join(sql.SQL(f) for f in PARTITION_FUNCTIONS)  # fixed signatures, not input
    with db.transaction():
        db.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname[0]), roles))
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(roles))
        db.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(tables, roles))
        db.execute(sql.SQL("GRANT INSERT, UPDATE, DELETE ON {} TO {}").format(tables, sql.Identifier(app)))
        db.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(functions, sql.Identifier(app)))
    return created
