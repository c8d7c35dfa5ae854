"""System events: ``log_system_event``, and ``SystemLogHandler``, a logging handler writing to system_log.

>>> log_system_event(db, service="billing", level="ERROR", message="charge failed",   # doctest: +SKIP
...                  details={"invoice": 42})

>>> handler = SystemLogHandler(service="billing")                                       # doctest: +SKIP
>>> logging.getLogger().addHandler(handler)

Written once, in ``events_async.py`` (``datalayer.aio``: ``await log_system_event(db, ...)`` on a
``psycopg.AsyncConnection``); ``events.py`` is generated from it by tools/async_to_sync.py.

The handler never blocks the code that logs, a thread or an event loop: ``emit`` puts the record in a
bounded buffer and a background thread writes (see ``datalayer._log_handler``); one handler serves
both APIs.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from datalayer._log_handler import SystemLogHandler
from datalayer._log_record import event_level
from datalayer.records import SystemLogEntry
from datalayer.repos import system_log_async as system_log_repo

__all__ = ["SystemLogHandler", "log_system_event"]


async def log_system_event(
    db: AsyncConnection[Any],
    *,
    service: str,
    level: str,
    message: str,
    details: dict[str, Any] | None = None,
    user_id: int | None = None,
) -> SystemLogEntry:
    """Write one event to system_log now and return it (``level`` is case-insensitive; WARN means WARNING).

    Bad input (a lone surrogate or NUL in any text, an unknown level ...) is a ValidationError naming
    the field; nothing is written.
    """
    return await system_log_repo.create(
        db, service=service, level=event_level(level), message=message, details=details, user_id=user_id
    )
