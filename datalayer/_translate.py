"""Turn psycopg errors into datalayer errors that name the query, the constraint and the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg

from datalayer.errors import (
    CommitUnknown,
    DataLayerError,
    IntegrityConflict,
    QueryError,
    TransientError,
    ValidationError,
)

if TYPE_CHECKING:
    from datalayer._sql import Query

__all__ = [
    "SESSION_TIMEOUTS",
    "constraint_field",
    "describe_error",
    "is_connection_lost",
    "lost_before_sending",
    "never_sent",
    "read_only_write",
    "register_constraint_fields",
    "translate",
]

# Which table and input field each constraint guards, so that callers can point at the form field.
# Filled by datalayer.registry.register (the built-in schema registers its own at import).
_constraint_fields: dict[str, tuple[str, str]] = {}
# What PostgreSQL's detail names for a unique or foreign-key violation over one column: Key (column)=(value).
# The column as quote_identifier writes it: bare, or in double quotes (doubled inside) when it holds
# anything but lower-case ASCII letters, digits and underscores; several columns or an expression match
# neither form.
_KEY_COLUMN = re.compile(r'Key \((?:"((?:[^"]|"")+)"|([^\s(),"=]+))\)=')


def register_constraint_fields(fields: Mapping[str, tuple[str, str]]) -> None:
    """Name the (table, field) of each constraint in error translation: the whole map, replacing the last.

    ``datalayer.registry.register`` is the caller; it merges every registered registry.
    """
    _constraint_fields.clear()
    _constraint_fields.update(fields)


def constraint_field(constraint: str | None) -> tuple[str, str] | None:
    """The registered (table, field) a constraint guards, or None."""
    return _constraint_fields.get(constraint or "")


_TRANSIENT_STATES = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "55P03": "lock not available (lock_timeout)",
    "53300": "too many connections",
    "57P01": "server shutting down",
    "57P02": "server crashed",
    "57P03": "server cannot accept connections now",
}


# The server ended the session for a transaction left idle (IDLE_IN_TRANSACTION_TIMEOUT) or running
# too long (transaction_timeout, PostgreSQL 17+): the connection is gone and nothing of the transaction
# was committed.
SESSION_TIMEOUTS = ("25P03", "25P04")


def is_connection_lost(
    e: BaseException, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None = None
) -> bool:
    """True when the error means the connection is gone (not a problem with the statement)."""
    state = (e.sqlstate or "") if isinstance(e, psycopg.Error) else ""
    if state in SESSION_TIMEOUTS:
        return True
    if not isinstance(e, psycopg.OperationalError):
        return False
    if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return True
    if conn is not None and (conn.broken or conn.closed):
        return True
    return not state


# psycopg's and libpq's words for a request that never left (or only partly left) this process: the
# server runs nothing it has not received in full (a partial extended-protocol request has no Sync, so
# nothing commits).
_NOT_SENT = ("sending ", "flushing failed", "could not send data", "the connection is closed", "the connection is lost")


def never_sent(e: BaseException) -> bool:
    """True when the error says the request never (fully) reached the server."""
    return any(m in str(e) for m in _NOT_SENT)


def lost_before_sending(query: Query | None = None) -> TransientError:
    """The error for a statement not sent because its connection was known dead beforehand."""
    at = f" before {query.location} was sent" if query else " before COMMIT was sent"
    return TransientError(
        f"the database connection was found closed by the server{at}; nothing was written, retry the work "
        "on a new connection"
    )


# A write on a connection that serves reads only (SQLSTATE 25006, or refused before it was sent).
_READ_ONLY = (
    "serves reads only (a replica connection from connection(replica=True), or a read-only transaction); "
    "run writes on the primary: connection() or transaction()"
)


def read_only_write(query: Query) -> QueryError:
    """The error for a write query refused before it was sent on a replica connection."""
    return QueryError(
        f"{query.location} writes, and this connection {_READ_ONLY}", location=query.location, sqlstate="25006"
    )


def translate(
    e: psycopg.Error,
    query: Query | None = None,
    *,
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None = None,
    write_may_have_committed: bool = False,
) -> DataLayerError:
    """The datalayer error for a psycopg error raised while running ``query``.

    ``write_may_have_committed``: the statement was a write running as its own transaction
    (autocommit), so a lost connection leaves its outcome unknown.
    """
    diag = e.diag
    position = int(diag.statement_position) if diag.statement_position else None
    where = query.location_at(position) if query else None
    at = f" at {where}" if where else ""
    state = e.sqlstate

    if is_connection_lost(e, conn):
        if write_may_have_committed and not never_sent(e):
            return CommitUnknown(
                f"the connection was lost while a write was in flight{at}: it may or may not have "
                "committed; read back what you wrote before retrying"
            )
        return TransientError(
            f"the database connection was lost{at} ({_first_line(e)}); nothing was committed, retry the work",
            sqlstate=state,
        )
    if state in _TRANSIENT_STATES:
        return TransientError(
            f"{_TRANSIENT_STATES[state]}{at}: {diag.message_primary}; retry the transaction "
            "(run_in_transaction does this for you)",
            sqlstate=state,
        )
    if isinstance(e, pg.IntegrityError) or (state or "").startswith("23"):
        return _integrity(e, at)
    if (state or "").startswith("22"):
        field = diag.column_name or "input"
        return ValidationError({field: f"{diag.message_primary or _first_line(e)}{at}"})
    if state == "25P02":
        return QueryError(
            f"the transaction was already aborted by an earlier error{at}; roll it back and retry",
            location=where,
            sqlstate=state,
        )
    if state == "25006":
        return QueryError(f"{diag.message_primary}{at}: the connection {_READ_ONLY}", location=where, sqlstate=state)
    if state == "57014":
        return QueryError(
            f"the statement was cancelled{at} ({diag.message_primary}); raise STATEMENT_TIMEOUT or make "
            "the query cheaper",
            location=where,
            sqlstate=state,
        )
    if state in ("42P05", "26000") and "_pg3_" in (diag.message_primary or ""):
        # psycopg's own prepared statements, gone or doubled: another client's session under ours.
        return QueryError(
            f"{diag.message_primary}{at}: behind PgBouncer in transaction mode? set DATABASE_POOLER=transaction",
            location=where,
            sqlstate=state,
        )
    hint = f" (hint: {diag.message_hint})" if diag.message_hint else ""
    return QueryError(
        f"{diag.message_primary or _first_line(e)}{at}{hint}",
        location=where,
        sqlstate=state,
    )


def _integrity(e: psycopg.Error, at: str) -> IntegrityConflict:
    diag = e.diag
    constraint = diag.constraint_name
    table, field = _constraint_fields.get(constraint or "") or (diag.table_name, _field_of(diag))
    subject = f"{table}.{field}" if table and field else (table or "row")
    if isinstance(e, pg.UniqueViolation):
        msg = f"{subject} already exists (constraint {constraint}){at}; use a different {field or 'value'}"
    elif isinstance(e, pg.ForeignKeyViolation):
        if "still referenced" in (diag.message_detail or ""):
            msg = f"{subject} is still referenced by other rows (constraint {constraint}){at}; delete them first"
        else:
            msg = (
                f"{subject} refers to a row that does not exist (constraint {constraint}){at}; "
                "create it first or check the id"
            )
    elif isinstance(e, pg.NotNullViolation):
        field = diag.column_name or field
        msg = f"{diag.table_name}.{field} must not be null{at}; give it a value"
    elif isinstance(e, pg.CheckViolation):
        msg = f"{subject} is not allowed by constraint {constraint}{at}; see the migration that defines it"
    else:
        msg = f"{diag.message_primary or _first_line(e)} (constraint {constraint}){at}"
    return IntegrityConflict(msg, constraint=constraint, field=field)


def _field_of(diag: psycopg.errors.Diagnostic) -> str | None:
    # An unregistered constraint: a unique or foreign-key violation over one plain column names it in
    # its detail; an expression or several columns name no single field.
    if diag.column_name:
        return diag.column_name
    m = _KEY_COLUMN.match(diag.message_detail or "")
    if m is None:
        return None
    return m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)


def describe_error(e: BaseException) -> str:
    """One line saying what went wrong: PostgreSQL's primary message, else the error's first line."""
    if isinstance(e, psycopg.Error) and e.diag.message_primary:
        return str(e.diag.message_primary)
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


_first_line = describe_error
