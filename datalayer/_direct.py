"""Proof that a connection meant to be direct is a PostgreSQL session of its own, and that the direct and
the pooled targets reach the same database.

A pooler in front of the direct address (PgBouncer with ``ignore_startup_parameters = options``) would
share one server session among clients: a session advisory lock would then not be exclusive, and two
migrators would interleave. Every direct connection therefore sends a marker setting in ``options`` and
reads it back; a pooler drops it (or refuses ``options`` outright).
"""

from __future__ import annotations

from typing import Any

import psycopg

from datalayer._translate import describe_error
from datalayer.config import DatabaseTarget, Settings
from datalayer.errors import ConfigError

__all__ = ["MARKER_OPTION", "connect_direct", "prove_session", "refused_options", "same_database_problem"]

_MARKER = "datalayer.direct_session"
MARKER_OPTION = f"-c {_MARKER}=on"


def refused_options(e: BaseException) -> bool:
    """Whether a connection failure is a pooler refusing the ``options`` startup parameter."""
    return "unsupported startup parameter" in str(e) and "options" in str(e)


def not_a_session(settings: Settings, target: DatabaseTarget) -> ConfigError:
    """The error for a direct connection that reached a pooler rather than the server."""
    if settings.direct is not None:
        return ConfigError(
            f"DATABASE_DIRECT_URL ({target.display}) reaches a pooler, not the PostgreSQL server (the options "
            "connection parameter was dropped or refused): migrations and session advisory locks need a "
            "session of their own; set DATABASE_DIRECT_URL to the server itself",
            variable="DATABASE_DIRECT_URL",
        )
    return ConfigError(
        f"DATABASE_URL ({target.display}) reaches a pooler, not the PostgreSQL server (the options connection "
        "parameter was dropped or refused): behind PgBouncer in transaction mode? set "
        "DATABASE_POOLER=transaction and DATABASE_DIRECT_URL to the server itself",
        variable="DATABASE_URL",
    )


def prove_session(conn: psycopg.Connection[Any], settings: Settings, target: DatabaseTarget) -> None:
    """ConfigError unless ``conn`` (opened with MARKER_OPTION) kept its ``options``: a session of its own."""
    row = conn.execute("SELECT current_setting(%s, true)", (_MARKER,)).fetchone()
    if not conn.autocommit:
        conn.rollback()
    if row is None or row[0] != "on":
        raise not_a_session(settings, target)


def connect_direct(params: dict[str, Any], settings: Settings, target: DatabaseTarget) -> psycopg.Connection[Any]:
    """``psycopg.connect(**params)`` (whose ``options`` carry MARKER_OPTION), proved a session of its own.

    ConfigError when a pooler refused ``options`` or dropped it; other failures are psycopg's to the caller.
    """
    try:
        conn = psycopg.connect(**params)
    except psycopg.OperationalError as e:
        if refused_options(e):
            raise not_a_session(settings, target) from None
        raise
    try:
        prove_session(conn, settings, target)
    except BaseException:
        conn.close()
        raise
    return conn


def _identity(conn: psycopg.Connection[Any]) -> tuple[str, int | None]:
    # A provider may revoke pg_control_system() from PUBLIC: then the database name is all there is.
    row = conn.execute(
        "SELECT current_database(), has_function_privilege('pg_control_system()', 'EXECUTE')", prepare=False
    ).fetchone()
    name, allowed = (str(row[0]), bool(row[1])) if row else ("", False)
    system = None
    if allowed:
        found = conn.execute("SELECT system_identifier FROM pg_control_system()", prepare=False).fetchone()
        system = found[0] if found else None
    if not conn.autocommit:
        conn.rollback()
    return name, system


def same_database_problem(direct: psycopg.Connection[Any], settings: Settings, pooled: DatabaseTarget) -> str | None:
    """None when DATABASE_DIRECT_URL (``direct``, a connection) and DATABASE_URL (``pooled``) reach the same
    database of the same cluster (compared by what the server reports, so a pooler's alias is no
    difference), else what differs; only behind a pooler with a direct URL (else None)."""
    if settings.pooler == "none" or settings.direct is None:
        return None
    try:
        with psycopg.connect(
            pooled.conninfo(),
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=str(settings.connect_timeout),
            application_name="datalayer-direct-check",
        ) as conn:
            through = _identity(conn)
    except psycopg.Error as e:
        return (
            f"cannot reach DATABASE_URL ({pooled.display}) to check it is the database DATABASE_DIRECT_URL "
            f"reaches: {describe_error(e)}"
        )
    try:
        own = _identity(direct)
    except psycopg.Error as e:
        return f"cannot read which database DATABASE_DIRECT_URL reaches: {describe_error(e)}"
    if own == through:
        return None
    what = "database" if own[1] == through[1] else "PostgreSQL cluster"
    return (
        f"DATABASE_DIRECT_URL reaches another {what} than DATABASE_URL: database {own[0]!r} "
        f"(system {own[1]}) directly, {through[0]!r} (system {through[1]}) through the pooler; point both at "
        "the same database"
    )
