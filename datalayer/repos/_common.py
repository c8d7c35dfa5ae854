"""Checks and conversions shared by the repositories: ids, filters, JSON values, status moves.

Every check raises ValidationError naming the argument, before any SQL runs, so that hostile input
never reaches the server as anything but a bound parameter of the right type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from psycopg.types.json import Jsonb

from datalayer import _jsonb, text
from datalayer._pagination import decode_cursor, keyset_page
from datalayer.errors import IllegalTransition, NotFound, ValidationError
from datalayer.records import Page

T = TypeVar("T")

STATUSES = ("pending", "running", "completed", "failed")
MAX_JSON_BYTES = 1_000_000
MAX_IDS = 10_000
# The status a move to each target starts from.
TRANSITIONS = {"running": "pending", "completed": "running", "failed": "running"}
MAX_FILTER_CHARS = 200
MAX_ID = 2**63 - 1
# Column limits the validators and the repositories share (the CHECK constraints of migrations/0001
# are the server-side net under them).
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,50}")
MAX_ANALYSIS_NAME_CHARS = 200
MAX_TYPE_CHARS = 100


def check_id(value: object, name: str) -> int:
    if type(value) is not int or not 0 < value <= MAX_ID:
        raise ValidationError({name: "must be a positive integer id"})
    return value


def optional_id(value: object, name: str) -> int | None:
    return None if value is None else check_id(value, name)


def check_ids(values: object, name: str = "ids") -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValidationError({name: "must be a list of integer ids"})
    if len(values) > MAX_IDS:
        raise ValidationError({name: f"must hold at most {MAX_IDS:,} ids"})
    return [check_id(v, name) for v in values]


def check_text(value: object, name: str, *, max_chars: int = MAX_FILTER_CHARS, min_chars: int = 1) -> str:
    """The text rule of ``datalayer.text`` with the repositories' default lengths (1 to 200)."""
    return text.check_text(value, name, min_chars=min_chars, max_chars=max_chars)


def check_username(value: object, name: str = "username") -> str:
    """A username as stored: 3 to 50 of letters, digits, '_', '.' and '-'."""
    username = text.check_text(value, name)
    if not USERNAME_RE.fullmatch(username):
        raise ValidationError({name: "must be 3 to 50 letters, digits, '_', '.' or '-'"})
    return username


def check_email(value: object) -> tuple[str, str]:
    """(the address as stored and shown: trimmed, otherwise as typed; its identity key)."""
    key = text.email_key(value)
    return str(value).strip(), key


def check_analysis_name(value: object) -> str:
    """An analysis name as stored: trimmed, 1 to 200 characters."""
    return check_text(value.strip() if isinstance(value, str) else value, "name", max_chars=MAX_ANALYSIS_NAME_CHARS)


def check_type(value: object, name: str) -> str:
    """An analysis_type or tool_type: 1 to 100 characters."""
    return check_text(value, name, max_chars=MAX_TYPE_CHARS)


def optional_text(value: object, name: str, *, max_chars: int = MAX_FILTER_CHARS) -> str | None:
    return None if value is None else check_text(value, name, max_chars=max_chars)


def check_status(value: object, name: str = "status") -> str:
    if value not in STATUSES:
        raise ValidationError({name: f"must be one of {', '.join(STATUSES)}"})
    return str(value)


def optional_status(value: object) -> str | None:
    return None if value is None else check_status(value)


def check_time(value: object, name: str) -> datetime:
    """``value`` if it is a timezone-aware datetime whose offset Python accepts, else ValidationError.

    A tzinfo is the caller's code: its ``utcoffset`` may answer None (naive after all), 24 hours or
    more (a ValueError from Python), a non-timedelta or raise; asked once here, so comparisons and
    arithmetic later cannot raise it.
    """
    aware = "must be a timezone-aware datetime"
    if not isinstance(value, datetime):
        raise ValidationError({name: aware})
    try:
        offset = value.utcoffset()
    except (ValueError, TypeError, ArithmeticError) as e:
        raise ValidationError(
            {name: f"{aware} with a valid utc offset; its tzinfo failed ({str(e).lower()})"[:300]}
        ) from None
    if offset is None:
        raise ValidationError({name: aware})
    return value


