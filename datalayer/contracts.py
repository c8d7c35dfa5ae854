"""``datalayer check``: every named query verified against a migrated database.

For each query a repository binds to a record type, ``check`` prepares the statement on the server,
describes it (parameter types; result columns with their types and source table/column) and
compares the result columns with the record's fields: names, order, Python type against the
PostgreSQL type, and nullability. It also reads the repository modules' source to check that each
call passes exactly the parameters its query uses, with the method matching the declared cardinality,
and reports queries no function uses and functions whose query is missing.

Nullability: a column is NOT NULL when its source column is (``pg_attribute.attnotnull``) and it does
not come from the nullable side of an outer join; expressions are analysed with pglast (``count(*)``,
``coalesce(x, 0)``, literals, ``IS NULL`` tests … are never NULL; ``CASE`` without ``ELSE``,
aggregates, subqueries may be). Where it cannot be proven the record field must be Optional, or
the query says why not in an annotation comment::

    -- not-null: total_bytes: pg_total_relation_size() of an existing relation is never NULL

Every finding names ``sql/<file>.sql:<line>``, the query and the field.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Union
from uuid import UUID

import attrs
import psycopg
from psycopg import sql

from datalayer._paths import sql_dir
from datalayer._run import Binding, bindings
from datalayer._sql import Query, _to_dollar, load_file
from datalayer.config import DatabaseTarget, Settings
from datalayer.errors import ConfigError

__all__ = ["Finding", "check", "check_contracts", "check_scratch"]

_PY_TYPES: dict[str, tuple[Any, ...]] = {
    "int2": (int,),
    "int4": (int,),
    "int8": (int,),
    "oid": (int,),
    "numeric": (Decimal,),
    "float4": (float,),
    "float8": (float,),
    "text": (str,),
    "varchar": (str,),
    "bpchar": (str,),
    "name": (str,),
    "citext": (str,),
    "regclass": (str,),
    "regtype": (str,),
    "regnamespace": (str,),
    "bool": (bool,),
    "timestamptz": (datetime,),
    "timestamp": (datetime,),
    "date": (date,),
    "time": (time,),
    "timetz": (time,),
    "interval": (timedelta,),
    "json": (dict, list, Any, object),
    "jsonb": (dict, list, Any, object),
    "uuid": (UUID,),
    "bytea": (bytes,),
    "inet": (IPv4Address, IPv6Address),
    "void": (type(None),),
}
_METHOD_FOR = {"one": "one", "maybe": "maybe", "many": "many", "scalar": "scalar", "exec": "exec", "copy": "copy_in"}
_NONNULL_FUNCS = {
    "count",
    "now",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "gen_random_uuid",
    "row_number",
    "rank",
    "dense_rank",
    "random",
    "current_schema",
    "pg_backend_pid",
    "version",
}
# Strict functions that return non-NULL whenever every argument is non-NULL.
_STRICT_FUNCS = {
    "lower",
    "upper",
    "length",
    "char_length",
    "btrim",
    "trim",
    "ltrim",
    "rtrim",
    "to_char",
    "to_date",
    "date_trunc",
    "substr",
    "substring",
    "abs",
    "round",
    "floor",
    "ceil",
    "md5",
    "concat",
    "format",
    "timezone",
    "date_part",
    "extract",
    "left",
    "right",
    "replace",
    "jsonb_build_object",
    "json_build_object",
    "to_jsonb",
    "to_json",
    "jsonb_typeof",
    "array_length",
    "cardinality",
}
_NULLABLE_OPERATORS = {"->", "->>", "#>", "#>>", "#-"}


@dataclass(frozen=True)
class Finding:
    """One contract violation."""

    location: str  # "sql/users.sql:12 users.get_by_id" (or a module for code-only findings)
    message: str
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.location}: field {self.field!r}" if self.field else self.location
        return f"{where}: {self.message}"


# --------------------------------------------------------------------------------------- nullability


@dataclass
class _Entry:
    relname: str | None = None  # a table (or view) name
    stmt: Any = None  # a subquery or CTE body
    outer: bool = False  # on the nullable side of an outer join


@dataclass
class _Scope:
    entries: dict[str, _Entry] = field(default_factory=dict)
    ctes: dict[str, Any] = field(default_factory=dict)


class _Catalog:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._notnull: dict[tuple[str, str], bool | None] = {}
        self._columns: dict[str, set[str]] = {}

    def notnull(self, relname: str, column: str) -> bool | None:
        key = (relname, column)
        if key not in self._notnull:
            row = self.conn.execute(
                "SELECT a.attnotnull FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attname = %s "
                "AND NOT a.attisdropped",
                (relname, column),
            ).fetchone()
            self._notnull[key] = None if row is None else bool(row[0])
        return self._notnull[key]

    def columns(self, relname: str) -> set[str]:
        if relname not in self._columns:
            rows = self.conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (relname,),
            ).fetchall()
            self._columns[relname] = {r[0] for r in rows}
        return self._columns[relname]


def _name(node: Any) -> str:
    return getattr(node, "sval", None) or str(node)


def _collect_from(node: Any, scope: _Scope, outer: bool) -> None:
    kind = type(node).__name__
    if kind == "RangeVar":
        name = node.alias.aliasname if node.alias else node.relname
        if node.relname in scope.ctes and not node.schemaname:
            scope.entries[name] = _Entry(stmt=scope.ctes[node.relname], outer=outer)
        else:
            rel = f"{node.schemaname}.{node.relname}" if node.schemaname else node.relname
            scope.entries[name] = _Entry(relname=rel, outer=outer)
    elif kind == "RangeSubselect":
        if node.alias:
            scope.entries[node.alias.aliasname] = _Entry(stmt=node.subquery, outer=outer)
    elif kind == "JoinExpr":
        from pglast.enums import JoinType

        jt = int(node.jointype)
        _collect_from(node.larg, scope, outer or jt in (int(JoinType.JOIN_RIGHT), int(JoinType.JOIN_FULL)))
        _collect_from(node.rarg, scope, outer or jt in (int(JoinType.JOIN_LEFT), int(JoinType.JOIN_FULL)))
    elif kind == "RangeFunction" and node.alias:
        scope.entries[node.alias.aliasname] = _Entry(outer=outer)


def _scope_of(stmt: Any, parent: _Scope | None = None) -> _Scope:
    scope = _Scope(ctes=dict(parent.ctes) if parent else {})
    with_clause = getattr(stmt, "withClause", None)
    if with_clause:
        for cte in with_clause.ctes or ():
            scope.ctes[cte.ctename] = cte.ctequery
    kind = type(stmt).__name__
    if kind == "SelectStmt":
        for item in stmt.fromClause or ():
            _collect_from(item, scope, False)
    elif kind in ("InsertStmt", "UpdateStmt", "DeleteStmt"):
        rel = stmt.relation
        scope.entries[rel.alias.aliasname if rel.alias else rel.relname] = _Entry(relname=rel.relname)
        for item in getattr(stmt, "fromClause", None) or getattr(stmt, "usingClause", None) or ():
            _collect_from(item, scope, False)
    return scope


def _targets(stmt: Any) -> list[Any] | None:
    kind = type(stmt).__name__
    if kind == "SelectStmt":
        return list(stmt.targetList or ())
    if kind in ("InsertStmt", "UpdateStmt", "DeleteStmt"):
        clause = getattr(stmt, "returningClause", None)  # pglast >= 8 (PostgreSQL 18 grammar)
        if clause is not None:
            return list(clause.exprs or ())
        return list(getattr(stmt, "returningList", None) or ())
    return None


def _is_set_operation(stmt: Any) -> bool:
    return type(stmt).__name__ == "SelectStmt" and int(getattr(stmt, "op", 0) or 0) != 0


def _target_name(t: Any) -> str | None:
    if t.name:
        return str(t.name)
    if type(t.val).__name__ == "ColumnRef":
        return _name(t.val.fields[-1])
    return None


class _Nullability:
    def __init__(self, catalog: _Catalog) -> None:
        self.catalog = catalog

    def column_of(self, stmt: Any, column: str, parent: _Scope | None) -> bool:
        """May ``column`` of the result of ``stmt`` be NULL?"""
        first = stmt
        while _is_set_operation(first):  # a UNION's columns are named by its first branch
            first = first.larg
        names = [_target_name(t) for t in _targets(first) or ()]
        if column not in names:
            return True
        return self.target(stmt, names.index(column), parent)

    def target(self, stmt: Any, index: int, parent: _Scope | None = None) -> bool:
        """May the ``index``-th result column of ``stmt`` be NULL?"""
        if _is_set_operation(stmt):
            return self.target(stmt.larg, index, parent) or self.target(stmt.rarg, index, parent)
        targets = _targets(stmt)
        if targets is None or index >= len(targets):
            return True
        return self.expr(targets[index].val, _scope_of(stmt, parent))

    def column_ref(self, node: Any, scope: _Scope) -> bool:
        fields = [f for f in node.fields if type(f).__name__ != "A_Star"]
        if not fields or len(fields) != len(node.fields):
            return True
        column = _name(fields[-1])
        if len(fields) >= 2:
            entry = scope.entries.get(_name(fields[-2]))
            candidates = [entry] if entry else []
        else:
            candidates = [e for e in scope.entries.values() if self._has(e, column, scope)]
        if len(candidates) != 1:
            return True
        entry = candidates[0]
        if entry.outer:
            return True
        if entry.relname:
            return self.catalog.notnull(entry.relname, column) is not True
        if entry.stmt is not None:
            return self.column_of(entry.stmt, column, scope)
        return True

    def _has(self, entry: _Entry, column: str, scope: _Scope) -> bool:
        if entry.relname:
            return column in self.catalog.columns(entry.relname)
        targets = _targets(entry.stmt) if entry.stmt is not None else None
        return bool(targets) and any(_target_name(t) == column for t in targets or ())

    def expr(self, node: Any, scope: _Scope) -> bool:
        kind = type(node).__name__
        if kind == "ColumnRef":
            return self.column_ref(node, scope)
        if kind == "TypeCast":
            return self.expr(node.arg, scope)
        if kind == "A_Const":
            return bool(node.isnull)
        if kind in ("NullTest", "BooleanTest", "SQLValueFunction"):
            return False
        if kind == "SubLink":
            from pglast.enums import SubLinkType

            return int(node.subLinkType) != int(SubLinkType.EXISTS_SUBLINK)
        if kind in ("CoalesceExpr", "MinMaxExpr"):
            return all(self.expr(a, scope) for a in node.args)
        if kind == "BoolExpr":
            return any(self.expr(a, scope) for a in node.args)
        if kind == "A_Expr":
            op = _name(node.name[-1]) if node.name else ""
            if op in _NULLABLE_OPERATORS or int(node.kind) != 0:  # 0: AEXPR_OP, a plain operator
                return True
            return any(self.expr(a, scope) for a in (node.lexpr, node.rexpr) if a is not None)
        if kind == "CaseExpr":
            if node.defresult is None:
                return True
            return self.expr(node.defresult, scope) or any(self.expr(w.result, scope) for w in node.args)
        if kind == "FuncCall":
            fname = _name(node.funcname[-1]).lower()
            if fname in _NONNULL_FUNCS or (getattr(node, "agg_star", False) and fname == "count"):
                return False
            if fname in _STRICT_FUNCS and not getattr(node, "agg_filter", None):
                return any(self.expr(a, scope) for a in node.args or ())
            return True
        return True


# ------------------------------------------------------------------------------------------- types


def _optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return tp, False


def _type_ok(py: Any, typname: str, category: str, elem: str | None) -> bool:
    if category == "A" and elem is not None:
        if typing.get_origin(py) not in (list, Sequence, tuple):
            return False
        args = typing.get_args(py)
        return not args or _type_ok(args[0], elem, "", None)
    expected = _PY_TYPES.get(typname)
    if expected is None:
        return False
    if py in expected or py is Any:
        return True
    origin = typing.get_origin(py)
    if typname in ("json", "jsonb"):
        return origin in (dict, list) or (isinstance(py, type) and attrs.has(py))
    return origin in expected


def _type_label(py: Any) -> str:
    return getattr(py, "__name__", None) or str(py).replace("typing.", "")


# ----------------------------------------------------------------------------------- one query check


def _annotated_not_null(query: Query) -> tuple[set[str], list[Finding]]:
    raw = query.annotations.get("not-null")
    if raw is None:
        return set(), []
    cols, sep, reason = raw.partition(":")
    names = {c.strip() for c in cols.split(",") if c.strip()}
    if not sep or not reason.strip():
        return names, [Finding(query.location, "a '-- not-null: columns: reason' annotation must say why")]
    return names, []


def _check_query(conn: psycopg.Connection[Any], catalog: _Catalog, b: Binding, n: int) -> list[Finding]:
    query = b.query
    assert query is not None
    if query.cardinality == "copy":
        return []
    findings: list[Finding] = []
    server_sql = _to_dollar(query.sql)
    name = f"_dl_check_{n}".encode()
    res = conn.pgconn.prepare(name, server_sql.encode())
    if res.error_message:
        pos = res.error_field(psycopg.pq.DiagnosticField.STATEMENT_POSITION)
        msg = (res.error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY) or res.error_message or b"").decode()
        where = query.location_at(int(pos) if pos else None)
        return [Finding(where, f"does not prepare: {msg}")]
    desc = conn.pgconn.describe_prepared(name)
    conn.pgconn.exec_(b"DEALLOCATE " + name)
    oids = {desc.ftype(i) for i in range(desc.nfields)} | {desc.param_type(i) for i in range(desc.nparams)}
    rows = conn.execute(
        "SELECT t.oid, t.typname, t.typcategory, e.typname FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem "
        "AND t.typcategory = 'A' WHERE t.oid = ANY(%s)",
        (list(oids),),
    ).fetchall()
    tinfo = {r[0]: (r[1], r[2], r[3]) for r in rows}
    columns = [((desc.fname(i) or b"?").decode(), desc.ftype(i)) for i in range(desc.nfields)]
    if query.cardinality == "exec":
        if columns:
            findings.append(
                Finding(
                    query.location,
                    f":exec query returns columns ({', '.join(c for c, _ in columns)}); "
                    "use :one/:many or drop RETURNING",
                )
            )
        return findings
    if b.result is None:
        return [Finding(query.location, "bound without a result type but returns rows")]
    not_null, bad = _annotated_not_null(query)
    findings += bad
    import pglast

    tree = pglast.parse_sql(server_sql)[0].stmt
    nulls = _Nullability(catalog)
    if attrs.has(b.result):
        hints = typing.get_type_hints(b.result)
        fields = [(f.name, hints[f.name]) for f in attrs.fields(b.result)]
    else:
        fields = [(columns[0][0] if columns else "?", b.result)]
        if len(columns) != 1:
            return [
                Finding(
                    query.location,
                    f"returns {len(columns)} columns but is bound to {_type_label(b.result)}; "
                    "a scalar query returns exactly one column",
                )
            ]
    if attrs.has(b.result):
        names = [c for c, _ in columns]
        expected = [f for f, _ in fields]
        if names != expected:
            missing = [f for f in expected if f not in names]
            extra = [c for c in names if c not in expected]
            detail = []
            if missing:
                detail.append(f"fields without a column: {', '.join(missing)}")
            if extra:
                detail.append(f"columns without a field: {', '.join(extra)}")
            if not missing and not extra:
                detail.append(f"order differs: columns {', '.join(names)}; fields {', '.join(expected)}")
            findings.append(
                Finding(query.location, f"result columns do not match {b.result.__name__}: " + "; ".join(detail))
            )
            return findings
    for i, ((col, oid), (fname, ftype)) in enumerate(zip(columns, fields, strict=True)):
        py, optional = _optional(ftype)
        typname, category, elem = tinfo.get(oid, (f"oid {oid}", "", None))
        label = f"{elem}[]" if category == "A" and elem else typname
        if not _type_ok(py, typname, category, elem):
            findings.append(
                Finding(query.location, f"column is {label} but the field is {_type_label(ftype)}", field=fname)
            )
        if typname == "timestamp":
            findings.append(
                Finding(
                    query.location, "timestamp without time zone loads naive datetimes; use timestamptz", field=fname
                )
            )
        if not optional and col not in not_null and nulls.target(tree, i):
            findings.append(
                Finding(
                    query.location,
                    f"column may be NULL but the field is {_type_label(ftype)}; make it {_type_label(ftype)} | None, "
                    f"or annotate the query with '-- not-null: {col}: <why it cannot be NULL>'",
                    field=fname,
                )
            )
    return findings


# ------------------------------------------------------------------------------------ call sites


@dataclass
class _Call:
    method: str
    kwargs: set[str]
    splat: bool
    line: int


def _call_sites(module: types.ModuleType) -> dict[str, list[_Call]]:
    """Calls on bound queries in ``module``, by the query's ``domain.name``."""
    try:
        source = inspect.getsource(module)
        path = inspect.getsourcefile(module) or module.__name__
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source, filename=path)
    bound: dict[str, list[str]] = {}
    aliases: list[tuple[str, ast.IfExp]] = []
    for node in ast.walk(tree):
        value: Any = None
        target: Any = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if not isinstance(target, ast.Name):
            continue
        if isinstance(value, ast.IfExp):  # query = _find if order == "newest" else _find_oldest
            aliases.append((target.id, value))
            continue
        if not isinstance(value, ast.Call):
            continue
        fn = value.func
        fname = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
        args = value.args
        if fname == "bind" and len(args) >= 2 and isinstance(args[0], ast.Name) and isinstance(args[1], ast.Constant):
            # The queries object is a module global (a QueryFile): its domain names the SQL file.
            domain = getattr(getattr(module, args[0].id, None), "domain", "?")
            bound[target.id] = [f"{domain}.{args[1].value!s}"]
    for name, choice in aliases:
        branches = [b for b in (choice.body, choice.orelse) if isinstance(b, ast.Name) and b.id in bound]
        if len(branches) == 2:
            bound.setdefault(name, [])
            bound[name] = bound[name] + [q for b in branches for q in bound[b.id]]
    calls: dict[str, list[_Call]] = {q: [] for qs in bound.values() for q in qs}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in bound
        ):
            call = _Call(
                method=node.func.attr,
                kwargs={k.arg for k in node.keywords if k.arg is not None},
                splat=any(k.arg is None for k in node.keywords),
                line=node.lineno,
            )
            for q in bound[node.func.value.id]:
                calls[q].append(call)
    return calls


