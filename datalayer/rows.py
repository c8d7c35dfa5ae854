"""Row factories that build attrs records straight from result tuples.

Rows are on the hot path: a flat record is built positionally (``cls(*values)``, no dict in between);
a record with nested records (``AnalysisWithFiles.files``) goes through the cattrs converter.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import attrs
from psycopg.rows import RowFactory, RowMaker, args_row

from datalayer.convert import converter

__all__ = ["attrs_row"]

T = TypeVar("T")


def _mentions_attrs_class(tp: Any) -> bool:
    if isinstance(tp, type) and attrs.has(tp):
        return True
    return any(_mentions_attrs_class(a) for a in typing.get_args(tp))


@functools.cache
def _is_flat(cls: type[Any]) -> bool:
    hints = typing.get_type_hints(cls)
    return not any(_mentions_attrs_class(hints[f.name]) for f in attrs.fields(cls))


@functools.cache
def attrs_row(cls: type[T]) -> RowFactory[T]:
    """A psycopg row factory returning ``cls`` records, columns matched to fields by position.

    >>> cur = conn.cursor(row_factory=attrs_row(User))  # doctest: +SKIP
    """
    if not attrs.has(cls):
        raise TypeError(f"attrs_row needs an attrs class, got {cls!r}")
    if _is_flat(cls):
        return args_row(cast(Callable[..., T], cls))
    names = tuple(f.name for f in attrs.fields(cls))

    def nested_row(cursor: Any) -> RowMaker[T]:
        def make(values: Sequence[Any]) -> T:
            return cast(T, converter.structure(dict(zip(names, values, strict=True)), cls))

        return make

    return nested_row
