"""system_log: append-only events, time-bounded listings that prune partitions, COPY bulk insert.

>>> system_log_repo.find(db, since=now - timedelta(hours=1), until=now, level="ERROR")   # doctest: +SKIP

Written once, in ``system_log_async.py`` (``datalayer.aio.system_log_repo``: ``await
system_log_repo.create(db, ...)``); ``system_log.py`` (``datalayer.system_log_repo``) is generated
from it by tools/async_to_sync.py. The event record and the checked COPY row are shared
(``_system_log_rows``), not generated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from datalayer import sql
from datalayer.builtin_schema import LEVELS
from datalayer.errors import ValidationError
from datalayer.partitions import keep_ahead
from datalayer.project import builtin_sql_dir
from datalayer.records import LevelCount, Page, SystemLogEntry
from datalayer.repos import _pages_async
from datalayer.repos._common import (
    MAX_MESSAGE_CHARS,
    MAX_SERVICE_CHARS,
    check_aconnection,
    check_id,
    check_iterable,
    check_level,
    check_message,
    check_range,
    check_text,
    check_time,
    json_value,
    optional_id,
    optional_level,
    optional_text,
    within,
)
from datalayer.repos._system_log_rows import MAX_RANGE, LogEvent, event_row

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

_q = sql.load(builtin_sql_dir() / "system_log.sql")
_create = _q.bind("create", SystemLogEntry)
_get_by_id = _q.bind("get_by_id", SystemLogEntry)
_find = _q.bind("find", SystemLogEntry)
_count_by_level = _q.bind("count_by_level", LevelCount)
_copy_in = _q.bind("copy_in")
_record_landed = _q.bind("record_landed", bool)


async def create(
    db: AsyncConnection[Any],
    *,
    service: str,
    level: str,
    message: str,
    details: dict[str, Any] | None = None,
    user_id: int | None = None,
) -> SystemLogEntry:
    """Insert one event and return it."""
    check_aconnection(db)  # before keep_ahead, which would log its own failure on a wrong db
    service = check_text(service, "service", max_chars=MAX_SERVICE_CHARS)
    level = check_level(level)
    message = check_message(message)
    details_value = json_value({} if details is None else details, "details")
    user_id = optional_id(user_id, "user_id")
    # A comparison, unless partitions ahead run short: then a top-up on a connection of its own in a
    # background thread, never on ``db`` (so nothing here waits on it, in either API).
    keep_ahead(db)
    return await _create.aone(db, service=service, level=level, message=message, details=details_value, user_id=user_id)


async def get_by_id(db: AsyncConnection[Any], log_id: int) -> SystemLogEntry | None:
    """One event by id (probes every partition), or None."""
    return await _get_by_id.amaybe(db, log_id=check_id(log_id, "log_id"))


async def find(
    db: AsyncConnection[Any],
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
    return await _pages_async.by_time(
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


async def count_by_level(
    db: AsyncConnection[Any], *, since: datetime, until: datetime, service: str | None = None
) -> list[LevelCount]:
    """How many events of each level in ``[since, until)``."""
    since, until = check_range(since, until, MAX_RANGE)
    return await _count_by_level.amany(
        db, since=since, until=until, service=optional_text(service, "service", max_chars=MAX_SERVICE_CHARS)
    )


async def bulk_insert(db: AsyncConnection[Any], events: Iterable[LogEvent | Mapping[str, Any]]) -> int:
    """Insert many events through COPY; returns how many. All or nothing: a bad event (ValidationError
    naming the field and the event's position) or a failed COPY inserts none of them.
    """
    from datalayer.transactions_async import transaction

    check_aconnection(db)
    check_iterable(events, "events", "LogEvent or dict")
    now = datetime.now(UTC)
    position = 0

    def rows() -> Iterable[tuple[Any, ...]]:
        nonlocal position
        for position, event in enumerate(events):  # noqa: B007 - read by the error handler below
            yield event_row(event, now)

    keep_ahead(db)
    try:
        async with transaction(db):
            return await _copy_in.acopy(db, rows())
    except ValidationError as e:
        raise within(e, f"events[{position}].") from None


async def copy_rows(db: AsyncConnection[Any], rows: Iterable[tuple[Any, ...]]) -> int:
    """COPY already-checked rows ``(created_at, service, level, message, details_json, user_id)``.

    For writers that build rows themselves (the log handler); callers own the transaction.
    """
    check_iterable(rows, "rows", "tuples")
    return await _copy_in.acopy(db, rows)


async def record_landed(
    db: AsyncConnection[Any], *, record_id: str, service: str, first: datetime, last: datetime
) -> bool:
    """Whether the event tagged ``details.record_id`` (written between ``first`` and ``last``) is stored."""
    return await _record_landed.ascalar(
        db,
        record_id=check_text(record_id, "record_id"),
        service=check_text(service, "service", max_chars=MAX_SERVICE_CHARS),
        first=check_time(first, "first"),
        last=check_time(last, "last"),
    )
