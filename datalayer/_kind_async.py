"""The one rule for the kind of connection a function takes (the sync twin, ``_kind.py``, is generated).

An async function given a sync connection would hand back coroutines that never run; a sync one given
an async connection would never wait for its result; anything else fails deep inside psycopg. Each
is refused first, with a ValidationError naming ``db`` and where the right kind comes from.
"""

from __future__ import annotations

import psycopg

from datalayer._acompat import AAPI
from datalayer.errors import ValidationError

__all__ = ["check_kind"]

# Where a connection of this kind comes from (the sync twin names ``datalayer``), for the messages.
_API = AAPI


def check_kind(db: object, what: str = "db") -> None:
    """ValidationError naming ``what`` unless ``db`` is a psycopg.AsyncConnection."""
    if not isinstance(db, psycopg.AsyncConnection):
        wanted = psycopg.AsyncConnection.__name__
        raise ValidationError(
            {
                what: f"must be a psycopg.{wanted}, got {type(db).__name__}; the functions of {_API} take "
                f"one: pass a connection from {_API}.connection() or {_API}.get_db() (datalayer.aio for "
                "async code, datalayer for sync code)"
            }
        )
