"""Row factories that build attrs records (and single values) straight from result tuples.

Rows are on the hot path: a flat record is built positionally (``cls(*values)``, no dict in between),
a record with keyword-only fields by keyword. Only the fields psycopg cannot deliver as they are typed
(nested records and lists of them read from json, enums read from text) go through the cattrs
converter, each with its structure hook looked up once.
"""

from __future__ import annotations

import enum
import functools
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import attrs
from psycopg.rows import RowFactory, RowMaker, args_row, scalar_row

from datalayer.convert import converter

__all__ = ["attrs_row", "converted_fields", "init_fields", "value_row"]

T = TypeVar("T")


def init_fields(cls: type[Any]) -> list[Any]:
    """The fields a row fills, in the order its columns fill them (``init=False`` fields take no column).

    ``attrs.Attribute`` objects, typed Any: attrs' stubs make ``alias`` optional though attrs always sets it.
    """
    return [f for f in attrs.fields(cls) if f.init]


def _needs_converter(tp: Any) -> bool:
    """True when psycopg's value for ``tp`` is not already a ``tp``: records (json) and enums (text)."""
    if isinstance(tp, type) and (attrs.has(tp) or issubclass(tp, enum.Enum)):
        return True
    return any(_needs_converter(a) for a in typing.get_args(tp))


def _converted(hints: dict[str, Any], fields: Sequence[attrs.Attribute[Any]]) -> list[tuple[int, Any, Any]]:
    """(position, structure hook, type) of every field the converter must build."""
    out = []
    for i, f in enumerate(fields):
        tp = hints.get(f.name, Any)
        if _needs_converter(tp):
            out.append((i, converter.get_structure_hook(tp), tp))
    return out


@functools.cache
def converted_fields(cls: type[Any]) -> list[tuple[int, Any, Any]]:
    """(position, structure hook, type) of every init field of ``cls`` the converter builds."""
    return _converted(typing.get_type_hints(cls), init_fields(cls))


@functools.cache
def attrs_row(cls: type[T]) -> RowFactory[T]:
    """A psycopg row factory returning ``cls`` records, columns matched to fields by position.

    >>> cur = conn.cursor(row_factory=attrs_row(User))  # doctest: +SKIP
    """
    if not attrs.has(cls):
        raise TypeError(f"attrs_row needs an attrs class, got {cls!r}")
    fields = init_fields(cls)
    convert = converted_fields(cls)
    # Keyword-only fields cannot be passed by position: build by keyword (init takes the aliases).
    names = tuple(f.alias for f in fields) if any(f.kw_only for f in fields) else None
    build = cast(Callable[..., T], cls)
    if not convert:
        if names is None:
            return args_row(build)

        def keyword_row(cursor: Any) -> RowMaker[T]:
            def make(values: Sequence[Any]) -> T:
                return build(**dict(zip(names, values, strict=True)))

            return make

        return keyword_row

    def converted_row(cursor: Any) -> RowMaker[T]:
        def make(values: Sequence[Any]) -> T:
            vals = list(values)
            for i, structure, tp in convert:
                if (v := vals[i]) is not None:  # NULL stays None, as in a flat record
                    vals[i] = structure(v, tp)
            return build(*vals) if names is None else build(**dict(zip(names, vals, strict=True)))

        return make

    return converted_row


@functools.cache
def value_row(tp: type[T]) -> RowFactory[T]:
    """A row factory returning the first column as a ``tp`` (an enum is built from its value)."""
    if not _needs_converter(tp):
        return cast(RowFactory[T], scalar_row)
    structure = converter.get_structure_hook(tp)

    def converted_value_row(cursor: Any) -> RowMaker[T]:
        def make(values: Sequence[Any]) -> T:
            v = values[0]
            return cast(T, v if v is None else structure(v, tp))

        return make

    return converted_value_row
