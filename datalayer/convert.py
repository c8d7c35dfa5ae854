"""Our cattrs converter: how records and JSON values cross into and out of Python.

Structuring is strict, because the values come from JSON (json built by a query, a cached record) and a
coercion would hide a wrong query or a wrong field type behind a plausible value:

- ``int`` only from a JSON integer (never a bool, a float or a string); ``float`` from an integer or a
  float; ``str`` only from a string; ``bool`` only from true/false; ``Decimal`` from a number or a
  numeric string;
- ``datetime`` / ``date`` from ISO 8601 strings (datetimes always timezone-aware, UTC when naive),
  ``UUID`` from its string form;
- a nested record from an object holding each field without a default: a missing key is refused; an
  extra key is ignored (refusing costs ~40% of every cached record read; ``datalayer check`` compares a
  query's json keys with the record's fields);
- ``X | None`` accepts null; list elements are structured (so checked) one by one.

A refusal raises TypeError/ValueError/KeyError (cattrs' own errors for objects); the query runner turns
it into a QueryError naming the query, the field's path and the value's type.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import cattrs
from cattrs.preconf.orjson import make_converter as make_orjson_converter

__all__ = ["converter", "make_converter"]


def _refuse(value: Any, expected: str) -> Any:
    # Names the value's type only: the value may be a secret.
    raise TypeError(f"expected {expected}, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        type(None): "null",
    }
    return names.get(type(value)) or ("an object" if isinstance(value, dict) else type(value).__name__)


def _structure_enum(value: Any, tp: type[enum.Enum]) -> Any:
    try:
        return tp(value)
    except ValueError:
        # The labels are the type's, not data: naming them tells the reader what the column may hold.
        labels = ", ".join(repr(m.value) for m in tp)
        raise ValueError(
            f"expected one of {tp.__name__}'s values ({labels}), got {_json_type(value)} that is not one"
        ) from None


def _enums_first(hook: Callable[[Any, Any], Any], base: type) -> Callable[[Any, Any], Any]:
    """``hook`` for ``base`` itself; enums that subclass it (StrEnum, IntEnum) are built as enums.

    cattrs dispatches a class hook to its subclasses too, so ``str``'s hook would get ``StrEnum`` fields.
    """

    def structure(value: Any, tp: Any) -> Any:
        if tp is not base and isinstance(tp, type) and issubclass(tp, enum.Enum):
            return _structure_enum(value, tp)
        return hook(value, tp)

    return structure


def _structure_int(value: Any, _: type) -> int:
    if value.__class__ is int:  # the common case first: one check
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return _refuse(value, "an integer")  # type: ignore[no-any-return]


def _structure_float(value: Any, _: type) -> float:
    if value.__class__ is float:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return _refuse(value, "a number")  # type: ignore[no-any-return]


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    return _refuse(value, "a string")  # type: ignore[no-any-return]


def _structure_bool(value: Any, _: type) -> bool:
    if value.__class__ is bool:
        return value
    return _refuse(value, "true or false")  # type: ignore[no-any-return]


def _structure_decimal(value: Any, _: type) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            # repr of a float is its shortest exact spelling: Decimal(0.1) would carry binary noise
            return Decimal(repr(value) if isinstance(value, float) else value)
        except InvalidOperation:
            raise ValueError("expected a number or a numeric string, got a string that is not one") from None
    return _refuse(value, "a number")  # type: ignore[no-any-return]


def _structure_uuid(value: Any, _: type) -> UUID:
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            raise ValueError("expected a UUID string, got a string that is not one") from None
    return _refuse(value, "a UUID string")  # type: ignore[no-any-return]


def _structure_datetime(value: Any, _: type) -> datetime:
    # On the cache's hot path: the common case (an ISO string with its offset) costs one call.
    if value.__class__ is str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO 8601 datetime string, got a string that is not one") from None
    elif isinstance(value, datetime):
        dt = value
    else:
        raise TypeError(f"expected an ISO 8601 datetime string, got {_json_type(value)}")
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _structure_date(value: Any, _: type) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO 8601 date string, got a string that is not one") from None
    raise TypeError(f"expected an ISO 8601 date string, got {_json_type(value)}")


def make_converter(*, forbid_extra_keys: bool = False, detailed_validation: bool = False) -> cattrs.Converter:
    """A strict converter for records (see the module doc): ISO datetimes, orjson-compatible output.

    ``detailed_validation`` (per-field error reports) costs more than half of every structure call: it
    is for input validation and for explaining a failure, not for records read back from our own
    database and caches.
    """
    conv = make_orjson_converter(forbid_extra_keys=forbid_extra_keys, detailed_validation=detailed_validation)
    for tp, hook in (
        (int, _structure_int),
        (float, _structure_float),
        (str, _structure_str),
        (bool, _structure_bool),
        (Decimal, _structure_decimal),
        (UUID, _structure_uuid),
        (datetime, _structure_datetime),
        (date, _structure_date),
    ):
        conv.register_structure_hook(tp, _enums_first(hook, tp))
    conv.register_unstructure_hook(datetime, lambda dt: dt.isoformat())
    conv.register_unstructure_hook(date, lambda d: d.isoformat())
    conv.register_unstructure_hook(UUID, str)
    conv.register_unstructure_hook(Decimal, str)
    return conv


converter: cattrs.Converter = make_converter()
