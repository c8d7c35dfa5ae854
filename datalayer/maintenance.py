"""Operations: ``get_database_stats``, ``cleanup_old_data``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from datalayer import sql
from datalayer.builtin_schema import LEVELS, STATUSES
from datalayer.errors import ValidationError
from datalayer.partitions import list_log_partitions
from datalayer.project import builtin_sql_dir
from datalayer.records import DroppedPartition, LevelCount, StatusCount, TableSize
from datalayer.registry import Registry, resolve_registry
from datalayer.repos import cache_entries as cache_entry_repo

if TYPE_CHECKING:
    from datalayer.project import Project

__all__ = ["cleanup_old_data", "get_database_stats"]

_stats = sql.load(builtin_sql_dir() / "stats.sql")
_user_count = _stats.bind("user_count", int)
_recent_analyses = _stats.bind("recent_analyses", int)
_analyses_by_status = _stats.bind("analyses_by_status", StatusCount)
_generations_by_status = _stats.bind("tool_generations_by_status", StatusCount)
_logs_by_level = _stats.bind("logs_last_hour_by_level", LevelCount)
_table_sizes = _stats.bind("table_sizes", TableSize)
_maint = sql.load(builtin_sql_dir() / "maintenance.sql")
_drop_partitions = _maint.bind("drop_log_partitions", DroppedPartition)
_delete_old_logs = _maint.bind("delete_old_logs", int)


def get_database_stats(
    db: psycopg.Connection[Any], *, registry: Registry | None = None, project: Project | None = None
) -> dict[str, Any]:
    """Counts and sizes for dashboards.

    Keys: tables ({name: {total_bytes, estimated_rows}} over ``registry``'s tables, by default the
    database's own: ``datalayer.registry.resolve_registry``), generated_at; and for a project with
    the built-in schema (``project`` defaults to ``find_project()``): users, recent_analyses (last
    24 h), analyses_by_status, tool_generations_by_status, log_events_last_hour (by level),
    log_partitions.
    """
    if project is None:
        from datalayer.project import find_project

        project = find_project()
    reg = resolve_registry(db, registry, project=project)
    tables = {
        t.name: {"total_bytes": t.total_bytes, "estimated_rows": t.estimated_rows}
        for t in _table_sizes.many(db, tables=list(reg.names))
    }
    if not project.builtin:
        return {"tables": tables, "generated_at": datetime.now(UTC).isoformat()}
    by_status = {s: 0 for s in STATUSES} | {r.status: r.count for r in _analyses_by_status.many(db)}
    generations = {s: 0 for s in STATUSES} | {r.status: r.count for r in _generations_by_status.many(db)}
    levels = {lv: 0 for lv in LEVELS} | {r.level: r.count for r in _logs_by_level.many(db)}
    return {
        "users": _user_count.scalar(db),
        "recent_analyses": _recent_analyses.scalar(db),
        "analyses_by_status": by_status,
        "tool_generations_by_status": generations,
        "log_events_last_hour": levels,
        "tables": tables,
        "log_partitions": [
            {
                "name": p.name,
                "day": p.day.isoformat() if p.day else None,
                "estimated_rows": p.estimated_rows,
                "total_bytes": p.total_bytes,
            }
            for p in list_log_partitions(db)
        ],
        "generated_at": datetime.now(UTC).isoformat(),
    }


def cleanup_old_data(db: psycopg.Connection[Any], days: int = 30, *, whole_days: bool = False) -> dict[str, Any]:
    """Remove system_log rows older than ``days`` days and expired cache entries.

    Whole day partitions older than the cutoff are detached and dropped (their rows counted first):
    milliseconds and almost no WAL, where DELETE + VACUUM would rewrite every row. Only the boundary day
    (and the default partition) is cleaned with DELETE; ``whole_days=True`` moves the cutoff back to
    the start of its UTC day, so that nothing is deleted row by row (up to a day more is kept).
    Returns ``{"system_logs": n, "partitions_dropped": k, "cache_entries": n, "cutoff": iso}``. Runs
    through SECURITY DEFINER functions, so an application role without DDL rights, and without
    DELETE on the append-only system_log, may call it; they refuse on their own to touch today's
    partition or rows.
    """
    if type(days) is not int or not 1 <= days <= 36_500:
        raise ValidationError({"days": "must be an integer between 1 and 36500 (a cleanup of today is refused)"})
    cutoff = datetime.now(UTC) - timedelta(days=days)
    if whole_days:
        cutoff = cutoff.replace(hour=0, minute=0, second=0, microsecond=0)
    # The function drops at most a bounded number of partitions per call, whoever calls it: on an
    # autocommit connection each batch commits, and its locks on system_log go, before the next.
    dropped: list[DroppedPartition] = []
    while batch := _drop_partitions.many(db, cutoff=cutoff):
        dropped += batch
    boundary = _delete_old_logs.scalar(db, cutoff=cutoff)
    purged = cache_entry_repo.purge_expired(db)
    return {
        "system_logs": sum(d.row_count for d in dropped) + boundary,
        "partitions_dropped": len(dropped),
        "cache_entries": purged,
        "cutoff": cutoff.isoformat(),
    }