def _check_calls(b: Binding, calls: list[_Call], module_file: str) -> list[Finding]:
    query = b.query
    assert query is not None
    findings: list[Finding] = []
    if not calls:
        return [Finding(query.location, f"is bound in {b.module} but never called")]
    expected_method = _METHOD_FOR[query.cardinality]
    for call in calls:
        where = f"{query.location} (called at {module_file}:{call.line})"
        if call.method != expected_method:
            findings.append(
                Finding(
                    where,
                    f"is declared :{query.cardinality} but called with .{call.method}(); use .{expected_method}()",
                )
            )
        if query.cardinality == "copy":
            continue
        if call.splat:
            findings.append(
                Finding(where, "is called with **kwargs; pass every parameter by name so that check can verify them")
            )
            continue
        missing = [p for p in query.params if p not in call.kwargs]
        extra = sorted(call.kwargs - set(query.params))
        if missing:
            findings.append(
                Finding(
                    where,
                    f"missing parameter(s) {', '.join(':' + p for p in missing)} "
                    "(the query uses them, the call does not pass them)",
                )
            )
        if extra:
            findings.append(Finding(where, f"parameter(s) {', '.join(extra)} passed but not used by the query"))
    return findings


# ------------------------------------------------------------------------------------------ driver


def _import_all() -> None:
    import datalayer

    for info in pkgutil.walk_packages(datalayer.__path__, "datalayer."):
        if info.name in ("datalayer.testing", "datalayer.cli") or info.name.startswith("datalayer._data"):
            continue
        importlib.import_module(info.name)


