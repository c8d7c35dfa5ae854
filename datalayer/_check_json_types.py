"""Does a value of a known SQL type, read back from json, load into a field's Python type?

json keeps numbers, booleans and strings: an ``integer`` arrives as an int, a ``numeric`` as a number that
may have a fraction (a float), a ``boolean`` as a bool, text and timestamps as strings (the record
converter parses ISO timestamps and dates into ``datetime`` / ``date``, and a string into a str Enum).
"""

from __future__ import annotations

import enum
import types
import typing
from datetime import date, datetime
from typing import Any, Literal, Union
from uuid import UUID

from datalayer._check_catalog import TypeInfo
from datalayer._check_types import label, sequence_element

__all__ = ["json_problem"]

_TEXT = frozenset({"text", "varchar", "bpchar", "char", "name", "citext"})
_INTS = frozenset({"int2", "int4", "int8", "oid"})
_FRACTIONAL = frozenset({"numeric", "float4", "float8"})


def _accepts(py: Any, info: TypeInfo) -> bool | None:
    """Whether json of ``info`` loads into ``py`` (None: check has no rule for the type)."""
    if py is Any or py is object:
        return True
    if typing.get_origin(py) in (Union, types.UnionType):
        verdicts = [_accepts(m, info) for m in typing.get_args(py) if m is not type(None)]
        return True if any(verdicts) else (None if None in verdicts else False)
    if info.element is not None:
        elem = sequence_element(py)
        return False if elem is None else _accepts(elem, info.element)
    is_enum = isinstance(py, type) and issubclass(py, enum.Enum)
    if info.name in _INTS:
        return py in (int, float) and py is not bool
    if info.name in _FRACTIONAL:
        return py is float
    if info.name == "bool":
        return py is bool
    if info.name in _TEXT or info.kind == "e":
        return py is str or is_enum or typing.get_origin(py) is Literal
    if info.name == "uuid":
        return py in (str, UUID)
    if info.name in ("timestamptz", "timestamp"):
        return py in (str, datetime)
    if info.name == "date":
        return py in (str, date)
    return None


def json_problem(py: Any, info: TypeInfo, where: str) -> str | None:
    """Why a json value of SQL type ``info`` does not load into a ``py`` field at ``where`` (None: it does)."""
    if _accepts(py, info) is not False:
        return None
    why = ""
    if info.name in _FRACTIONAL and py is int:
        why = " (a json number that may have a fraction)"
    elif info.name == "bool":
        why = " (json true/false)"
    return f"{where}: the json value is {info.shown}{why} but the field is {label(py)}"
