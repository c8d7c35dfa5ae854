"""Data analyses: CRUD, owner-scoped access, listings, status moves, and an analysis with its files.

Every write takes ``user_id``: with it, only that user's analysis is changed (None: any owner).

>>> a = data_analysis_repo.create(db, user_id=u.id, name="churn", analysis_type="cohort",   # doctest: +SKIP
...                               parameters={"window": 30})
>>> data_analysis_repo.start(db, a.id, user_id=u.id)                                     # doctest: +SKIP
>>> data_analysis_repo.complete(db, a.id, result={"rows": 1200})                          # doctest: +SKIP

One source, two APIs: ``analyses_async.py`` is ``datalayer.aio.data_analysis_repo`` (awaited);
``analyses.py``, generated from it by tools/async_to_sync.py, is ``datalayer.data_analysis_repo``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict, Unpack

from psycopg import AsyncConnection

from datalayer import sql
from datalayer.project import builtin_sql_dir
from datalayer.records import AnalysisWithFiles, DataAnalysis, OffsetPage, Page
from datalayer.repos import _pages_async
from datalayer.repos._common import (
    check_analysis_name,
    check_changes,
    check_id,
    check_ids,
    check_order,
    check_type,
    json_value,
    optional_id,
    optional_json,
    optional_status,
    optional_text,
    optional_time,
    optional_type,
)
from datalayer.repos._status_async import StatusMachine

__all__ = [
    "AnalysisChanges",
    "complete",
    "count",
    "create",
    "delete",
    "fail",
    "find",
    "find_page",
    "get_by_id",
    "get_for_user",
    "get_many",
    "get_with_files",
    "start",
    "update",
]

_q = sql.load(builtin_sql_dir() / "analyses.sql")
_create = _q.bind("create", DataAnalysis)
_get_by_id = _q.bind("get_by_id", DataAnalysis)
_get_for_user = _q.bind("get_for_user", DataAnalysis)
_get_many = _q.bind("get_many", DataAnalysis)
_with_files = _q.bind("with_files", AnalysisWithFiles)
_update = _q.bind("update", DataAnalysis)
_delete = _q.bind("delete")
_find_for_user = _q.bind("find_for_user", DataAnalysis)
_find_for_user_oldest = _q.bind("find_for_user_oldest", DataAnalysis)
_find = _q.bind("find", DataAnalysis)
_find_oldest = _q.bind("find_oldest", DataAnalysis)
_find_page = _q.bind("find_page", DataAnalysis)
_count = _q.bind("count", int)
_status = StatusMachine(
    kind="analysis",
    id_name="analysis_id",
    payload="result",
    transition=_q.bind("transition", DataAnalysis),
    status_of=_q.bind("status_of", str),
)


class AnalysisChanges(TypedDict, total=False):
    """The columns ``update`` may change (status moves go through start/complete/fail)."""

    name: str
    analysis_type: str
    parameters: dict[str, Any]


async def create(
    db: AsyncConnection[Any], *, user_id: int, name: str, analysis_type: str, parameters: dict[str, Any] | None = None
) -> DataAnalysis:
    """A new pending analysis for ``user_id``; IntegrityConflict (field user_id) if the user does not exist.

    Takes exactly what ``validate_analysis_data`` returns as ``data`` (the same checks run in both).
    """
    return await _create.aone(
        db,
        user_id=check_id(user_id, "user_id"),
        name=check_analysis_name(name),
        analysis_type=check_type(analysis_type, "analysis_type"),
        parameters=json_value({} if parameters is None else parameters, "parameters"),
    )


async def get_by_id(db: AsyncConnection[Any], analysis_id: int) -> DataAnalysis | None:
    """One analysis by id, or None."""
    return await _get_by_id.amaybe(db, analysis_id=check_id(analysis_id, "analysis_id"))


async def get_for_user(db: AsyncConnection[Any], user_id: int, analysis_id: int) -> DataAnalysis | None:
    """The analysis if it belongs to ``user_id``; None for someone else's (or a missing) analysis."""
    return await _get_for_user.amaybe(
        db, user_id=check_id(user_id, "user_id"), analysis_id=check_id(analysis_id, "analysis_id")
    )


async def get_many(db: AsyncConnection[Any], ids: Sequence[int]) -> list[DataAnalysis]:
    """The analyses among ``ids`` in id order; an empty list gives []."""
    checked = check_ids(ids)
    return await _get_many.amany(db, ids=checked) if checked else []


