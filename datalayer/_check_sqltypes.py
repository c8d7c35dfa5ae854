"""The SQL type of an expression, where check can read it without the server's planner.

Used where nullability or a json shape depends on a type: ``lower(span)`` of a range is NULL for an
empty range, ``json_build_object('a', name)`` holds text. Known: casts, literals, table and view
columns, and a few text functions; anything else is None (unknown), and callers stay on the safe side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datalayer._check_catalog import TypeInfo
from datalayer._check_scope import Scope, Unsure, node_name

if TYPE_CHECKING:
    from datalayer._check_nullability import Analysis

__all__ = ["entry_types", "sql_type"]

# Functions returning text for text input (lower/upper of a range return its bound: not listed here).
_TEXT_FUNCTIONS = frozenset(
    {"concat", "concat_ws", "initcap", "btrim", "ltrim", "rtrim", "replace", "md5", "format", "left", "right"}
)


def sql_type(an: Analysis, node: Any, scope: Scope) -> TypeInfo | None:
    """The type of ``node`` in ``scope`` (None: check cannot tell)."""
    kind = type(node).__name__
    catalog = an.catalog
    if kind == "TypeCast":
        names = ".".join(node_name(n) for n in node.typeName.names)
        bounds = "[]" * len(node.typeName.arrayBounds or ())
        return catalog.type_named(names + bounds)
    if kind == "A_Const":
        if node.isnull:
            return None
        val = type(node.val).__name__
        name = {"Integer": "int4", "Float": "numeric", "Boolean": "bool", "String": "text"}.get(val)
        return None if name is None else catalog.type_named(name)
    if kind == "ColumnRef":
        return _column_type(an, node, scope)
    if kind == "CollateClause":
        return sql_type(an, node.arg, scope)
    if kind == "FuncCall":
        fname = node_name(node.funcname[-1]).lower()
        if fname in ("lower", "upper") and node.args and len(node.args) == 1:
            inner = sql_type(an, node.args[0], scope)
            return inner if inner is not None and inner.kind not in ("r", "m") else None
        if fname in _TEXT_FUNCTIONS:
            return catalog.type_named("text")
        if fname == "count":
            return catalog.type_named("int8")
        return None
    if kind == "A_Expr" and node.name and node_name(node.name[-1]) == "||":
        sides = [sql_type(an, s, scope) for s in (node.lexpr, node.rexpr)]
        if all(s is not None and s.name in ("text", "varchar", "bpchar") for s in sides):
            return catalog.type_named("text")
    return None


def _column_type(an: Analysis, node: Any, scope: Scope) -> TypeInfo | None:
    fields = node.fields
    if type(fields[-1]).__name__ == "A_Star" or len(fields) > 2:
        return None
    names = [node_name(f) for f in fields]
    s: Scope | None = scope
    while s is not None:
        candidates = [s.entry(names[0])] if len(names) == 2 else list(s.entries)
        for entry in candidates:
            if entry is None:
                continue
            try:
                cols = an.entry_columns(entry)
            except Unsure:
                return None
            hits = [i for i, c in enumerate(cols) if c.name == names[-1]]
            if not hits:
                continue
            if len(hits) > 1 or entry.relname is None:
                return None  # a subquery's, CTE's or function's column: not followed
            rel = an.catalog.relation(entry.relname)
            if rel is None:
                return None
            types = an.catalog.column_types(rel[1])
            return an.catalog.type_info(types[hits[0]]) if hits[0] < len(types) else None
        if len(names) == 2 and s.entry(names[0]) is not None:
            return None
        s = s.parent
    return None


def entry_types(an: Analysis, entry: Any) -> list[TypeInfo | None]:
    """The types of a FROM item's columns, for a table or view ([] otherwise)."""
    if entry.relname is None:
        return []
    rel = an.catalog.relation(entry.relname)
    return [] if rel is None else [an.catalog.type_info(t) for t in an.catalog.column_types(rel[1])]
