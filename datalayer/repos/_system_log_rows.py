"""What both system_log repositories (``system_log`` and its async source) share: the event record
``bulk_insert`` takes and the checked COPY row it becomes. No I/O here, and one ``LogEvent`` class,
so an event built for one API is accepted by the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from datalayer.repos._common import (
    MAX_SERVICE_CHARS,
    check_known,
    check_level,
    check_log_time,
    check_message,
    check_text,
    json_text,
    optional_id,
    wrong_type,
)

__all__ = ["EVENT_FIELDS", "MAX_RANGE", "LogEvent", "event_row"]

# Listings must be bounded in time so that they prune to the partitions of the range.
MAX_RANGE = timedelta(days=92)
EVENT_FIELDS = ("service", "level", "message", "details", "user_id", "created_at")


@attrs.frozen(kw_only=True)
class LogEvent:
    """One event for ``bulk_insert`` (created_at defaults to now)."""

    service: str
    level: str
    message: str
    details: dict[str, Any] = attrs.field(factory=dict)
    user_id: int | None = None
    created_at: datetime | None = None


def event_row(event: LogEvent | Mapping[str, Any], now: datetime) -> tuple[Any, ...]:
    """The COPY row ``(created_at, service, level, message, details_json, user_id)`` of one checked event."""
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
        check_known(event, EVENT_FIELDS)
        service, level, message = event.get("service"), event.get("level"), event.get("message")
        details, user_id, created_at = event.get("details") or {}, event.get("user_id"), event.get("created_at")
    else:
        raise wrong_type("events", "a list of LogEvent or dict", event)
    return (
        now if created_at is None else check_log_time(created_at, now),
        check_text(service, "service", max_chars=MAX_SERVICE_CHARS),
        check_level(level),
        check_message(message),
        json_text(details, "details"),
        optional_id(user_id, "user_id"),
    )