async def get_with_files(
    db: AsyncConnection[Any], analysis_id: int, *, user_id: int | None = None
) -> AnalysisWithFiles | None:
    """The analysis and its files in one round trip; with ``user_id``, only if it is theirs."""
    return await _with_files.amaybe(
        db, analysis_id=check_id(analysis_id, "analysis_id"), user_id=optional_id(user_id, "user_id")
    )


async def update(
    db: AsyncConnection[Any], analysis_id: int, *, user_id: int | None = None, **changes: Unpack[AnalysisChanges]
) -> DataAnalysis | None:
    """Change name, analysis_type and/or parameters; None when not found (or, with ``user_id``, not theirs)."""
    check_changes(changes, AnalysisChanges.__annotations__)
    name = changes.get("name")
    return await _update.amaybe(
        db,
        analysis_id=check_id(analysis_id, "analysis_id"),
        user_id=optional_id(user_id, "user_id"),
        name=None if name is None else check_analysis_name(name),
        analysis_type=optional_type(changes.get("analysis_type"), "analysis_type"),
        parameters=optional_json(changes.get("parameters"), "parameters"),
    )


async def start(db: AsyncConnection[Any], analysis_id: int, *, user_id: int | None = None) -> DataAnalysis:
    """pending -> running (sets started_at); IllegalTransition from any other status, NotFound if missing."""
    return await _status.start(db, analysis_id, user_id=user_id)


async def complete(
    db: AsyncConnection[Any], analysis_id: int, *, result: object, user_id: int | None = None
) -> DataAnalysis:
    """running -> completed with ``result`` (any JSON value) and completed_at, in one statement."""
    return await _status.complete(db, analysis_id, result, user_id=user_id)


async def fail(db: AsyncConnection[Any], analysis_id: int, *, error: str, user_id: int | None = None) -> DataAnalysis:
    """running -> failed with ``error`` and completed_at, in one statement."""
    return await _status.fail(db, analysis_id, error, user_id=user_id)


async def delete(db: AsyncConnection[Any], analysis_id: int, *, user_id: int | None = None) -> bool:
    """Delete an analysis and its files; False when not found (or, with ``user_id``, not theirs)."""
    ident = check_id(analysis_id, "analysis_id")
    return await _delete.aexec(db, analysis_id=ident, user_id=optional_id(user_id, "user_id")) > 0


async def find(
    db: AsyncConnection[Any],
    *,
    user_id: int | None = None,
    status: str | None = None,
    analysis_type: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    name_prefix: str | None = None,
    order: str = "newest",
    limit: int = 50,
    after: str | None = None,
) -> Page[DataAnalysis]:
    """A keyset page of analyses (one user's with ``user_id``), newest or oldest first, filtered.

    ``created_after`` is inclusive, ``created_before`` exclusive; ``name_prefix`` matches the start
    of the name literally. Pass ``page.next_cursor`` as ``after`` for the next page.
    """
    newest = check_order(order) == "newest"
    filters: dict[str, Any] = {
        "status": optional_status(status),
        "analysis_type": optional_text(analysis_type, "analysis_type"),
        "created_after": optional_time(created_after, "created_after"),
        "created_before": optional_time(created_before, "created_before"),
        "name_prefix": optional_text(name_prefix, "name_prefix"),
    }
    # One query per order and scope: each is served by its own index (see sql/analyses.sql).
    if user_id is None:
        query = _find if newest else _find_oldest
    else:
        query = _find_for_user if newest else _find_for_user_oldest
        filters["user_id"] = check_id(user_id, "user_id")
    listing = f"analyses.{'all' if user_id is None else 'user'}.{order}"
    return await _pages_async.by_time(db, query, listing, limit=limit, after=after, **filters)


async def find_page(
    db: AsyncConnection[Any],
    *,
    user_id: int | None = None,
    status: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> OffsetPage[DataAnalysis]:
    """A numbered page, newest first, with the total (for UIs with page numbers)."""
    return await _pages_async.numbered(
        db,
        _find_page,
        _count,
        page=page,
        per_page=per_page,
        user_id=optional_id(user_id, "user_id"),
        status=optional_status(status),
    )


async def count(db: AsyncConnection[Any], *, user_id: int | None = None, status: str | None = None) -> int:
    """How many analyses (of one user, in one status)."""
    return await _count.ascalar(db, user_id=optional_id(user_id, "user_id"), status=optional_status(status))
