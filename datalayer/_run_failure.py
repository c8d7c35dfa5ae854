"""What the query runner needs on its failure paths: naming the parameter psycopg could not send, showing
parameters without secrets, and the rows of a read retried on another connection."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.types.json import Json, Jsonb

from datalayer._sql import Query
from datalayer.errors import ValidationError
from datalayer.text import nested_text_problem

__all__ = ["Rows", "is_unsendable", "shown", "unstorable"]

_SECRET_PARAMS = frozenset({"hashed_password", "password", "token", "secret", "value"})


class Rows:
    """The rows of a read that was retried on another connection, read like a cursor."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows


def shown(params: dict[str, Any]) -> str:
    """The parameters for an error message: secrets masked, long values cut."""
    parts = []
    for k, v in params.items():
        text = "***" if k in _SECRET_PARAMS else repr(v)
        parts.append(f"{k}={text[:60]}")
    return ", ".join(parts)


def bad_text(value: Any) -> str | None:
    """What is wrong with the first unstorable text inside a parameter value (lists and dicts too)."""
    # psycopg's Json/Jsonb wrappers keep the value in .obj
    return nested_text_problem(value.obj if isinstance(value, Json | Jsonb) else value)


def unstorable(query: Query, params: Iterable[tuple[str, Any]], e: Exception) -> Exception:
    """The ValidationError naming the parameter psycopg could not send (lone surrogate, NUL), or ``e``.

    A backstop: the repositories check their text first. Runs on the failure path only.
    """
    for name, value in params:
        if (problem := bad_text(value)) is not None:
            return ValidationError({name: f"{problem} (sent to {query.location})"})
    return e


def is_unsendable(e: Exception) -> bool:
    """True when psycopg could not send a parameter (text PostgreSQL cannot store)."""
    # psycopg refuses NUL in text client-side, as a DataError without a SQLSTATE.
    return isinstance(e, UnicodeEncodeError) or (isinstance(e, psycopg.DataError) and e.sqlstate is None)
