"""The argument checks of the repositories, in one place: ids, text, filters, times, JSON values.

Every check raises ValidationError naming the argument, before any SQL runs, so that hostile input
never reaches the server as anything but a bound parameter of the right type. The repository modules
do no checks of their own: they call these (``tests/test_repo_conventions.py`` says so).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from datalayer import text

# The private imports of the repositories, kept here: jsonb's float spelling (shared with the log
# record) and the connection checks (sync and async) that tell a closed connection from a lost one
# have no public home.
from datalayer._jsonb import dumps as _jsonb_dumps
from datalayer._run import check_connection as _check_connection
from datalayer._run_cursor_async import check_connection as _check_aconnection
from datalayer.builtin_schema import LEVELS, MAX_ID, STATUSES
from datalayer.errors import ValidationError
from datalayer.partitions import EARLIEST_DAY, MAX_AHEAD

MAX_JSON_BYTES = 1_000_000
MAX_IDS = 10_000
MAX_FILTER_CHARS = 200
MAX_LIMIT = 1000
MAX_ERROR_CHARS = 10_000
# Column limits the validators and the repositories share (the CHECK constraints of the migrations
# are the server-side net under them).
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,50}")
MAX_ANALYSIS_NAME_CHARS = 200
MAX_TYPE_CHARS = 100
MAX_FILENAME_CHARS = 255
MAX_FILE_TYPE_CHARS = 50
MAX_URI_CHARS = 2048
MAX_KEY_CHARS = 512
MAX_SERVICE_CHARS = 100  # the system_log_service_length CHECK
MAX_MESSAGE_CHARS = 100_000
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_connection(db: object) -> None:
    """ValidationError naming ``db`` unless it is an open sync connection (for functions that do other
    work before their first query; the query itself checks it otherwise)."""
    _check_connection(db, open_=True)


def check_aconnection(db: object) -> None:
    """``check_connection`` for the async sources: ValidationError naming ``db`` unless it is an open
    psycopg.AsyncConnection (tools/async_to_sync.py renames it to ``check_connection`` in their sync twins)."""
    _check_aconnection(db, open_=True)


def check_message(value: object) -> str:
    """A system_log message: storable text of at most MAX_MESSAGE_CHARS characters (empty is allowed)."""
    return check_text(value, "message", max_chars=MAX_MESSAGE_CHARS, min_chars=0)


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


def check_any_text(value: object, name: str) -> str:
    """Any text PostgreSQL can store, of any length (an exact-match lookup)."""
    return text.check_text(value, name)


def optional_text(value: object, name: str, *, max_chars: int = MAX_FILTER_CHARS) -> str | None:
    return None if value is None else check_text(value, name, max_chars=max_chars)


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


def lookup_email_key(value: object) -> str | None:
    """The identity key of an address to look up; None when it cannot be a valid address (it finds
    nobody). ValidationError only for a non-str or text PostgreSQL cannot hold."""
    text.check_text(value, "email")
    try:
        return text.email_key(value)
    except ValidationError:
        return None


def check_hash(value: object) -> str:
    """A password hash as stored (what ``hash_password`` returns): non-empty text."""
    hashed = text.check_text(value, "hashed_password")
    if not hashed:
        raise ValidationError({"hashed_password": "must be a non-empty password hash (see hash_password)"})
    return hashed


def check_analysis_name(value: object) -> str:
    """An analysis name as stored: trimmed, 1 to 200 characters."""
    return check_text(value.strip() if isinstance(value, str) else value, "name", max_chars=MAX_ANALYSIS_NAME_CHARS)


def check_type(value: object, name: str) -> str:
    """An analysis_type or tool_type: 1 to 100 characters."""
    return check_text(value, name, max_chars=MAX_TYPE_CHARS)


def optional_type(value: object, name: str) -> str | None:
    return None if value is None else check_type(value, name)


def check_size(value: object, name: str = "size_bytes") -> int:
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise ValidationError({name: "must be a non-negative integer"})
    return value


def check_checksum(value: object) -> str | None:
    """A sha256 digest as stored (lower-case hex), or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value.lower()):
        raise ValidationError({"checksum": "must be a sha256 digest: 64 hexadecimal characters"})
    return value.lower()


def check_status(value: object, name: str = "status") -> str:
    if value not in STATUSES:
        raise ValidationError({name: f"must be one of {', '.join(STATUSES)}"})
    return str(value)


def optional_status(value: object) -> str | None:
    return None if value is None else check_status(value)


def check_level(value: object) -> str:
    if value not in LEVELS:
        raise ValidationError({"level": f"must be one of {', '.join(LEVELS)}"})
    return str(value)


def optional_level(value: object) -> str | None:
    return None if value is None else check_level(value)


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


def check_range(since: object, until: object, max_range: timedelta) -> tuple[datetime, datetime]:
    """(since, until): aware times, ``since`` before ``until``, at most ``max_range`` apart."""
    start, end = check_time(since, "since"), check_time(until, "until")
    if start >= end:
        raise ValidationError({"until": "must be after since"})
    if end - start > max_range:
        raise ValidationError({"until": f"the range may span at most {max_range.days} days"})
    return start, end