def check_contracts(conn: psycopg.Connection[Any], bound: Sequence[Binding], queries: Sequence[Query]) -> list[Finding]:
    """Every finding for the ``bound`` queries, plus each of ``queries`` that nothing binds."""
    try:
        import pglast  # noqa: F401
    except ImportError:
        raise ConfigError(
            "datalayer check needs pglast: pip install 'sqlfirst-datalayer[check]' (or '.[check]' from a checkout)"
        ) from None
    catalog = _Catalog(conn)
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    modules: dict[str, dict[str, list[_Call]]] = {}
    for n, b in enumerate(bound):
        if b.query is None:
            findings.append(
                Finding(f"sql/{b.domain}.sql", f"{b.module} binds query {b.name!r}, which the file does not define")
            )
            continue
        if (b.domain, b.name) in seen:
            continue
        seen.add((b.domain, b.name))
        findings += _check_query(conn, catalog, b, n)
        module = importlib.import_module(b.module)
        if b.module not in modules:
            modules[b.module] = _call_sites(module)
        module_file = inspect.getsourcefile(module) or b.module
        findings += _check_calls(b, modules[b.module].get(f"{b.domain}.{b.name}", []), _relative(module_file))
    for q in queries:
        if (q.domain, q.name) not in seen:
            findings.append(Finding(q.location, "no function uses this query; bind it in a repository or delete it"))
    return findings


