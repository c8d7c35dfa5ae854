"""The FROM items a statement's expressions can name, for ``datalayer check``'s nullability analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import attrs

__all__ = [
    "UNSURE_ELEMENTS",
    "Cte",
    "Entry",
    "Out",
    "Scope",
    "Unsure",
    "Using",
    "Verdict",
    "node_name",
    "strict_refs",
    "target_name",
]

UNSURE_ELEMENTS = "its elements are not known to be non-NULL"


class Unsure(Exception):
    """The analysis cannot go on; the message says why (it becomes the reason a column may be NULL)."""


@attrs.frozen
class Verdict:
    """Why a value may be NULL (``None``: it cannot be), and why its array elements may be."""

    why: str | None
    elements: str | None = UNSURE_ELEMENTS

    @property
    def proven(self) -> tuple[bool, bool]:
        return self.why is None, self.elements is None


@attrs.frozen
class Out:
    """One result column of a statement."""

    name: str | None
    verdict: Verdict
    node: Any = None  # the expression (for json shapes), when there is one


@dataclass
class Cte:
    stmt: Any
    colnames: list[str]
    recursive: bool
    scope: Scope | None = None  # where it is defined


@dataclass
class Entry:
    """A FROM item: a table or view, a subquery, a CTE or a function."""

    alias: str | None
    relname: str | None = None
    stmt: Any = None
    cte: Cte | None = None
    function: Any = None  # a RangeFunction
    colnames: list[str] = field(default_factory=list)
    outer: bool = False  # on the nullable side of an outer join
    lateral_scope: Scope | None = None
    columns: list[Out] | None = None  # computed on first use
    inner: list[Out] | None = None  # the columns before an outer join NULL-extends them
    failed: str | None = None  # why its columns could not be worked out


@dataclass
class Using:
    """The merged columns of a JOIN … USING or NATURAL JOIN."""

    jointype: int  # 0 inner, 1 left, 2 full, 3 right
    left: list[Entry]
    right: list[Entry]
    names: list[str] | None  # None: NATURAL (the columns both sides have)
    outer: bool  # the join itself is on the nullable side of an outer join


@dataclass
class Scope:
    parent: Scope | None = None
    entries: list[Entry] = field(default_factory=list)
    ctes: dict[str, Cte] = field(default_factory=dict)
    star_unsafe: str | None = None  # why `*` cannot be expanded here
    grouping_sets: bool = False  # GROUP BY ROLLUP / CUBE / GROUPING SETS
    grouped: bool = False  # a plain, non-empty GROUP BY: every group has a row
    usings: list[Using] = field(default_factory=list)  # JOIN … USING / NATURAL JOIN, innermost first
    filtered: list[Any] = field(default_factory=list)  # ColumnRefs a WHERE / inner ON proves non-NULL
    proven: set[tuple[int, str]] | None = None  # (id(entry), column) of ``filtered``, resolved on first use

    def entry(self, alias: str) -> Entry | None:
        for e in self.entries:
            if e.alias == alias:
                return e
        return None


def node_name(node: Any) -> str:
    return getattr(node, "sval", None) or str(node)


def target_name(t: Any) -> str | None:
    """The column name PostgreSQL gives a select-list item (None when it would be ``?column?``-like)."""
    if t.name:
        return str(t.name)
    val = t.val
    kind = type(val).__name__
    if kind == "ColumnRef":
        last = val.fields[-1]
        return None if type(last).__name__ == "A_Star" else node_name(last)
    if kind == "FuncCall":
        return node_name(val.funcname[-1])
    if kind == "TypeCast":
        inner = type(val.arg).__name__
        if inner in ("ColumnRef", "FuncCall", "TypeCast"):
            return target_name(_Named(val.arg))
        return node_name(val.typeName.names[-1])
    if kind == "CoalesceExpr":
        return "coalesce"
    return None


@attrs.frozen
class _Named:
    val: Any
    name: str | None = None


_STRICT_OPS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">=", "~~", "~~*", "!~~", "!~~*", "~", "~*"})


def strict_refs(node: Any) -> list[Any]:
    """Column references a WHERE condition is only TRUE for when they are not NULL (its AND-ed terms)."""
    if node is None:
        return []
    kind = type(node).__name__
    if kind == "BoolExpr" and int(node.boolop) == 0:  # AND
        return [r for a in node.args for r in strict_refs(a)]
    direct: list[Any] = []
    if kind == "NullTest" and int(node.nulltesttype) == 1:  # IS NOT NULL
        direct = [node.arg]
    elif kind == "A_Expr":
        k = int(node.kind)
        op = node_name(node.name[-1]) if node.name else ""
        if (k == 0 and op in _STRICT_OPS) or k in (7, 8, 9):  # comparisons, LIKE, ILIKE, SIMILAR
            direct = [node.lexpr, node.rexpr]
        elif k in (1, 6):  # op ANY (array), IN (list): the left side
            direct = [node.lexpr]
        elif k in (10, 12):  # BETWEEN [SYMMETRIC]
            direct = [node.lexpr, *(node.rexpr or ())]
    elif kind == "SubLink" and int(node.subLinkType) == 2 and node.testexpr is not None:  # IN (subquery)
        direct = [node.testexpr]
    refs = []
    for d in direct:
        ref = d
        while type(ref).__name__ == "TypeCast":
            ref = ref.arg
        if type(ref).__name__ == "ColumnRef" and type(ref.fields[-1]).__name__ != "A_Star":
            refs.append(ref)
    return refs
