"""One bound query against the database: prepare, describe, compare columns with the record's fields."""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
import psycopg

from datalayer._check_catalog import Catalog
from datalayer._check_json import compare, needs_shape, shape_of
from datalayer._check_nullability import Analysis
from datalayer._check_scope import Out, Unsure, Verdict
from datalayer._check_types import init_fields, label, optional, sequence_element, type_problem

__all__ = ["Finding", "check_query", "not_null_annotations"]

_NOT_NULL = re.compile(r"^--\s*not-null:\s*(?P<value>.*)$")


@dataclass(frozen=True)
class Finding:
    """One contract violation, or (``note``) something check could not verify."""

    location: str  # "sql/users.sql:12 users.get_by_id" (or a module for code-only findings)
    message: str
    field: str | None = None
    note: bool = False  # unverifiable: not a failure, the run time checks cover it

    def __str__(self) -> str:
        where = f"{self.location}: field {self.field!r}" if self.field else self.location
        return f"{where}: {'note: ' if self.note else ''}{self.message}"


def not_null_annotations(query: Any, path: Path | None) -> list[str]:
    """Every ``-- not-null:`` line of ``query`` (all of them: two lines add up)."""
    if path is not None and path.is_file():
        lines = path.read_text("utf-8").splitlines()
        found = []
        for line in lines[int(query.line) :]:  # the lines after the header
            s = line.strip()
            if not s:
                continue  # the loader reads comment lines up to the first line of SQL
            if not s.startswith("--"):
                break
            if m := _NOT_NULL.match(s):
                found.append(m.group("value").strip())
        return found
    raw = query.annotations.get("not-null")
    if raw is None:
        return []
    if isinstance(raw, str):
        return [v for v in raw.split("\n") if v.strip()]
    return [str(v) for v in raw]


def _parse_not_null(query: Any, values: list[str]) -> tuple[set[str], list[Finding]]:
    names: set[str] = set()
    findings = []
    for raw in values:
        cols, sep, reason = raw.partition(":")
        names |= {c.strip() for c in cols.split(",") if c.strip()}
        if not sep or not reason.strip():
            findings.append(Finding(query.location, "a '-- not-null: columns: reason' annotation must say why"))
    return names, findings


def _describe(conn: psycopg.Connection[Any], server_sql: str, n: int) -> Any:
    name = f"_dl_check_{n}".encode()
    res = conn.pgconn.prepare(name, server_sql.encode())
    if res.error_message:
        return res
    desc = conn.pgconn.describe_prepared(name)
    conn.pgconn.exec_(b"DEALLOCATE " + name)
    return desc


def check_query(
    conn: psycopg.Connection[Any], catalog: Catalog, b: Any, n: int, annotations: list[str]
) -> list[Finding]:
    """Findings for one binding ``b`` (its query must exist)."""
    from datalayer._sql import _to_dollar

    query = b.query
    if query.cardinality == "copy":
        return []
    server_sql = _to_dollar(query.sql)
    desc = _describe(conn, server_sql, n)
    if desc.error_message:
        pos = desc.error_field(psycopg.pq.DiagnosticField.STATEMENT_POSITION)
        msg = (desc.error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY) or desc.error_message or b"").decode()
        return [Finding(query.location_at(int(pos) if pos else None), f"does not prepare: {msg}")]
    columns = [((desc.fname(i) or b"?").decode(), desc.ftype(i)) for i in range(desc.nfields)]
    if query.cardinality == "exec":
        if columns:
            shown = ", ".join(c for c, _ in columns)
            return [Finding(query.location, f":exec query returns columns ({shown}); use :one/:many or drop RETURNING")]
        return []
    if b.result is None:
        return [Finding(query.location, "bound without a result type but returns rows")]
    not_null, findings = _parse_not_null(query, annotations)
    names = [c for c, _ in columns]
    # `tags[]` vouches for the elements of column tags, `tags` for the column itself.
    for col in sorted({c.removesuffix("[]") for c in not_null} - set(names)):
        findings.append(
            Finding(query.location, f"the '-- not-null:' annotation names {col!r}, which the query does not return")
        )
    is_record = attrs.has(b.result)
    if is_record:
        hints = typing.get_type_hints(b.result)
        fields = [(f.name, hints[f.name]) for f in init_fields(b.result)]
        expected = [f for f, _ in fields]
        if names != expected:
            return [*findings, _mismatch(query, b.result, names, expected)]
    elif len(columns) != 1:
        msg = f"returns {len(columns)} columns but is bound to {label(b.result)}; a scalar query returns one column"
        return [*findings, Finding(query.location, msg)]
    else:
        fields = [(names[0], b.result)]
    outs, scope_of_top = _analyse(catalog, server_sql, len(columns))
    for i, ((col, oid), (fname, ftype)) in enumerate(zip(columns, fields, strict=True)):
        findings += _check_column(
            query,
            catalog,
            col=col,
            oid=oid,
            fname=fname,
            ftype=ftype,
            out=outs[i],
            annotated=col in not_null,
            elements_annotated=f"{col}[]" in not_null,
            top=scope_of_top,
        )
    return findings