def _relative(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def check(db: psycopg.Connection[Any]) -> list[Finding]:
    """Check every query of datalayer's sql/ against the migrated database ``db``; [] means all good.

    >>> assert check(db) == []            # doctest: +SKIP
    """
    _import_all()
    ours = [b for b in bindings() if b.module.startswith("datalayer.")]
    queries = [q for path in sorted(sql_dir().glob("*.sql")) for q in load_file(path).queries.values()]
    return check_contracts(db, ours, queries)


def check_scratch(settings: Settings | None = None) -> list[Finding]:
    """What ``datalayer check`` runs: migrate a scratch database on the configured server, check, drop it."""
    from datalayer.migrate import setup_database
    from datalayer.pool import connect, resolve_database

    settings = settings or Settings.from_env()
    target = resolve_database(settings)
    scratch = f"datalayer_check_{os.getpid()}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch))
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
    # Bounded connections (CONNECT_TIMEOUT, keepalives, a deadline per wait): a mute server cannot hang CI.
    with connect(settings, target) as admin:
        admin.execute(drop)
        admin.execute(create)
    try:
        scratch_target = DatabaseTarget(params={**target.params, "dbname": scratch}, password=target.password)
        setup_database(settings=settings, target=scratch_target, partitions_ahead=2)
        with connect(settings, scratch_target) as conn:
            return check(conn)
    finally:
        with connect(settings, target) as admin:
            admin.execute(drop)
