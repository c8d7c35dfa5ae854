"""system_log: append-only events, time-bounded listings that prune partitions, COPY bulk insert.

>>> system_log_repo.find(db, since=now - timedelta(hours=1), until=now, level="ERROR")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from psycopg import Connection

from datalayer._pagination import check_limit
from datalayer._run import Bound, bind, check_connection
from datalayer._sql import load_queries
from datalayer.errors import ValidationError
from datalayer.partitions import EARLIEST_DAY, MAX_AHEAD, keep_ahead
from datalayer.records import LevelCount, Page, SystemLogEntry
from datalayer.repos._common import (
    check_id,
    check_text,
    check_time,
    json_text,
    json_value,
    optional_id,
    optional_text,
    time_cursor,
    time_page,
)

__all__ = [
    "LEVELS",
    "MAX_RANGE",
    "LogEvent",
    "bulk_insert",
    "copy_rows",
    "count_by_level",
    "create",
    "find",
    "get_by_id",
    "record_landed",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Listings must be bounded in time so that they prune to the partitions of the range.
MAX_RANGE = timedelta(days=92)
MAX_MESSAGE_CHARS = 100_000
MAX_SERVICE_CHARS = 100  # the system_log_service_length CHECK

_q = load_queries("system_log")
_create = bind(_q, "create", SystemLogEntry)
_get_by_id = bind(_q, "get_by_id", SystemLogEntry)
_find = bind(_q, "find", SystemLogEntry)
_count_by_level = bind(_q, "count_by_level", LevelCount)
_copy_in: Bound[None] = bind(_q, "copy_in", None)
_record_landed = bind(_q, "record_landed", bool)


@attrs.frozen(kw_only=True)
class LogEvent:
    """One event for ``bulk_insert`` (created_at defaults to now)."""

    service: str
    level: str
    message: str
    details: dict[str, Any] = attrs.field(factory=dict)
    user_id: int | None = None
    created_at: datetime | None = None


def check_level(level: object) -> str:
    if level not in LEVELS:
        raise ValidationError({"level": f"must be one of {', '.join(LEVELS)}"})
    return str(level)


def _message(message: object) -> str:
    return check_text(message, "message", max_chars=MAX_MESSAGE_CHARS, min_chars=0)


def create(
    db: Connection[Any],
    *,
    service: str,
    level: str,
    message: str,
    details: dict[str, Any] | None = None,
    user_id: int | None = None,
) -> SystemLogEntry:
    """Insert one event and return it."""
    check_connection(db, open_=True)  # before keep_ahead, which would log its own failure on a wrong db
    service = check_text(service, "service", max_chars=MAX_SERVICE_CHARS)
    level = check_level(level)
    message = _message(message)
    details_value = json_value({} if details is None else details, "details")
    user_id = optional_id(user_id, "user_id")
    keep_ahead(db)  # a comparison, unless partitions ahead run short (then a background top-up)
    return _create.one(db, service=service, level=level, message=message, details=details_value, user_id=user_id)


def get_by_id(db: Connection[Any], log_id: int) -> SystemLogEntry | None:
    """One event by id (probes every partition), or None."""
    return _get_by_id.maybe(db, log_id=check_id(log_id, "log_id"))


def _range(since_: object, until_: object) -> tuple[datetime, datetime]:
    since, until = check_time(since_, "since"), check_time(until_, "until")
    if since >= until:
        raise ValidationError({"until": "must be after since"})
    if until - since > MAX_RANGE:
        raise ValidationError({"until": f"the range may span at most {MAX_RANGE.days} days"})
    return since, until


def find(
    db: Connection[Any],
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    level: str | None = None,
    user_id: int | None = None,
    limit: int = 50,
    after: str | None = None,
) -> Page[SystemLogEntry]:
    """Events in ``[since, until)`` (at most 92 days), newest first, filtered; a keyset page."""
    since, until = _range(since, until)
    limit = check_limit(limit)
    after_created, after_id = time_cursor("system_log", after)
    rows = _find.many(
        db,
        since=since,
        until=until,
        service=optional_text(service, "service", max_chars=MAX_SERVICE_CHARS),
        level=None if level is None else check_level(level),
        user_id=optional_id(user_id, "user_id"),
        after_created=after_created,
        after_id=after_id,
        fetch=limit + 1,
    )
    return time_page(rows, limit, "system_log", lambda e: (e.created_at, e.id))


def count_by_level(
    db: Connection[Any], *, since: datetime, until: datetime, service: str | None = None
) -> list[LevelCount]:
    """How many events of each level in ``[since, until)``."""
    since, until = _range(since, until)
    return _count_by_level.many(
        db, since=since, until=until, service=optional_text(service, "service", max_chars=MAX_SERVICE_CHARS)
    )


def _row(event: LogEvent | Mapping[str, Any], now: datetime) -> tuple[Any, ...]:
    service: Any
    level: Any
    message: Any
    details: Any
    user_id: Any
    created_at: Any
    if isinstance(event, LogEvent):
        service, level, message = event.service, event.level, event.message
        details, user_id, created_at = event.details, event.user_id, event.created_at
    elif isinstance(event, Mapping):
        unknown = set(event) - {"service", "level", "message", "details", "user_id", "created_at"}
        if unknown:
            raise ValidationError({str(k)[:100]: "unknown field" for k in unknown})
        service, level, message = event.get("service"), event.get("level"), event.get("message")
        details, user_id, created_at = event.get("details") or {}, event.get("user_id"), event.get("created_at")
    else:
        raise ValidationError({"events": f"each event must be a LogEvent or a dict, got {type(event).__name__}"})
    return (
        now if created_at is None else _log_time(created_at, now),
        check_text(service, "service", max_chars=MAX_SERVICE_CHARS),
        check_level(level),
        _message(message),
        json_text(details, "details"),
        optional_id(user_id, "user_id"),
    )


def _log_time(value: object, now: datetime) -> datetime:
    # Only days a partition can exist for: a row outside them would wait in the default partition for
    # good (no maintenance can move it, and health would stay red).
    at = check_time(value, "created_at")
    day = at.astimezone(UTC).date()
    if not EARLIEST_DAY <= day <= now.date() + timedelta(days=MAX_AHEAD):
        raise ValidationError(
            {"created_at": f"must be a time from {EARLIEST_DAY} to {MAX_AHEAD} days ahead (UTC), got {day}"}
        )
    return at


def _check_iterable(value: object, name: str, of: str) -> None:
    # A str, bytes or dict iterates too, but as characters or keys: one event passed for a list of them.
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ValidationError({name: f"must be an iterable (a list) of {of}, got {type(value).__name__}"})


def bulk_insert(db: Connection[Any], events: Iterable[LogEvent | Mapping[str, Any]]) -> int:
    """Insert many events through COPY; returns how many. All or nothing: a bad event (ValidationError
    naming the field and the event's position) or a failed COPY inserts none of them.
    """
    from datalayer.transactions import transaction

    check_connection(db, open_=True)
    _check_iterable(events, "events", "LogEvent or dict")
    now = datetime.now(UTC)
    position = 0

    def rows() -> Iterable[tuple[Any, ...]]:
        nonlocal position
        for position, event in enumerate(events):  # noqa: B007 - read by the error handler below
            yield _row(event, now)

    keep_ahead(db)
    try:
        with transaction(db):
            return _copy_in.copy_in(db, rows())
    except ValidationError as e:
        raise ValidationError({f"events[{position}].{k}": v for k, v in e.errors.items()}) from None


def copy_rows(db: Connection[Any], rows: Iterable[tuple[Any, ...]]) -> int:
    """COPY already-checked rows ``(created_at, service, level, message, details_json, user_id)``.

    For writers that build rows themselves (the log handler); callers own the transaction.
    """
    _check_iterable(rows, "rows", "tuples")
    return _copy_in.copy_in(db, rows)


def record_landed(db: Connection[Any], *, record_id: str, service: str, first: datetime, last: datetime) -> bool:
    """Whether the event tagged ``details.record_id`` (written between ``first`` and ``last``) is stored."""
    return _record_landed.scalar(db, record_id=record_id, service=service, first=first, last=last)
