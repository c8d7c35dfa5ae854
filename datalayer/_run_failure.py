"""What the query runner needs on its failure paths: naming the parameter psycopg could not send, showing
parameters without secrets, explaining a row that could not become a record, and the rows of a read
retried on another connection."""

from __future__ import annotations

import enum
import functools
import typing
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import cattrs
import psycopg
from cattrs.errors import AttributeValidationNote, ForbiddenExtraKeysError, IterableValidationNote
from psycopg.types.json import Json, Jsonb

from datalayer._sql import Query
from datalayer.convert import make_converter
from datalayer.errors import QueryError, ValidationError
from datalayer.rows import converted_fields, init_fields
from datalayer.text import nested_text_problem

__all__ = ["ARows", "Rows", "is_unsendable", "row_problem", "shown", "unstorable"]

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


class ARows(Rows):
    """``Rows`` read like an async cursor (the async twin's retried read)."""

    __slots__ = ()

    async def fetchone(self) -> Any:
        return super().fetchone()

    async def fetchall(self) -> list[Any]:  # type: ignore[override]
        return super().fetchall()


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


@functools.cache
def _explaining_converter() -> cattrs.Converter:
    # The row converter's rules with per-field error reports: built on the first failure only.
    return make_converter(detailed_validation=True)


def _kind(value: Any) -> str:
    """A value's type for a message (never the value: it may be a secret)."""
    names = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}
    return names.get(type(value)) or type(value).__qualname__


def _type_name(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp).replace("typing.", "")


def _leaf(exc: BaseException, value: Any, path: str, tp: Any) -> str:
    """Follow cattrs' notes down to the innermost failure: ``<path>: <why> (got <type>)``."""
    if isinstance(exc, cattrs.BaseValidationError):
        for sub in exc.exceptions:
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    if not isinstance(value, dict):
                        return f"{path}: expected an object for {_type_name(tp)}, got {_kind(value)}"
                    if isinstance(sub, KeyError) and note.name not in value:
                        return f"{path}: the object has no key {note.name!r} ({_type_name(tp)} needs it)"
                    return _leaf(sub, value.get(note.name), f"{path}.{note.name}", note.type)
                if isinstance(note, IterableValidationNote):
                    if not isinstance(value, list | tuple) or not isinstance(note.index, int):
                        return f"{path}: expected an array for {_type_name(tp)}, got {_kind(value)}"
                    return _leaf(sub, value[note.index], f"{path}[{note.index}]", note.type)
            if isinstance(sub, ForbiddenExtraKeysError):
                return f"{path}: unknown keys {sorted(sub.extra_fields)} for {_type_name(tp)}"
        first = exc.exceptions[0]
        return f"{path}: {_type_name(tp)}({type(first).__name__}) refused the value (got {_kind(value)})"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return f"{path}: not one of {tp.__qualname__}'s values (got {_kind(value)}); add the value to the enum"
    if str(exc).startswith("expected "):  # our converter's messages name types, never values
        return f"{path}: {exc} ({_type_name(tp)})"
    return f"{path}: cannot become {_type_name(tp)} ({type(exc).__name__}; got {_kind(value)})"


def _value_problem(value: Any, tp: Any, path: str) -> str | None:
    try:
        _explaining_converter().structure(value, tp)
    except Exception as e:  # anything the converter raised: explained, never re-raised
        return _leaf(e, value, path, tp)
    return None


def row_problem(result: type[Any], values: Sequence[Any], converted: Iterable[tuple[int, Any, Any]]) -> str | None:
    """Why ``values`` (one row as fetched) cannot become a ``result``: ``field <path>: <why>``, or None.

    ``converted`` lists (position, hook, type) of the fields that go through the converter. Failure path
    only; names the field and the value's type, never the value.
    """
    if not attrs.has(result):
        return _value_problem(values[0], result, "column 1") if values and values[0] is not None else None
    fields = init_fields(result)
    if len(values) != len(fields):
        return f"{len(values)} columns for the {len(fields)} fields of {result.__qualname__}"
    vals = list(values)
    for i, _, tp in converted:
        if vals[i] is not None and (problem := _value_problem(vals[i], tp, f"field {fields[i].name}")):
            return problem
        if vals[i] is not None:
            vals[i] = _explaining_converter().structure(vals[i], tp)
    hints = typing.get_type_hints(result)
    for f, raw in zip(fields, vals, strict=True):
        try:
            v = f.converter(raw) if callable(f.converter) else raw
            if f.validator is not None:
                f.validator(None, f, v)
        except Exception as e:  # the field's own converter or validator refused it
            kind = _type_name(hints.get(f.name, Any))
            return (
                f"field {f.name}: its {kind} converter or validator refused it ({type(e).__name__}; got {_kind(raw)})"
            )
    try:
        result(*vals) if not any(f.kw_only for f in fields) else result(
            **{f.alias: v for f, v in zip(fields, vals, strict=True)}
        )
    except Exception as e:  # __attrs_post_init__ and the like
        name = result.__qualname__
        return f"{name}(...) refused the row ({type(e).__name__}); its __init__ checks more than the field types"
    return None


def _field_names(result: type[Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fields = init_fields(result)
    return tuple(f.name for f in fields), tuple(f.alias for f in fields)


def column_problem(query: Query, result: type[Any], description: Sequence[Any] | None) -> QueryError | None:
    """A QueryError unless the result columns are ``result``'s init fields, by name and in order.

    Rows fill records by position: two columns swapped, or a defaulted field moved last, would
    otherwise put values into the wrong fields without an error.
    """
    columns = tuple(c.name for c in description or ())
    names, aliases = _field_names(result)
    if columns in (names, aliases):
        return None
    missing = [n for n in names if n not in columns]
    extra = [c for c in columns if c not in names and c not in aliases]
    why = (
        f"missing {', '.join(missing)}" if missing else "",
        f"extra {', '.join(extra)}" if extra else "",
        "" if missing or extra else "the same names in another order",
    )
    return QueryError(
        f"{query.location}: the result columns ({', '.join(columns) or 'none'}) are not the fields of "
        f"{result.__qualname__} ({', '.join(names)}): {'; '.join(w for w in why if w)}; rows fill fields by "
        "position, so select (or alias) one column per field, named and ordered as the fields",
        location=query.location,
    )


def row_failure(
    query: Query, result: type[Any], error: Exception, *, description: Sequence[Any] | None, first: int, rows: list[Any]
) -> QueryError:
    """The QueryError for a row the row maker could not turn into a ``result`` (failure path only).

    ``rows`` are the cursor's rows from the failing one on, fetched again as tuples; ``first`` is its
    row number.
    """
    where = query.location
    if attrs.has(result) and (bad := column_problem(query, result, description)) is not None:
        return bad
    converted = converted_fields(result) if attrs.has(result) else []
    for i, values in enumerate(rows, start=first + 1):
        if (problem := row_problem(result, values, converted)) is not None:
            return QueryError(f"{where}: row {i} cannot become a {result.__qualname__}: {problem}", location=where)
    return QueryError(f"{where}: a row cannot become a {result.__qualname__} ({type(error).__name__})", location=where)
