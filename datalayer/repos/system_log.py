"""system_log: append-only events, time-bounded listings that prune partitions, COPY bulk insert.

>>> system_log_repo.find(db, since=now - timedelta(hours=1), until=now, level="ERROR")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from psycopg import Connection

from datalayer import sql
from datalayer.builtin_schema import LEVELS
from datalayer.errors import ValidationError
from datalayer.partitions import keep_ahead
from datalayer.project import builtin_sql_dir
from datalayer.records import LevelCount, Page, SystemLogEntry
from datalayer.repos import _pages
from datalayer.repos._common import (
    MAX_MESSAGE_CHARS,
    MAX_SERVICE_CHARS,
    check_connection,
    check_id,
    check_iterable,
    check_known,
    check_level,
    check_log_time,
    check_range,
    check_text,
    check_time,
    json_text,
    json_value,
    optional_id,
    optional_level,
    optional_text,
    within,
    wrong_type,
)

__all__ = [
    "LEVELS",
    "MAX_MESSAGE_CHARS",
    "MAX_RANGE",
    "MAX_SERVICE_CHARS",
    "LogEvent",
    "bulk_insert",
    "copy_rows",
    "count_by_level",
    "create",
    "find",
    "get_by_id",
    "record_landed",
]

# Listings must be bounded in time so that they prune to the partitions of the range.
MAX_RANGE = timedelta(days=92)

_q = sql.load(builtin_sql_dir() / "system_log.sql")
_create = _q.bind("create", SystemLogEntry)
_get_by_id = _q.bind("get_by_id", SystemLogEntry)
_find = _q.bind("find", SystemLogEntry)
_count_by_level = _q.bind("count_by_level", LevelCount)
_copy_in = _q.bind("copy_in")
_record_landed = _q.bind("record_landed", bool)


@attrs.frozen(kw_only=True)
class LogEvent:
    """One event for ``bulk_insert`` (created_at defaults to now)."""

    service: str
    level: str
    message: str
    details: dict[str, Any] = attrs.field(factory=dict)
    user_id: int | None = None
    created_at: datetime | None = None


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
    check_connection(db)  # before keep_ahead, which would log its own failure on a wrong db
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
    since, until = check_range(since, until, MAX_RANGE)
    return _pages.by_time(
        db,
        _find,
        "system_log",
        limit=limit,
        after=after,
        since=since,
        until=until,
        service=optional_text(service, "service", max_chars=MAX_SERVICE_CHARS),
        level=optional_level(level),
        user_id=optional_id(user_id, "user_id"),
    )


def count_by_level(
    db: Connection[Any], *, since: datetime, until: datetime, service: str | None = None
) -> list[LevelCount]:
    """How many events of each level in ``[since, until)``."""
    since, until = check_range(since, until, MAX_RANGE)
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
        check_known(event, ("service", "level", "message", "details", "user_id", "created_at"))
        service, level, message = event.get("service"), event.get("level"), event.get("message")
        details, user_id, created_at = event.get("details") or {}, event.get("user_id"), event.get("created_at")
    else:
        raise wrong_type("events", "a list of LogEvent or dict", event)
    return (
        now if created_at is None else check_log_time(created_at, now),
        check_text(service, "service", max_chars=MAX_SERVICE_CHARS),
        check_level(level),
        _message(message),
        json_text(details, "details"),
        optional_id(user_id, "user_id"),
    )


def bulk_insert(db: Connection[Any], events: Iterable[LogEvent | Mapping[str, Any]]) -> int:
    """Insert many events through COPY; returns how many. All or nothing: a bad event (ValidationError
    naming the field and the event's position) or a failed COPY inserts none of them.
    """
    from datalayer.transactions import transaction

    check_connection(db)
    check_iterable(events, "events", "LogEvent or dict")
    now = datetime.now(UTC)
    position = 0

    def rows() -> Iterable[tuple[Any, ...]]:
        nonlocal position
        for position, event in enumerate(events):  # noqa: B007 - read by the error handler below
            yield _row(event, now)

    keep_ahead(db)
    try:
        with transaction(db):
            return _copy_in.copy(db, rows())
    except ValidationError as e:
        raise within(e, f"events[{position}].") from None


def copy_rows(db: Connection[Any], rows: Iterable[tuple[Any, ...]]) -> int:
    """COPY already-checked rows ``(created_at, service, level, message, details_json, user_id)``.

    For writers that build rows themselves (the log handler); callers own the transaction.
    """
    check_iterable(rows, "rows", "tuples")
    return _copy_in.copy(db, rows)


def record_landed(db: Connection[Any], *, record_id: str, service: str, first: datetime, last: datetime) -> bool:
    """Whether the event tagged ``details.record_id`` (written between ``first`` and ``last``) is stored."""
    return _record_landed.scalar(
        db,
        record_id=check_text(record_id, "record_id"),
        service=check_text(service, "service", max_chars=MAX_SERVICE_CHARS),
        first=check_time(first, "first"),
        last=check_time(last, "last"),
    )
