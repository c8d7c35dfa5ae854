"""Our cattrs converter: how records and JSON values cross into and out of Python.

Datetimes travel as ISO 8601 strings (what PostgreSQL's json functions emit) and are always
timezone-aware; unknown keys are refused when structuring input records.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import cattrs
from cattrs.preconf.orjson import make_converter as make_orjson_converter

__all__ = ["converter", "make_converter"]


def _structure_datetime(value: Any, _: type) -> datetime:
    # On the cache's hot path: the common case (an ISO string with its offset) costs one call.
    if value.__class__ is str:
        dt = datetime.fromisoformat(value)
    elif isinstance(value, datetime):
        dt = value
    else:
        raise TypeError(f"expected an ISO 8601 datetime string, got {type(value).__name__}")
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _structure_date(value: Any, _: type) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return date.fromisoformat(value)
    raise TypeError(f"expected an ISO 8601 date string, got {type(value).__name__}")


def make_converter(*, forbid_extra_keys: bool = False, detailed_validation: bool = False) -> cattrs.Converter:
    """A converter for records: ISO datetimes (aware, UTC when naive), orjson-compatible output.

    ``detailed_validation`` (per-field error reports) costs more than half of every structure call: it
    is for input validation, not for records read back from our own database and caches.
    """
    conv = make_orjson_converter(forbid_extra_keys=forbid_extra_keys, detailed_validation=detailed_validation)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_structure_hook(date, _structure_date)
    conv.register_unstructure_hook(datetime, lambda dt: dt.isoformat())
    conv.register_unstructure_hook(date, lambda d: d.isoformat())
    return conv


converter: cattrs.Converter = make_converter()
