"""system_log partition upkeep: create day partitions ahead of time, list them.

Each day is created in its own short transaction through ``datalayer_ensure_log_partition`` (a
SECURITY DEFINER function, so an application role without DDL rights can call it).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import attrs
import psycopg

from datalayer._run import bind
from datalayer._sql import load_queries
from datalayer.errors import ValidationError
from datalayer.transactions import transaction

__all__ = ["LogPartition", "ensure_log_partitions", "list_log_partitions", "partition_days"]

MAX_AHEAD = 366


@attrs.frozen
class LogPartition:
    name: str
    day: date | None  # None for the default partition
    estimated_rows: int
    total_bytes: int


_q = load_queries("maintenance")
_ensure = bind(_q, "ensure_log_partition", bool)
_list = bind(_q, "log_partitions", LogPartition)


def partition_days(ahead: int, *, today: date | None = None) -> list[date]:
    """The UTC days from today to ``ahead`` days ahead."""
    start = today or datetime.now(UTC).date()
    return [start + timedelta(days=i) for i in range(ahead + 1)]


def ensure_log_partitions(db: psycopg.Connection[Any], *, ahead: int = 7) -> list[str]:
    """Create the missing day partitions from today (UTC) to ``ahead`` days ahead; returns their names.

    Rows already waiting in the default partition for those days move into them.
    """
    if type(ahead) is not int or not 0 <= ahead <= MAX_AHEAD:
        raise ValidationError({"ahead": f"must be an integer between 0 and {MAX_AHEAD}"})
    created = []
    for day in partition_days(ahead):
        with transaction(db):
            if _ensure.scalar(db, day=day):
                created.append(f"system_log_p{day:%Y%m%d}")
    return created


def list_log_partitions(db: psycopg.Connection[Any]) -> list[LogPartition]:
    """Every partition of system_log (the default one last), with size estimates."""
    return _list.many(db)
