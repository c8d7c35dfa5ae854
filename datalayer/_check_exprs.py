"""May an expression be NULL? One pglast node at a time, each answer with its reason.

An expression is proven NOT NULL only by the rules below; any other node "may be NULL" and names
itself, so a finding says what to annotate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datalayer._check_functions import (
    AGGREGATES,
    ALWAYS_VALUE,
    FIRST_ARG_STRICT,
    GROUP_STRICT,
    STRICT,
    WINDOW_NOT_NULL,
)
from datalayer._check_scope import Scope, Unsure, Verdict, node_name
from datalayer._check_sqltypes import sql_type

if TYPE_CHECKING:
    from datalayer._check_nullability import Analysis

__all__ = ["expr"]

NOT_NULL = Verdict(None, None)
_JSON_NULLABLE_OPS = {"->", "->>", "#>", "#>>"}
_TEXT_SEARCH = {"to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery"}


def _first(verdicts: list[Verdict]) -> str | None:
    return next((v.why for v in verdicts if v.why), None)


def expr(an: Analysis, node: Any, scope: Scope) -> Verdict:
    """Why ``node`` may be NULL in ``scope`` (``Verdict(None, …)``: it cannot)."""
    kind = type(node).__name__
    if kind == "ColumnRef":
        return an.column_ref(node, scope)
    if kind == "A_Const":
        return Verdict("a NULL literal") if node.isnull else Verdict(None, _literal_elements(node))
    if kind == "ParamRef":
        return Verdict("a parameter can be passed None", "a parameter's array may hold NULL elements")
    if kind == "TypeCast":
        inner = an.expr(node.arg, scope)
        type_name = ".".join(node_name(n) for n in node.typeName.names)
        if inner.why and an.catalog.domain_not_null(type_name):
            return Verdict(None, inner.elements)  # a cast to a NOT NULL domain raises instead of yielding NULL
        return inner
    if kind in ("CollateClause",):
        return an.expr(node.arg, scope)
    if kind in ("NullTest", "BooleanTest", "GroupingFunc", "RowExpr"):
        return NOT_NULL
    if kind == "SQLValueFunction":
        if int(node.op) == 14:  # CURRENT_SCHEMA
            return Verdict("current_schema is NULL when no schema on the search_path exists")
        return NOT_NULL
    if kind == "A_ArrayExpr":
        items = [an.expr(e, scope) for e in node.elements or ()]
        return Verdict(None, _first(items) and f"an element may be NULL: {_first(items)}")
    if kind == "BoolExpr":
        return Verdict(_first([an.expr(a, scope) for a in node.args]))
    if kind in ("CoalesceExpr", "MinMaxExpr"):
        args = [an.expr(a, scope) for a in node.args]
        why = None if any(a.why is None for a in args) else "every argument may be NULL"
        return Verdict(why, next((a.elements for a in args if a.elements), None))
    if kind == "CaseExpr":
        if node.defresult is None:
            return Verdict("CASE without ELSE is NULL when no WHEN matches")
        results = [an.expr(w.result, scope) for w in node.args] + [an.expr(node.defresult, scope)]
        return Verdict(_first(results), next((r.elements for r in results if r.elements), None))
    if kind == "A_Expr":
        return _a_expr(an, node, scope)
    if kind == "SubLink":
        return _sublink(an, node, scope)
    if kind == "FuncCall":
        return _func(an, node, scope)
    if kind == "A_Indirection":
        return Verdict("a subscript or field selection is NULL when the element or field is missing")
    return Verdict(f"check does not analyse {kind} expressions")


def _literal_elements(node: Any) -> str | None:
    val = getattr(node.val, "sval", None)
    if isinstance(val, str) and val.startswith("{"):
        items = [i.strip().strip('"').lower() for i in val.strip("{}").split(",")]
        return "the array literal holds NULL" if "null" in items else None
    return None


def _a_expr(an: Analysis, node: Any, scope: Scope) -> Verdict:
    op = node_name(node.name[-1]) if node.name else ""
    k = int(node.kind)
    if k in (3, 4):  # IS [NOT] DISTINCT FROM
        return NOT_NULL
    if k == 5:
        return Verdict("NULLIF returns NULL when its arguments are equal")
    operands = [o for o in (node.lexpr, node.rexpr) if o is not None]
    flat: list[Any] = []
    pending = list(operands)
    while pending:  # a row constructor's comparison is NULL when a member decides nothing: compare members
        o = pending.pop(0)
        if isinstance(o, list | tuple):
            pending += list(o)
        elif type(o).__name__ == "RowExpr":
            pending += list(o.args or ())
        else:
            flat.append(o)
    verdicts = [an.expr(o, scope) for o in flat]
    if why := _first(verdicts):
        return Verdict(why)
    if k in (1, 2):  # op ANY / ALL (array)
        elements = an.expr(node.rexpr, scope).elements
        if elements:
            return Verdict(f"{op} ANY/ALL(array) is NULL when no element decides and one is NULL ({elements})")
        return NOT_NULL
    if k == 0 and op in _JSON_NULLABLE_OPS:
        return Verdict(f"the json operator {op} is NULL when the key, index or path is missing")
    if k == 0 and op in ("@@", "@?") and not any(_is_text_search(o) for o in flat):
        return Verdict(f"the jsonb operator {op} is NULL when the path yields no single boolean")
    return NOT_NULL  # other operators, IN, LIKE, SIMILAR, BETWEEN: strict, NULL only from NULL operands


def _is_text_search(node: Any) -> bool:
    kind = type(node).__name__
    if kind == "FuncCall":
        return node_name(node.funcname[-1]).lower() in _TEXT_SEARCH
    if kind == "TypeCast":
        return node_name(node.typeName.names[-1]).lower() in ("tsvector", "tsquery")
    return False


def _sublink(an: Analysis, node: Any, scope: Scope) -> Verdict:
    k = int(node.subLinkType)
    if k == 0:  # EXISTS
        return NOT_NULL
    try:
        outs = an.statement(node.subselect, scope)
    except Unsure as e:
        return Verdict(str(e))
    first = outs[0].verdict if outs else Verdict("the subquery returns no column")
    if k == 6:  # ARRAY(subquery): an empty array when no row
        return Verdict(None, first.why and f"an element may be NULL: {first.why}")
    if k == 4:  # a scalar subquery
        if _one_row(node.subselect):
            return first
        return Verdict("a scalar subquery is NULL when it finds no row")
    if k in (1, 2):  # IN / op ANY / ALL (subquery)
        test = an.expr(node.testexpr, scope) if node.testexpr is not None else NOT_NULL
        return Verdict(test.why or (first.why and "IN/ANY (subquery) is NULL when no row matches and one is NULL"))
    return Verdict("a row comparison with a subquery may be NULL")


def _one_row(stmt: Any) -> bool:
    """Does a SELECT always return exactly one row (no FROM and no WHERE, or an aggregate without GROUP BY)?"""
    if type(stmt).__name__ != "SelectStmt" or int(getattr(stmt, "op", 0) or 0) != 0 or stmt.valuesLists:
        return False
    if stmt.groupClause or stmt.havingClause or stmt.limitCount or stmt.limitOffset or not stmt.targetList:
        return False
    if not stmt.fromClause:
        return stmt.whereClause is None
    kinds = [_aggregate_kind(t.val) for t in stmt.targetList]
    return all(kinds) and "aggregate" in kinds


def _aggregate_kind(node: Any) -> str | None:
    """ "aggregate" for an aggregate (or coalesce/cast of one), "constant" for a literal, else None."""
    kind = type(node).__name__
    if kind == "FuncCall":
        name = node_name(node.funcname[-1]).lower()
        return "aggregate" if node.over is None and (name in AGGREGATES or name == "count") else None
    if kind in ("CoalesceExpr", "MinMaxExpr"):
        kinds = [_aggregate_kind(a) for a in node.args]
        return "aggregate" if all(kinds) and "aggregate" in kinds else None
    if kind == "TypeCast":
        return _aggregate_kind(node.arg)
    return "constant" if kind == "A_Const" else None


def _func(an: Analysis, node: Any, scope: Scope) -> Verdict:
    schema = [node_name(n) for n in node.funcname[:-1]]
    fname = node_name(node.funcname[-1]).lower()
    if schema and schema != ["pg_catalog"]:
        return Verdict(f"{'.'.join(schema)}.{fname}() is not a function check knows never returns NULL")
    if node.over is not None:
        if fname in WINDOW_NOT_NULL:
            return NOT_NULL
        if fname in ("lead", "lag") and len(node.args or ()) == 3:  # the default fills the missing row
            return Verdict(_first([an.expr(a, scope) for a in node.args]))
        return Verdict(f"the window function {fname}() may be NULL (no such row in the frame)")
    if fname == "count":
        return NOT_NULL
    args = list(node.args or ())
    if fname in AGGREGATES:
        an.in_aggregate += 1
        try:
            verdicts = [an.expr(a, scope) for a in args]
        finally:
            an.in_aggregate -= 1
        first = _first(verdicts[:1])
        elements = first and f"array_agg collects NULL elements: {first}" if fname == "array_agg" else None
        # Every group has a row: array_agg and json_agg collect NULL inputs too, the others skip them.
        keeps_nulls = fname in ("array_agg", "json_agg", "jsonb_agg")
        if (
            scope.grouped
            and node.agg_filter is None
            and (keeps_nulls or (fname in GROUP_STRICT and not _first(verdicts)))
        ):
            return Verdict(None, elements)
        how = "a group has no non-NULL input" if scope.grouped else "there are no rows (no GROUP BY)"
        if node.agg_filter is not None:
            how = "its FILTER leaves no row"
        return Verdict(f"{fname}() is NULL when {how}", elements)
    if fname in ALWAYS_VALUE:
        return NOT_NULL
    if fname in ("lower", "upper") and len(args) == 1:
        typ = sql_type(an, args[0], scope)
        if typ is None or typ.kind in ("r", "m"):  # a range's bound is NULL when it is empty or unbounded
            why = "its argument may be a range (NULL when empty or unbounded); cast it to text if it is text"
            return Verdict(f"{fname}() of a range is NULL when the range is empty or unbounded" if typ else why)
    if fname in STRICT:
        return Verdict(_first([an.expr(a, scope) for a in args]))
    if fname in FIRST_ARG_STRICT:
        return Verdict(_first([an.expr(a, scope) for a in args[:1]]))
    return Verdict(f"{fname}() is not on check's list of functions that never return NULL for non-NULL input")
