"""A ``logging.LogRecord`` made into a system_log row that PostgreSQL will always accept.

The log handler must never be stopped by what a caller logs: every string (message, service,
logger and thread names, ``extra=`` keys and values, the traceback) goes through ``clean_text``
(lone surrogates and NUL written out as escapes), anything JSON cannot hold becomes its repr, and
sizes are capped, so that a row built here is refused by the server only if the server is wrong.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from datalayer import _jsonb
from datalayer.repos._common import MAX_JSON_BYTES, has_non_finite
from datalayer.repos.system_log import MAX_MESSAGE_CHARS, MAX_SERVICE_CHARS
from datalayer.text import clean_text

__all__ = ["clean_service", "event_level", "record_row"]

# One string inside details (the traceback included), the items kept of one list or dict, and the
# nesting kept: log records are for reading, not for storing documents.
MAX_DETAIL_CHARS = 20_000
MAX_ITEMS = 1_000
MAX_DEPTH = 20
_FORMATTER = logging.Formatter()
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _text(value: object, limit: int = MAX_DETAIL_CHARS) -> str:
    """``value`` as storable text of at most ``limit`` characters; never raises."""
    try:
        s = value if isinstance(value, str) else str(value)
    except Exception:
        s = f"<{type(value).__name__} that cannot be shown>"
    return clean_text(s[:limit])[:limit]


def _repr(value: object) -> str:
    try:
        return _text(repr(value))
    except Exception:
        return _text(f"<{type(value).__name__} that cannot be shown>")


def _storable(value: Any, depth: int = 0) -> Any:
    """``value`` with every string cleaned (dict keys too) and what JSON cannot hold as its repr."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)  # orjson's range
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # JSON has no NaN or infinity
    if depth >= MAX_DEPTH:
        return _repr(value)
    if isinstance(value, dict):
        items = list(value.items())[:MAX_ITEMS]
        return {_text(k, 200): _storable(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [_storable(v, depth + 1) for v in value[:MAX_ITEMS]]
    return _repr(value)


def _own(details: dict[str, Any], count: int) -> dict[str, Any]:
    return {k: _storable(v) for k, v in list(details.items())[:count]}


def _details_json(details: dict[str, Any], standard_count: int) -> str:
    """``details`` as jsonb text; its first ``standard_count`` keys are the handler's own (kept if the
    caller's extras must be dropped)."""
    try:
        encoded = _jsonb.dumps(details)
        # orjson writes NaN and infinity as null: those go through _storable too, which keeps their repr.
        if (
            b"\\u0000" not in encoded
            and len(encoded) <= MAX_JSON_BYTES
            and not (b"null" in encoded and has_non_finite(details))
        ):
            return encoded.decode()
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        pass  # a lone surrogate, a non-str key, an object: clean below
    try:
        encoded = _jsonb.dumps(_storable(details))
    except (TypeError, orjson.JSONEncodeError, RecursionError) as e:
        encoded = _jsonb.dumps(
            {**_own(details, standard_count), "extra_dropped": _text(f"extra fields not storable: {e}")}
        )
    if len(encoded) > MAX_JSON_BYTES:
        note = f"extra fields dropped: {len(encoded):,} bytes of JSON, over the {MAX_JSON_BYTES:,}-byte limit"
        encoded = _jsonb.dumps({**_own(details, standard_count), "extra_dropped": note})
    return encoded.decode()


_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "EXCEPTION": "ERROR"}


def event_level(level: str) -> str:
    """``log_system_event``'s lenient level: any case, and WARN/FATAL/EXCEPTION for their logging names.

    Anything else is passed on as it is, for the repository's check to name.
    """
    if isinstance(level, str):
        return _LEVEL_ALIASES.get(level.upper(), level.upper())
    return level


def clean_service(service: object) -> str:
    """A service name system_log accepts (1 to 100 characters, storable); "app" when empty."""
    return (_text(service, MAX_SERVICE_CHARS) if service is not None else "") or "app"


def _message(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # bad %-arguments: keep what the caller wrote
        message = f"{_text(record.msg, MAX_MESSAGE_CHARS)} (arguments {_repr(record.args)})"
    return _text(message, MAX_MESSAGE_CHARS)


def _exception(record: logging.LogRecord, formatter: logging.Formatter | None) -> str:
    try:
        return _text((formatter or _FORMATTER).formatException(record.exc_info))  # type: ignore[arg-type]
    except Exception as e:
        return _text(f"the exception could not be formatted ({type(e).__name__})")


def record_row(
    record: logging.LogRecord, *, service: str, level: str, record_id: str, formatter: logging.Formatter | None
) -> tuple[Any, ...]:
    """The COPY row ``(created_at, service, level, message, details_json, user_id)`` of ``record``."""
    # Any: a hand-made record may hold anything here, and threadName is None without logging.logThreads.
    name, module, function, thread = cast(
        tuple[Any, ...], (record.name, record.module, record.funcName, record.threadName)
    )
    try:
        joined = name + module + function + thread
        plain = joined.isascii() and "\x00" not in joined and max(map(len, (name, module, function, thread))) <= 1000
    except TypeError:  # one of them is not a str (a hand-made record)
        plain = False
    if not plain:
        name, module, function, thread = (_text(v, 1000) for v in (name, module, function, thread))
    details: dict[str, Any] = {
        "logger": name,
        "module": module,
        "function": function,
        "line": record.lineno if type(record.lineno) is int else None,
        "thread": thread,
        "process": record.process if type(record.process) is int else None,
        # A unique id per record: after a COMMIT whose outcome is unknown, the writer looks for it
        # instead of writing the batch twice.
        "record_id": record_id,
    }
    if record.exc_info:
        details["exception"] = _exception(record, formatter)
    standard = len(details)
    user_id = None
    extra = record.__dict__.keys() - _STANDARD_ATTRS  # the caller's extra= fields
    for key in extra:
        if key == "user_id":
            user_id = record.__dict__[key]
        elif not (isinstance(key, str) and key.startswith("_")) and key not in details:
            details[key] = record.__dict__[key]
    if type(user_id) is not int or not 0 < user_id < 2**63:
        user_id = None
    try:
        created = datetime.fromtimestamp(record.created, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        created = datetime.now(UTC)
    return (created, service, level, _message(record), _details_json(details, standard), user_id)
