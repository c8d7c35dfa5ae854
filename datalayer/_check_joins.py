"""JOIN … USING columns and what a WHERE proves, for ``datalayer check``'s nullability analysis.

A USING column of an inner join is equal on both sides, so neither is NULL; of a LEFT/RIGHT join it is
the preserved side's. A row a WHERE (or an inner join's ON) keeps has non-NULL values in every column a
strict comparison of its AND-ed terms names (``x = 1``, ``x LIKE …``, ``x IS NOT NULL`` …), and the
outer-joined FROM item owning such a column was matched, so its other columns are as NULL as in the item.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datalayer._check_scope import Scope, Unsure, Verdict, node_name

if TYPE_CHECKING:
    from datalayer._check_nullability import Analysis

__all__ = ["filtered", "matched", "merged"]


def _owner(an: Analysis, names: list[str], scope: Scope) -> tuple[int, str] | None:
    """(id(entry), column) a column reference resolves to in ``scope`` (None: unknown or merged)."""
    column = names[-1]
    if len(names) >= 2:
        e = scope.entry(names[-2])
        return None if e is None else (id(e), column)
    owners = []
    for entry in scope.entries:
        try:
            if any(c.name == column for c in an.entry_columns(entry)):
                owners.append(entry)
        except Unsure:
            return None
    return (id(owners[0]), column) if len(owners) == 1 else None


def filtered(an: Analysis, names: list[str], scope: Scope) -> bool:
    """Does the WHERE (or an inner join's ON) only keep rows where this column is not NULL?"""
    if scope.proven is None:
        refs = [[node_name(f) for f in ref.fields] for ref in scope.filtered]
        scope.proven = {o for r in refs if (o := _owner(an, r, scope)) is not None}
    owner = _owner(an, names, scope)
    return owner is not None and owner in scope.proven


def matched(an: Analysis, names: list[str], scope: Scope) -> Verdict | None:
    """The column's verdict inside its outer-joined FROM item when the WHERE proves another column of that
    item non-NULL: a NULL-extended row is NULL in every column, so that item's row was really matched."""
    owner = _owner(an, names, scope)
    filtered(an, names, scope)  # resolves scope.proven
    if owner is None or not any(o[0] == owner[0] for o in scope.proven or ()):
        return None
    entry = next((e for e in scope.entries if id(e) == owner[0]), None)
    if entry is None or not entry.outer or entry.inner is None:
        return None
    hits = [c for c in entry.inner if c.name == owner[1]]
    return hits[0].verdict if len(hits) == 1 else None


def merged(an: Analysis, column: str, scope: Scope) -> Verdict | None:
    """The verdict of a JOIN … USING column (the outermost join merging it), None if none does."""
    for u in reversed(scope.usings):
        names = u.names
        if names is None:
            try:
                sides = [{c.name for e in side for c in an.entry_columns(e)} for side in (u.left, u.right)]
            except Unsure as err:
                return Verdict(str(err))
            names = [str(n) for n in sides[0] & sides[1] if n]
        if column not in names:
            continue
        if u.outer:
            return Verdict(f"the join merging {column} is on the nullable side of an outer join")
        if u.jointype == 0:
            return Verdict(None)  # equal on both sides, so neither is NULL
        if u.jointype == 2:
            return Verdict(f"FULL JOIN … USING ({column}) takes it from either side")
        side = u.left if u.jointype == 1 else u.right
        hits = [c for e in side for c in an.entry_columns(e) if c.name == column]
        return hits[0].verdict if len(hits) == 1 else Verdict(f"cannot tell which {column} the join keeps")
    return None