def _mismatch(query: Any, result: type[Any], names: list[str], expected: list[str]) -> Finding:
    missing = [f for f in expected if f not in names]
    extra = [c for c in names if c not in expected]
    detail = []
    if missing:
        detail.append(f"fields without a column: {', '.join(missing)}")
    if extra:
        detail.append(f"columns without a field: {', '.join(extra)}")
    if not missing and not extra:
        detail.append(f"order differs: columns {', '.join(names)}; fields {', '.join(expected)}")
    return Finding(query.location, f"result columns do not match {result.__name__}: " + "; ".join(detail))


def _analyse(catalog: Catalog, server_sql: str, width: int) -> tuple[list[Out], Any]:
    """The nullability of each result column (a reason on every column when the analysis fails)."""
    import pglast

    an = Analysis(catalog)
    try:
        tree = pglast.parse_sql(server_sql)[0].stmt
        outs = an.statement(tree)
        if len(outs) != width:
            raise Unsure(f"check matched {len(outs)} select-list items to {width} result columns")
        top = None
        if type(tree).__name__ == "SelectStmt" and not int(getattr(tree, "op", 0) or 0) and not tree.valuesLists:  # type: ignore[union-attr]
            top = (an, an.scope(tree, None))
        return outs, top
    except Unsure as e:
        return [Out(None, Verdict(str(e)))] * width, None
    except RecursionError:
        return [Out(None, Verdict("the query nests too deeply for check to follow"))] * width, None


def _check_column(
    query: Any,
    catalog: Catalog,
    *,
    col: str,
    oid: int,
    fname: str,
    ftype: Any,
    out: Out,
    annotated: bool,
    top: Any,
    elements_annotated: bool = False,
) -> list[Finding]:
    findings: list[Finding] = []
    py, is_optional = optional(ftype)
    info = catalog.type_info(oid)
    if problem := type_problem(py, info):
        findings.append(Finding(query.location, problem, field=fname))
    if info.name == "timestamp":
        findings.append(
            Finding(query.location, "timestamp without time zone loads naive datetimes; use timestamptz", field=fname)
        )
    if not is_optional and not annotated and out.verdict.why:
        findings.append(
            Finding(
                query.location,
                f"column may be NULL ({out.verdict.why}) but the field is {label(ftype)}; make it "
                f"{label(ftype)} | None, or annotate the query with '-- not-null: {col}: <why it cannot be NULL>'",
                field=fname,
            )
        )
    elem = sequence_element(py)
    if (
        info.element is not None
        and elem is not None
        and out.verdict.elements
        and not optional(elem)[1]
        and not elements_annotated
    ):
        findings.append(
            Finding(
                query.location,
                f"array elements may be NULL ({out.verdict.elements}) but the field is {label(ftype)}; "
                f"use list[{label(elem)} | None], or annotate the query with '-- not-null: {col}[]: <why>'",
                field=fname,
            )
        )
    if info.name in ("json", "jsonb") and needs_shape(py):
        shape = None
        if top is not None and out.node is not None:
            an, scope = top
            try:
                shape = shape_of(an, out.node, scope)
            except (Unsure, RecursionError):
                shape = None
        problems, unsure = compare(py, shape, fname)
        findings += [Finding(query.location, p, field=fname) for p in problems]
        findings += [Finding(query.location, f"unverifiable: {u}", field=fname, note=True) for u in unsure]
    return findings
