"""Does a record field's Python type hold what a PostgreSQL column returns?"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Literal, Union
from uuid import UUID

import attrs

from datalayer._check_catalog import TypeInfo
from datalayer.rows import init_fields

__all__ = ["init_fields", "label", "optional", "sequence_element", "type_problem"]

_PY_TYPES: dict[str, tuple[Any, ...]] = {
    "int2": (int,),
    "int4": (int,),
    "int8": (int,),
    "oid": (int,),
    "xid": (int,),
    "numeric": (Decimal,),
    "float4": (float,),
    "float8": (float,),
    "money": (str,),
    "text": (str,),
    "varchar": (str,),
    "bpchar": (str,),
    "char": (str,),
    "name": (str,),
    "citext": (str,),
    "regclass": (str,),
    "regtype": (str,),
    "regproc": (str,),
    "regnamespace": (str,),
    "bool": (bool,),
    "timestamptz": (datetime,),
    "timestamp": (datetime,),
    "date": (date,),
    "time": (time,),
    "timetz": (time,),
    "interval": (timedelta,),
    "json": (dict, list),  # or Any / object, or records (a json scalar needs Any)
    "jsonb": (dict, list),
    "uuid": (UUID,),
    "bytea": (bytes,),
    "inet": (IPv4Address, IPv6Address),
    "cidr": (IPv4Network, IPv6Network),
    "void": (type(None),),
    "xml": (str,),
    "tsvector": (str,),
    "tsquery": (str,),
}


def optional(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None was allowed)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return tp, tp is Any or tp is object


def label(py: Any) -> str:
    if isinstance(py, type) and typing.get_origin(py) is None:
        return py.__name__
    return str(py).replace("typing.", "").replace("NoneType", "None")


def sequence_element(py: Any) -> Any | None:
    """X for list[X] / Sequence[X] / tuple[X, ...]; Any for a bare list; None for anything else."""
    origin = typing.get_origin(py)
    if py in (list, tuple) or origin in (list, Sequence, tuple, typing.Sequence):
        args = typing.get_args(py)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return None
        return args[0] if args else Any
    return None


def _members(py: Any) -> list[Any]:
    if typing.get_origin(py) in (Union, types.UnionType):
        return list(typing.get_args(py))
    return [py]


def type_problem(py: Any, info: TypeInfo) -> str | None:
    """Why a ``py`` field cannot hold a value of ``info`` (None: it can)."""
    if py is Any or py is object:
        return None
    if len(_members(py)) > 1:
        problems = [type_problem(m, info) for m in _members(py)]
        return None if any(p is None for p in problems) else f"column is {info.shown} but the field is {label(py)}"
    if info.element is not None:
        inner = sequence_element(py)
        if inner is None:
            return f"column is {info.shown} but the field is {label(py)}; use list[...]"
        elem, _ = optional(inner)
        problem = type_problem(elem, info.element)
        return problem and f"array element: {problem}"
    if info.kind == "e":  # enum: psycopg loads the label as str unless an Enum is registered
        if py is str:
            return None
        values: list[object] | None = None
        if isinstance(py, type) and issubclass(py, enum.Enum):
            values = [m.value for m in py]
        elif typing.get_origin(py) is Literal and all(isinstance(a, str) for a in typing.get_args(py)):
            values = list(typing.get_args(py))
        if values is None:
            return f"column is {info.shown} but the field is {label(py)}; use str, a str Enum, or Any"
        lacking = [v for v in info.labels if v not in values]
        if lacking:
            return (
                f"column is {info.shown} with label(s) {', '.join(map(repr, lacking))} that {label(py)} lacks; "
                "add them to it (or use str)"
            )
        return None
    if info.kind in ("r", "m"):
        from psycopg.types.multirange import Multirange
        from psycopg.types.range import Range

        want = Range if info.kind == "r" else Multirange
        if py is want or typing.get_origin(py) is want:
            return None
        return f"column is {info.shown} but the field is {label(py)}; use psycopg's {want.__name__}[...] or Any"
    expected = _PY_TYPES.get(info.name)
    if expected is None:
        return f"column is {info.shown}, which check has no Python type for; use Any"
    origin = typing.get_origin(py) or py
    if info.name in ("json", "jsonb"):
        if origin in expected or (isinstance(py, type) and attrs.has(py)) or sequence_element(py) is not None:
            return None
        return f"column is {info.shown} but the field is {label(py)}"
    if py in expected or origin in expected:
        return None
    if isinstance(py, type) and issubclass(py, enum.Enum) and info.name in ("text", "varchar", "int2", "int4"):
        return None  # the converter maps a value to its Enum
    return f"column is {info.shown} but the field is {label(py)}"
