"""May a result column be NULL? Statements, FROM items and column references, with pglast.

A column is proven NOT NULL when every path to it is: a table column with a validated NOT NULL (or a
NOT NULL domain) outside the nullable side of an outer join, or an expression :mod:`_check_exprs` proves.
Everything else is "may be NULL" with the reason, so a finding can say why. ``*`` expands by the
catalog (or the subquery's own columns), alias lists rename, views are analysed through their definition,
and a recursive CTE is analysed to a fixpoint from its non-recursive branch. Anything the analysis cannot
follow raises :class:`Unsure`, which makes the affected columns "may be NULL" with that reason.
"""

from __future__ import annotations

from typing import Any

from datalayer._check_catalog import Catalog
from datalayer._check_joins import filtered, matched, merged
from datalayer._check_scope import (
    Cte,
    Entry,
    Out,
    Scope,
    Unsure,
    Using,
    Verdict,
    node_name,
    strict_refs,
    target_name,
)

__all__ = ["Analysis"]

MAX_DEPTH = 100


def _names(nodes: Any) -> list[str]:
    return [node_name(n) for n in nodes or ()]


class Analysis:
    """The nullability of a statement's result columns (one instance per query)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.depth = 0
        self.in_aggregate = 0
        self._cte_state: dict[int, list[Out] | None] = {}
        self._views_open: set[int] = set()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.depth -= 1
            raise Unsure("the query nests too deeply for check to follow")

    # ------------------------------------------------------------------------------ statements

    def statement(self, stmt: Any, parent: Scope | None = None) -> list[Out]:
        """The result columns of ``stmt`` (a SELECT, VALUES or INSERT/UPDATE/DELETE … RETURNING)."""
        self.enter()
        try:
            return self._statement(stmt, parent)
        finally:
            self.depth -= 1

    def _statement(self, stmt: Any, parent: Scope | None) -> list[Out]:
        kind = type(stmt).__name__
        if kind == "SelectStmt" and int(getattr(stmt, "op", 0) or 0) != 0:
            holder = self.scope(stmt, parent)  # a set operation's WITH sits on the top node
            left = self.statement(stmt.larg, holder)
            right = self.statement(stmt.rarg, holder)
            if len(left) != len(right):
                raise Unsure("the branches of a set operation differ in width")
            op = int(stmt.op)  # 1 UNION, 2 INTERSECT, 3 EXCEPT
            if op == 3:
                return left
            merged = []
            for lo, ro in zip(left, right, strict=True):
                if op == 2:  # a row in both: NULL only where both may be
                    v = Verdict(lo.verdict.why and ro.verdict.why, lo.verdict.elements and ro.verdict.elements)
                else:
                    v = Verdict(lo.verdict.why or ro.verdict.why, lo.verdict.elements or ro.verdict.elements)
                merged.append(Out(lo.name, v))
            return merged
        if kind == "SelectStmt" and stmt.valuesLists:
            scope = self.scope(stmt, parent)
            rows = [list(getattr(r, "items", r)) for r in stmt.valuesLists]
            outs = []
            for i in range(len(rows[0])):
                vs = [self.expr(r[i], scope) for r in rows if i < len(r)]
                why = next((v.why for v in vs if v.why), None)
                elements = next((v.elements for v in vs if v.elements), None)
                outs.append(Out(f"column{i + 1}", Verdict(why, elements)))
            return outs
        if kind in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"):
            scope = self.scope(stmt, parent)
            if kind == "SelectStmt":
                targets = list(stmt.targetList or ())
            else:
                clause = getattr(stmt, "returningClause", None)  # pglast >= 8 (PostgreSQL 18 grammar)
                exprs = clause.exprs if clause is not None else getattr(stmt, "returningList", None)
                targets = list(exprs or ())
            return self.targets(targets, scope)
        raise Unsure(f"check does not analyse {kind} statements")

    def targets(self, targets: list[Any], scope: Scope) -> list[Out]:
        outs: list[Out] = []
        for t in targets:
            val = t.val
            if type(val).__name__ == "ColumnRef" and type(val.fields[-1]).__name__ == "A_Star":
                outs += self.star(val, scope)
            else:
                outs.append(Out(target_name(t), self.expr(val, scope), val))
        return outs

    def star(self, ref: Any, scope: Scope) -> list[Out]:
        """``*`` or ``t.*`` in a select list, expanded to the columns PostgreSQL puts there."""
        if len(ref.fields) == 1:
            if scope.star_unsafe:
                raise Unsure(f"cannot expand * ({scope.star_unsafe}); list the columns")
            outs: list[Out] = []
            for item in scope.entries:
                outs += self.entry_columns(item)
            return outs
        alias = node_name(ref.fields[-2])
        s: Scope | None = scope
        while s is not None:
            if (e := s.entry(alias)) is not None:
                return self.entry_columns(e)
            s = s.parent
        raise Unsure(f"cannot tell what {alias}.* names")

    # --------------------------------------------------------------------------------- scopes

    def scope(self, stmt: Any, parent: Scope | None) -> Scope:
        scope = Scope(parent=parent, ctes=dict(parent.ctes) if parent else {})
        with_clause = getattr(stmt, "withClause", None)
        if with_clause:
            for cte in with_clause.ctes or ():
                scope.ctes[cte.ctename] = Cte(
                    stmt=cte.ctequery, colnames=_names(cte.aliascolnames), recursive=bool(with_clause.recursive)
                )
            for c in scope.ctes.values():
                if c.scope is None:
                    c.scope = Scope(parent=parent, ctes=scope.ctes)
        kind = type(stmt).__name__
        if kind == "SelectStmt":
            for item in stmt.fromClause or ():
                self.collect(item, scope, False)
            scope.filtered += strict_refs(stmt.whereClause)
            groups = list(stmt.groupClause or ())
            scope.grouping_sets = any(type(g).__name__ == "GroupingSet" for g in groups)
            scope.grouped = bool(groups) and not scope.grouping_sets
        elif kind in ("InsertStmt", "UpdateStmt", "DeleteStmt"):
            rel = stmt.relation
            scope.entries.append(Entry(alias=rel.alias.aliasname if rel.alias else rel.relname, relname=_qual(rel)))
            for item in getattr(stmt, "fromClause", None) or getattr(stmt, "usingClause", None) or ():
                self.collect(item, scope, False)
            if kind != "InsertStmt":
                scope.filtered += strict_refs(stmt.whereClause)
        return scope

    def collect(self, node: Any, scope: Scope, outer: bool) -> None:
        kind = type(node).__name__
        alias = getattr(node, "alias", None)
        colnames = _names(alias.colnames) if alias is not None else []
        if kind == "RangeVar":
            name = alias.aliasname if alias else node.relname
            if node.relname in scope.ctes and not node.schemaname:
                entry = Entry(alias=name, cte=scope.ctes[node.relname], colnames=colnames, outer=outer)
            else:
                entry = Entry(alias=name, relname=_qual(node), colnames=colnames, outer=outer)
            scope.entries.append(entry)
        elif kind == "RangeSubselect":
            lateral = scope if node.lateral else Scope(parent=scope.parent, ctes=scope.ctes)
            scope.entries.append(
                Entry(
                    alias=alias.aliasname if alias else None,
                    stmt=node.subquery,
                    colnames=colnames,
                    outer=outer,
                    lateral_scope=lateral,
                )
            )
        elif kind == "JoinExpr":
            jt = int(node.jointype)  # 0 inner, 1 left, 2 full, 3 right
            if node.usingClause or node.isNatural or node.alias is not None:
                scope.star_unsafe = "a JOIN … USING, NATURAL JOIN or aliased join merges columns"
            start = len(scope.entries)
            self.collect(node.larg, scope, outer or jt in (2, 3))
            middle = len(scope.entries)
            self.collect(node.rarg, scope, outer or jt in (1, 2))
            if node.usingClause or node.isNatural:
                names = _names(node.usingClause) if node.usingClause else None
                left, right = scope.entries[start:middle], scope.entries[middle:]
                scope.usings.append(Using(jt, left, right, names, outer))
            if jt == 0 and not outer:  # an inner join's ON holds for every row it makes
                scope.filtered += strict_refs(node.quals)
        elif kind == "RangeFunction":
            scope.entries.append(
                Entry(
                    alias=alias.aliasname if alias else None,
                    function=node,
                    colnames=colnames,
                    outer=outer,
                    lateral_scope=scope,  # a function in FROM sees the items before it
                )
            )
        elif kind == "RangeTableSample":
            self.collect(node.relation, scope, outer)
        else:
            scope.star_unsafe = f"check does not follow {kind} FROM items"
            scope.entries.append(Entry(alias=alias.aliasname if alias else None, failed=f"a {kind} FROM item"))

    # -------------------------------------------------------------------------------- entries

    def entry_columns(self, entry: Entry) -> list[Out]:
        """The columns of a FROM item, renamed by its alias list, NULL-able when outer-joined."""
        if entry.columns is None and entry.failed is None:
            try:
                cols = self._entry_columns(entry)
            except Unsure as e:
                entry.failed = str(e)
            else:
                renamed = [
                    Out(entry.colnames[i] if i < len(entry.colnames) else c.name, c.verdict, c.node)
                    for i, c in enumerate(cols)
                ]
                entry.inner = renamed
                if entry.outer:
                    why = f"{entry.alias or 'it'} is on the nullable side of an outer join"
                    renamed = [Out(c.name, Verdict(why, c.verdict.elements), c.node) for c in renamed]
                entry.columns = renamed
        if entry.columns is None:
            raise Unsure(f"could not analyse {entry.alias or 'a FROM item'}: {entry.failed}")
        return entry.columns

    def _entry_columns(self, entry: Entry) -> list[Out]:
        if entry.cte is not None:
            return self.cte_columns(entry.cte)
        if entry.stmt is not None:
            return self.statement(entry.stmt, entry.lateral_scope)
        if entry.function is not None:
            return self.function_columns(entry)
        assert entry.relname is not None
        rel = self.catalog.relation(entry.relname)
        if rel is None:
            raise Unsure(f"relation {entry.relname} is not in the catalog")
        relkind, oid = rel
        if relkind in ("v", "m"):
            return self.view_columns(entry.relname, oid)
        return [
            Out(c.name, Verdict(c.why_null, f"elements of column {c.name} may be NULL"))
            for c in self.catalog.columns(oid)
        ]

    def view_columns(self, name: str, oid: int) -> list[Out]:
        import pglast

        if oid in self._views_open:
            raise Unsure(f"view {name} refers to itself")
        self._views_open.add(oid)
        try:
            tree = pglast.parse_sql(self.catalog.view_definition(oid))[0].stmt
            outs = self.statement(tree, None)
        except pglast.parser.ParseError as e:
            raise Unsure(f"cannot parse the definition of view {name}: {e}") from None
        finally:
            self._views_open.discard(oid)
        names = [c.name for c in self.catalog.columns(oid)]
        if len(names) != len(outs):
            raise Unsure(f"the definition of view {name} does not match its columns")
        return [Out(n, o.verdict, o.node) for n, o in zip(names, outs, strict=True)]

    def cte_columns(self, cte: Cte) -> list[Out]:
        key = id(cte.stmt)
        if key in self._cte_state:
            state = self._cte_state[key]
            if state is None:
                raise Unsure("a recursive query refers to itself outside its recursive branch")
            return state
        stmt = cte.stmt
        self._cte_state[key] = None
        try:
            if cte.recursive and type(stmt).__name__ == "SelectStmt" and int(getattr(stmt, "op", 0) or 0) == 1:
                # Induction: assume the non-recursive branch's verdicts, widen until they hold.
                state = self._renamed(self.statement(stmt.larg, cte.scope), cte.colnames)
                for _ in range(len(state) + 2):
                    self._cte_state[key] = state
                    full = self._renamed(self.statement(stmt, cte.scope), cte.colnames)
                    if [o.verdict.proven for o in full] == [o.verdict.proven for o in state]:
                        return full
                    state = full
                raise Unsure("the recursive query's nullability does not settle")
            return self._renamed(self.statement(stmt, cte.scope), cte.colnames)
        finally:
            del self._cte_state[key]

    @staticmethod
    def _renamed(outs: list[Out], colnames: list[str]) -> list[Out]:
        return [Out(colnames[i] if i < len(colnames) else o.name, o.verdict, o.node) for i, o in enumerate(outs)]

    def function_columns(self, entry: Entry) -> list[Out]:
        node = entry.function
        funcs = [item[0] if isinstance(item, list | tuple) else item for item in node.functions or ()]
        names = list(entry.colnames)
        outs: list[Out] = []
        for i, f in enumerate(funcs):
            fname = node_name(f.funcname[-1]).lower() if type(f).__name__ == "FuncCall" else "?"
            col = names[i] if i < len(names) else (entry.alias if len(funcs) == 1 and entry.alias else fname)
            why: str | None = f"the output of {fname}() may be NULL"
            if fname == "generate_series":
                args = [self.expr(a, entry.lateral_scope or Scope()) for a in f.args or ()]
                why = next((a.why for a in args if a.why), None)
            elif fname == "unnest" and len(f.args or ()) == 1:
                why = self.expr(f.args[0], entry.lateral_scope or Scope()).elements
            outs.append(Out(col, Verdict(why)))
        if node.ordinality:
            outs.append(Out(names[len(outs)] if len(names) > len(outs) else "ordinality", Verdict(None)))
        return outs

    # ------------------------------------------------------------------------- column references

    def column_ref(self, node: Any, scope: Scope) -> Verdict:
        fields = node.fields
        whole_row = type(fields[-1]).__name__ == "A_Star"
        names = [node_name(f) for f in fields if type(f).__name__ != "A_Star"]
        s: Scope | None = scope
        while s is not None:
            found = self._lookup(names, whole_row, s)
            if found is not None:
                if s.grouping_sets and not self.in_aggregate:
                    return Verdict(
                        "GROUP BY ROLLUP / CUBE / GROUPING SETS makes grouping columns NULL in subtotal rows"
                    )
                if found.why and not whole_row and s.filtered:
                    if filtered(self, names, s):
                        return Verdict(None, found.elements)
                    if (real := matched(self, names, s)) is not None:
                        return real
                return found
            s = s.parent
        return Verdict(f"cannot tell where {'.'.join(names)} comes from")

    def _lookup(self, names: list[str], whole_row: bool, scope: Scope) -> Verdict | None:
        """The verdict of a column reference resolved in ``scope`` (None: not found at this level)."""
        if whole_row:
            e = scope.entry(names[-1])
            return None if e is None else _whole_row(e)
        if len(names) == 1:
            column = names[0]
            if scope.usings and (m := merged(self, column, scope)) is not None:
                return m
            hits: list[Out] = []
            unknown: list[Entry] = []
            for entry in scope.entries:
                try:
                    hits += [c for c in self.entry_columns(entry) if c.name == column]
                except Unsure:
                    unknown.append(entry)
            if len(hits) == 1:
                return hits[0].verdict
            if len(hits) > 1:
                return Verdict(f"{column} is a column of more than one FROM item (JOIN … USING?); qualify it")
            if unknown:
                return Verdict(f"cannot tell where {column} comes from: {unknown[0].failed}")
            e = scope.entry(column)  # a bare FROM item name is a whole-row reference
            return None if e is None else _whole_row(e)
        e = scope.entry(names[-2])
        if e is None:
            return None
        try:
            cols = [c for c in self.entry_columns(e) if c.name == names[-1]]
        except Unsure as err:
            return Verdict(str(err))
        if len(cols) != 1:
            return Verdict(f"cannot find column {names[-1]} of {names[-2]}")
        return cols[0].verdict

    def expr(self, node: Any, scope: Scope) -> Verdict:
        from datalayer._check_exprs import expr

        self.enter()
        try:
            return expr(self, node, scope)
        finally:
            self.depth -= 1


def _whole_row(e: Entry) -> Verdict:
    return Verdict(f"{e.alias} is on the nullable side of an outer join" if e.outer else None, None)


def _qual(rv: Any) -> str:
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)
