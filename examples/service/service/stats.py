"""The signed-in user's stats: the service's own query (sql/stats.sql), bound once, awaited per call."""

from __future__ import annotations

from pathlib import Path

import attrs

from datalayer import sql
from datalayer.aio import AsyncConnection

__all__ = ["UserStats", "user_stats"]


@attrs.frozen
class UserStats:
    """What /stats returns; cached as this record (a change of fields bumps ``__cache_version__``)."""

    __cache_version__ = 1

    analyses: int
    pending: int
    running: int
    completed: int
    failed: int
    files: int
    total_bytes: int


# Relative to this file, never to the working directory: uvicorn may be started from anywhere.
_q = sql.load(Path(__file__).resolve().parent.parent / "sql" / "stats.sql")
_user_stats = _q.bind("user_stats", UserStats)


async def user_stats(db: AsyncConnection, user_id: int) -> UserStats:
    """Counts of ``user_id``'s analyses by status and of their files (one round trip)."""
    return await _user_stats.aone(db, user_id=user_id)