def check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError({name: "must be true or false"})
    return value


def optional_flag(value: object, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValidationError({name: "must be true, false or None"})
    return value


def check_key(value: object, name: str = "key") -> str:
    """A cache key (or key prefix): text of 1 to 512 characters."""
    return check_text(value, name, max_chars=MAX_KEY_CHARS)


def check_keys(values: object, name: str = "keys") -> list[str]:
    if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
        raise ValidationError({name: "must be a list of keys"})
    return [check_key(k, name) for k in values]


def check_record_ids(values: object, name: str = "ids") -> list[int]:
    """A list of ids (of records the caller holds): unlike ``check_ids``, no bound on the count."""
    if not isinstance(values, list | tuple) or not all(type(i) is int and 0 < i <= MAX_ID for i in values):
        raise ValidationError({name: "must be a list of record ids"})
    return list(values)


def check_ttl(value: object, name: str = "ttl") -> float | None:
    """A time to live in seconds (up to 10^9), or None for none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 10**9:
        raise ValidationError({name: "must be a positive number of seconds, or None"})
    return float(value)


def check_version(value: object, top: int, spelled: str) -> int:
    """A version from 0 to ``top`` (``spelled`` as the message shows it)."""
    if type(value) is not int or not 0 <= value <= top:
        raise ValidationError({"version": f"must be an integer from 0 to {spelled}"})
    return value


def check_kind(value: object, kinds: Sequence[str], name: str = "kind") -> str:
    if value not in kinds:
        raise ValidationError({name: f"must be one of {', '.join(kinds)}"})
    return str(value)


def check_order(order: object) -> str:
    if order not in ("newest", "oldest"):
        raise ValidationError({"order": "must be 'newest' or 'oldest'"})
    return str(order)


def check_limit(limit: object, name: str = "limit", *, most: int = MAX_LIMIT) -> int:
    """``limit`` as an int in 1..``most``, or ValidationError."""
    if type(limit) is not int or not 1 <= limit <= most:
        raise ValidationError({name: f"must be an integer between 1 and {most}"})
    return limit


def page_args(page: object, per_page: object) -> tuple[int, int, int]:
    """(page, per_page, offset) for a 1-based page number, validated."""
    per = check_limit(per_page, "per_page")
    if type(page) is not int or not 1 <= page <= 1_000_000:
        raise ValidationError({"page": "must be an integer between 1 and 1,000,000"})
    return page, per, (page - 1) * per


def check_known(given: Mapping[Any, object], allowed: Iterable[str], message: str = "unknown field") -> None:
    """ValidationError naming every key of ``given`` that ``allowed`` does not name."""
    unknown = set(given) - set(allowed)
    if unknown:
        raise ValidationError({str(k)[:100]: message for k in sorted(unknown, key=str)})


def check_changes(changes: Mapping[str, object], allowed: Mapping[str, object]) -> None:
    """ValidationError naming every key of ``changes`` that ``allowed`` (a TypedDict's annotations)
    does not name: ``update`` changes only its columns."""
    check_known(changes, allowed, "is not a column update may change")


def check_iterable(value: object, name: str, of: str) -> None:
    """ValidationError unless ``value`` is an iterable of items (``of`` names them)."""
    # A str, bytes or dict iterates too, but as characters or keys: one item passed for a list of them.
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ValidationError({name: f"must be an iterable (a list) of {of}, got {type(value).__name__}"})


def wrong_type(name: str, expected: str, value: object) -> ValidationError:
    """The error for ``value`` that is not what ``name`` must be (for the caller to raise)."""
    return ValidationError({name: f"must be {expected}, got {type(value).__name__}"})


def within(error: ValidationError, prefix: str) -> ValidationError:
    """``error`` with each field named inside its container: ``events[3].level``."""
    return ValidationError({f"{prefix}{k}": v for k, v in error.errors.items()})


def check_log_time(value: object, now: datetime) -> datetime:
    """A system_log time: aware, on a day a partition can exist for (EARLIEST_DAY to MAX_AHEAD days
    after ``now``)."""
    # A row outside them would wait in the default partition for good (no maintenance can move it,
    # and health would stay red).
    at = check_time(value, "created_at")
    day = at.astimezone(UTC).date()
    if not EARLIEST_DAY <= day <= now.date() + timedelta(days=MAX_AHEAD):
        raise ValidationError(
            {"created_at": f"must be a time from {EARLIEST_DAY} to {MAX_AHEAD} days ahead (UTC), got {day}"}
        )
    return at


def check_present(value: object, name: str, remedy: str) -> object:
    """``value``, unless it is None (ValidationError naming ``name`` with ``remedy``)."""
    if value is None:
        raise ValidationError({name: remedy})
    return value


def _dumps(obj: Any) -> str:
    return _jsonb_dumps(obj).decode()


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
