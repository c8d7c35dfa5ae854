"""The connection side of running a query: refusing what is not an open connection of the right kind,
and the cursor datalayer keeps per pooled connection (reused, so a call does not build one)."""

from __future__ import annotations

from typing import Any

import psycopg

from datalayer._kind_async import check_kind, closed_error, expired
from datalayer._translate import translate

__all__ = ["check_connection", "closed_error", "expired", "kept_cursor", "new_cursor"]


def check_connection(db: object, *, open_: bool = False) -> None:
    """ValidationError naming ``db`` unless it is a psycopg.AsyncConnection (and, with ``open_``, open).

    Called where a cursor is made, and first by functions that do other work before their query
    (system_log's writers keep partitions ahead, which logs rather than raises its own failures), so a
    wrong or closed ``db`` is refused before anything else.
    """
    # Not per call: a connection of the other kind would hand back coroutines (or refuse to be
    # awaited) instead of rows, anything else an AttributeError.
    check_kind(db, open_=open_)


def new_cursor(db: psycopg.AsyncConnection[Any], factory: Any = None) -> psycopg.AsyncCursor[Any]:
    check_connection(db)
    try:
        # Our own cursor leaves the session as it was: no reset round trip when the connection goes back.
        dirty = getattr(db, "_dl_dirty", None)
        cur: psycopg.AsyncCursor[Any] = db.cursor() if factory is None else db.cursor(row_factory=factory)
        if dirty is not None:
            db._dl_dirty = dirty  # type: ignore[attr-defined]
        return cur
    except psycopg.OperationalError as e:
        raise closed_error(db) or translate(e, conn=db) from None


def kept_cursor(db: psycopg.AsyncConnection[Any]) -> psycopg.AsyncCursor[Any]:
    cur: psycopg.AsyncCursor[Any] | None = getattr(db, "_dl_cursor", None)
    if cur is None or cur.closed:
        cur = new_cursor(db)
        if hasattr(db, "_dl_cursor"):  # a pooled connection (or a get_db() lease of one)
            db._dl_cursor = cur
    return cur