def optional_time(value: object, name: str) -> datetime | None:
    return None if value is None else check_time(value, name)


def check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError({name: "must be true or false"})
    return value


def optional_flag(value: object, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValidationError({name: "must be true, false or None"})
    return value


def _dumps(obj: Any) -> str:
    return _jsonb.dumps(obj).decode()


def json_text(value: object, name: str, *, require_object: bool = True) -> str:
    """``value`` as JSON text; ValidationError unless JSON-serialisable, at most 1 MB, without NUL."""
    if require_object and not isinstance(value, dict):
        raise ValidationError({name: "must be a JSON object (a dict)"})
    try:
        encoded = _dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        if (problem := _text_problem_in(value)) is not None:
            raise ValidationError({name: problem}) from None
        raise ValidationError(
            {name: "must be JSON-serialisable (str keys; str, int, float, bool, None, list, dict)"}
        ) from None
    if "null" in encoded and has_non_finite(value):  # orjson writes NaN and infinity as null
        raise ValidationError({name: "must not contain NaN or infinite numbers (JSON cannot represent them)"})
    if len(encoded) > MAX_JSON_BYTES:
        raise ValidationError({name: f"must be at most {MAX_JSON_BYTES:,} bytes as JSON"})
    if "\\u0000" in encoded:
        raise ValidationError({name: "must not contain NUL characters (PostgreSQL's jsonb cannot store them)"})
    return encoded


def _text_problem_in(value: object) -> str | None:
    # Only after orjson refused the value (it refuses lone surrogates), so the walk costs nothing on
    # the hot path; orjson also refuses nesting deeper than 255 levels, which must not crash the walk.
    try:
        return text.nested_text_problem(value)
    except RecursionError:
        return None


def has_non_finite(value: object) -> bool:
    """Whether ``value`` holds NaN or an infinity (orjson writes them as null without a word)."""
    try:
        json.dumps(value, allow_nan=False, default=str)  # default: orjson's datetimes, UUIDs … are not the question
    except ValueError:
        return True
    return False


def json_value(value: object, name: str, *, require_object: bool = True) -> Jsonb:
    """A jsonb parameter, validated as ``json_text`` and encoded once."""
    encoded = json_text(value, name, require_object=require_object)
    return Jsonb(value, dumps=lambda _obj: encoded)


def optional_json(value: object, name: str, *, require_object: bool = True) -> Jsonb | None:
    return None if value is None else json_value(value, name, require_object=require_object)


def time_cursor(listing: str, after: str | None) -> tuple[datetime | None, int | None]:
    """(created_at, id) out of a keyset cursor, or (None, None) for the first page."""
    if after is None:
        return None, None
    created, ident = decode_cursor(listing, after, (datetime, int))
    return created, ident


def time_page(rows: list[T], limit: int, listing: str, key: Callable[[T], tuple[datetime, int]]) -> Page[T]:
    return keyset_page(rows, limit, listing, key)


def check_order(order: object) -> str:
    if order not in ("newest", "oldest"):
        raise ValidationError({"order": "must be 'newest' or 'oldest'"})
    return str(order)


def transition_error(kind: str, ident: int, target: str, current: str | None) -> Exception:
    """Why a status move matched no row: the row is missing (or not yours), or in the wrong status."""
    if current is None:
        return NotFound(f"{kind} {ident} does not exist (or belongs to another user)")
    start = TRANSITIONS[target]
    return IllegalTransition(
        f"{kind} {ident} is {current}; it can move to {target} only from {start} "
        "(pending -> running -> completed | failed)",
        current=current,
        target=target,
    )
