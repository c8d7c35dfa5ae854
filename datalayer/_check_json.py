"""json shaped into nested records: the keys and nullability check can prove, and what it cannot.

``json_agg(f)`` of a table row, ``jsonb_build_object('k', v, …)``, ``row_to_json(t)`` and ``coalesce(x,
'[]')`` have a shape check can read: every record field needs its key (or a default), and a key that may be
NULL needs an Optional field. Any other json is reported as unverifiable (the test plugin's strict mode
checks what the rows really hold).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from datalayer._check_catalog import TypeInfo
from datalayer._check_json_types import json_problem
from datalayer._check_scope import Scope, Unsure, Verdict, node_name
from datalayer._check_sqltypes import entry_types, sql_type
from datalayer._check_types import init_fields, label, optional, sequence_element

if TYPE_CHECKING:
    from datalayer._check_nullability import Analysis

__all__ = ["Shape", "compare", "needs_shape", "shape_of"]


@attrs.frozen
class Shape:
    """An object with known keys, or an array with a known element shape."""

    keys: dict[str, tuple[Verdict, Shape | None]] | None = None
    element: Shape | None = None
    element_null: str | None = None
    is_array: bool = False
    types: dict[str, TypeInfo] = attrs.field(factory=dict)  # the SQL type of a key's value, where known
    element_types: tuple[TypeInfo | None, ...] = ()  # of an array's elements (None: not known)


def needs_shape(py: Any) -> bool:
    """Does the field type say what the json holds (records, ``list[X]``, ``dict[str, X]``)?"""
    inner, _ = optional(py)
    if isinstance(inner, type) and attrs.has(inner):
        return True
    elem = sequence_element(inner) if inner not in (list, tuple) else None
    if elem is None and typing.get_origin(inner) in (dict, Mapping, typing.Mapping):
        elem = (typing.get_args(inner) or (Any, Any))[-1]
    return elem is not None and elem is not Any and elem is not object


def shape_of(an: Analysis, node: Any, scope: Scope) -> Shape | None:
    """The json shape of ``node``, or None when check cannot tell."""
    kind = type(node).__name__
    if kind == "TypeCast":
        return shape_of(an, node.arg, scope)
    if kind == "CoalesceExpr":
        shapes = [shape_of(an, a, scope) for a in node.args]
        known = [s for s in shapes if s is not None]
        empties = [a for a, s in zip(node.args, shapes, strict=True) if s is None and _empty_literal(a)]
        return known[0] if len(known) == 1 and len(known) + len(empties) == len(shapes) else None
    if kind == "ColumnRef" and len(node.fields) <= 2:
        alias = node_name(node.fields[0])
        if len(node.fields) == 2 and type(node.fields[1]).__name__ != "A_Star":
            return None
        entry = scope.entry(alias)
        if entry is None:
            return None
        try:
            cols = an.entry_columns(entry)
        except Unsure:
            return None
        col_types = entry_types(an, entry)
        row: dict[str, tuple[Verdict, Shape | None]] = {str(c.name): (c.verdict, None) for c in cols if c.name}
        typed = {str(c.name): t for c, t in zip(cols, col_types, strict=False) if c.name and t}
        return Shape(keys=row, types=typed)
    if kind == "SubLink" and int(node.subLinkType) == 4:
        sub = node.subselect
        if type(sub).__name__ != "SelectStmt" or len(sub.targetList or ()) != 1:
            return None
        try:
            inner = an.scope(sub, scope)
        except Unsure:
            return None
        return shape_of(an, sub.targetList[0].val, inner)
    if kind != "FuncCall":
        return None
    fname = node_name(node.funcname[-1]).lower()
    args = list(node.args or ())
    if fname in ("json_agg", "jsonb_agg") and len(args) == 1:
        element = an.expr(args[0], scope)
        nested = shape_of(an, args[0], scope)
        kinds = () if nested is not None else (sql_type(an, args[0], scope),)
        return Shape(element=nested, element_null=element.why, is_array=True, element_types=kinds)
    if fname in ("json_build_array", "jsonb_build_array"):
        verdicts = [an.expr(a, scope) for a in args]
        why = next((v.why for v in verdicts if v.why), None)
        return Shape(is_array=True, element_null=why, element_types=tuple(sql_type(an, a, scope) for a in args))
    if fname in ("row_to_json", "to_json", "to_jsonb") and args:
        return shape_of(an, args[0], scope)
    if fname in ("json_build_object", "jsonb_build_object") and len(args) % 2 == 0:
        keys: dict[str, tuple[Verdict, Shape | None]] = {}
        types: dict[str, TypeInfo] = {}
        for k, v in zip(args[::2], args[1::2], strict=True):
            key = getattr(getattr(k, "val", None), "sval", None)
            if type(k).__name__ != "A_Const" or not isinstance(key, str):
                return None
            keys[key] = (an.expr(v, scope), shape_of(an, v, scope))
            if keys[key][1] is None and (t := sql_type(an, v, scope)) is not None:
                types[key] = t
        return Shape(keys=keys, types=types)
    return None


def _empty_literal(node: Any) -> bool:
    while type(node).__name__ == "TypeCast":
        node = node.arg
    return type(node).__name__ == "A_Const" and getattr(node.val, "sval", None) in ("[]", "{}")


def compare(py: Any, shape: Shape | None, path: str) -> tuple[list[str], list[str]]:
    """(problems, unverifiable parts) of loading json of ``shape`` into a ``py`` field at ``path``."""
    inner, _ = optional(py)
    if not needs_shape(inner):
        return [], []
    if shape is None:
        return [], [f"{path}: json shaped into {label(inner)} (check cannot read the json's shape)"]
    elem = sequence_element(inner)
    if elem is not None:
        if not shape.is_array:
            return [f"{path}: the json is an object but the field is {label(inner)}"], []
        elem_type, elem_optional = optional(elem)
        problems: list[str] = []
        if shape.element_null and not elem_optional:
            problems.append(f"{path}[]: an element may be NULL ({shape.element_null}) but it is {label(elem)}")
        problems += [p for t in shape.element_types if t and (p := json_problem(elem_type, t, f"{path}[]"))]
        if shape.element is None and (not shape.element_types or None in shape.element_types):
            if needs_shape(elem_type) or elem_type not in (Any, object):
                return problems, [f"{path}[]: json elements loaded as {label(elem)} (check cannot read their type)"]
            return problems, []
        more, unsure = compare(elem_type, shape.element, f"{path}[]")
        return problems + more, unsure
    if shape.keys is None:
        return [f"{path}: the json is an array but the field is {label(inner)}"], []
    if not (isinstance(inner, type) and attrs.has(inner)):  # dict[str, X]: every value is an X
        value = (typing.get_args(inner) or (Any, Any))[-1]
        fields = [(k, value, False) for k in shape.keys]
    else:
        hints = _hints(inner)
        fields = [(f.name, hints.get(f.name, Any), f.default is attrs.NOTHING) for f in init_fields(inner)]
    problems, unsure = [], []
    for name, ftype, required in fields:
        where = f"{path}.{name}"
        if name not in shape.keys:
            if required:
                problems.append(f"{where}: the json object has no key {name!r} (keys: {', '.join(shape.keys)})")
            continue
        verdict, nested = shape.keys[name]
        bare, is_optional = optional(ftype)
        if verdict.why and not is_optional:
            problems.append(f"{where}: may be NULL ({verdict.why}) but it is {label(ftype)}")
        if name in shape.types:
            if problem := json_problem(bare, shape.types[name], where):
                problems.append(problem)
            continue
        more, more_unsure = compare(ftype, nested, where)
        problems += more
        unsure += more_unsure
    return problems, unsure


def _hints(cls: type[Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {}
