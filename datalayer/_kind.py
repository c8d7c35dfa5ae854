# Generated from datalayer/_kind_async.py by tools/async_to_sync.py: edit that file, then run the tool.
"""The one rule for the kind of connection a function takes (the sync twin, ``_kind.py``, is generated).

An async function given a sync connection would hand back coroutines that never run; a sync one given
an async connection would never wait for its result; anything else fails deep inside psycopg. Each
is refused first, with a ValidationError naming ``db`` and where the right kind comes from.
"""

from __future__ import annotations

from typing import Any

import psycopg

from datalayer._acompat import API
from datalayer.errors import ValidationError

__all__ = ["check_kind", "closed_error", "expired"]

# Where a connection of this kind comes from (the sync twin names ``datalayer``), for the messages.
_API = API


def check_kind(db: object, what: str = "db", *, open_: bool = False) -> None:
    """ValidationError naming ``what`` unless ``db`` is a psycopg.AsyncConnection (and, with ``open_``,
    not closed by its owner)."""
    if not isinstance(db, psycopg.Connection):
        wanted = psycopg.Connection.__name__
        raise ValidationError(
            {
                what: f"must be a psycopg.{wanted}, got {type(db).__name__}; the functions of {_API} take "
                f"one: pass a connection from {_API}.connection() or {_API}.get_db() (datalayer.aio for "
                "async code, datalayer for sync code)"
            }
        )
    if open_ and db.closed and (closed := closed_error(db)) is not None:
        raise closed


def closed_error(db: psycopg.Connection[Any]) -> ValidationError | None:
    """The error for a connection its owner closed (one the server dropped is a TransientError).

    Failure path only: ``closed`` is asked after psycopg refused the connection, never per call.
    """
    if db.closed and not db.broken and not expired(db):  # closed by its deadline: the server never answered
        return ValidationError(
            {"db": f"is closed; pass an open connection (use it inside the block of {_API}.connection())"}
        )
    return None


def expired(db: psycopg.Connection[Any]) -> bool:
    return bool(getattr(db, "_dl_expired", False))
