"""Data analyses: CRUD, owner-scoped access, listings, status moves, and an analysis with its files.

>>> a = data_analysis_repo.create(db, user_id=u.id, name="churn", analysis_type="cohort",   # doctest: +SKIP
...                               parameters={"window": 30})
>>> data_analysis_repo.start(db, a.id)                                                   # doctest: +SKIP
>>> data_analysis_repo.complete(db, a.id, result={"rows": 1200})                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict, Unpack

from psycopg import Connection

from datalayer._pagination import check_limit, offset_args, offset_page
from datalayer._run import Bound, bind
from datalayer._sql import load_queries
from datalayer.errors import ValidationError
from datalayer.records import AnalysisWithFiles, DataAnalysis, OffsetPage, Page
from datalayer.repos._common import (
    check_analysis_name,
    check_id,
    check_ids,
    check_order,
    check_text,
    check_type,
    json_value,
    optional_id,
    optional_json,
    optional_status,
    optional_text,
    optional_time,
    time_cursor,
    time_page,
    transition_error,
)

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

_q = load_queries("analyses")
_create = bind(_q, "create", DataAnalysis)
_get_by_id = bind(_q, "get_by_id", DataAnalysis)
_get_for_user = bind(_q, "get_for_user", DataAnalysis)
_get_many = bind(_q, "get_many", DataAnalysis)
_with_files = bind(_q, "with_files", AnalysisWithFiles)
_update = bind(_q, "update", DataAnalysis)
_transition = bind(_q, "transition", DataAnalysis)
_status_of = bind(_q, "status_of", str)
_delete: Bound[None] = bind(_q, "delete", None)
_find_for_user = bind(_q, "find_for_user", DataAnalysis)
_find_for_user_oldest = bind(_q, "find_for_user_oldest", DataAnalysis)
_find = bind(_q, "find", DataAnalysis)
_find_oldest = bind(_q, "find_oldest", DataAnalysis)
_find_page = bind(_q, "find_page", DataAnalysis)
_count = bind(_q, "count", int)


class AnalysisChanges(TypedDict, total=False):
    """The columns ``update`` may change (status moves go through start/complete/fail)."""

    name: str
    analysis_type: str
    parameters: dict[str, Any]


def create(
    db: Connection[Any], *, user_id: int, name: str, analysis_type: str, parameters: dict[str, Any] | None = None
) -> DataAnalysis:
    """A new pending analysis for ``user_id``; IntegrityConflict (field user_id) if the user does not exist.

    Takes exactly what ``validate_analysis_data`` returns as ``data`` (the same checks run in both).
    """
    return _create.one(
        db,
        user_id=check_id(user_id, "user_id"),
        name=check_analysis_name(name),
        analysis_type=check_type(analysis_type, "analysis_type"),
        parameters=json_value({} if parameters is None else parameters, "parameters"),
    )


def get_by_id(db: Connection[Any], analysis_id: int) -> DataAnalysis | None:
    """One analysis by id, or None."""
    return _get_by_id.maybe(db, analysis_id=check_id(analysis_id, "analysis_id"))


def get_for_user(db: Connection[Any], user_id: int, analysis_id: int) -> DataAnalysis | None:
    """The analysis if it belongs to ``user_id``; None for someone else's (or a missing) analysis."""
    return _get_for_user.maybe(
        db, user_id=check_id(user_id, "user_id"), analysis_id=check_id(analysis_id, "analysis_id")
    )


def get_many(db: Connection[Any], ids: Sequence[int]) -> list[DataAnalysis]:
    """The analyses among ``ids`` in id order; an empty list gives []."""
    checked = check_ids(ids)
    return _get_many.many(db, ids=checked) if checked else []


def get_with_files(db: Connection[Any], analysis_id: int, *, user_id: int | None = None) -> AnalysisWithFiles | None:
    """The analysis and its files in one round trip; with ``user_id``, only if it is theirs."""
    return _with_files.maybe(
        db, analysis_id=check_id(analysis_id, "analysis_id"), owner_id=optional_id(user_id, "user_id")
    )


def update(
    db: Connection[Any], analysis_id: int, *, user_id: int | None = None, **changes: Unpack[AnalysisChanges]
) -> DataAnalysis | None:
    """Change name, analysis_type and/or parameters; None when not found (or, with ``user_id``, not theirs)."""
    unknown = set(changes) - set(AnalysisChanges.__annotations__)
    if unknown:
        raise ValidationError({k: "is not a column update may change" for k in sorted(unknown)})
    name, analysis_type = changes.get("name"), changes.get("analysis_type")
    return _update.maybe(
        db,
        analysis_id=check_id(analysis_id, "analysis_id"),
        owner_id=optional_id(user_id, "user_id"),
        name=None if name is None else check_analysis_name(name),
        analysis_type=None if analysis_type is None else check_type(analysis_type, "analysis_type"),
        parameters=optional_json(changes.get("parameters"), "parameters"),
    )


def _move(
    db: Connection[Any],
    analysis_id: int,
    to_status: str,
    *,
    user_id: int | None,
    result: object = None,
    error: str | None = None,
) -> DataAnalysis:
    ident = check_id(analysis_id, "analysis_id")
    owner = optional_id(user_id, "user_id")
    moved = _transition.maybe(
        db,
        analysis_id=ident,
        owner_id=owner,
        to_status=to_status,
        result=optional_json(result, "result", require_object=False),
        error=optional_text(error, "error", max_chars=10_000),
    )
    if moved is None:
        raise transition_error("analysis", ident, to_status, _status_of.maybe(db, analysis_id=ident, owner_id=owner))
    return moved


def start(db: Connection[Any], analysis_id: int, *, user_id: int | None = None) -> DataAnalysis:
    """pending -> running (sets started_at); IllegalTransition from any other status, NotFound if missing."""
    return _move(db, analysis_id, "running", user_id=user_id)


def complete(db: Connection[Any], analysis_id: int, *, result: object, user_id: int | None = None) -> DataAnalysis:
    """running -> completed with ``result`` (any JSON value) and completed_at, in one statement."""
    if result is None:
        raise ValidationError({"result": "must be a JSON value (use fail() for a run without a result)"})
    return _move(db, analysis_id, "completed", user_id=user_id, result=result)


def fail(db: Connection[Any], analysis_id: int, *, error: str, user_id: int | None = None) -> DataAnalysis:
    """running -> failed with ``error`` and completed_at, in one statement."""
    return _move(db, analysis_id, "failed", user_id=user_id, error=check_text(error, "error", max_chars=10_000))


def delete(db: Connection[Any], analysis_id: int, *, user_id: int | None = None) -> bool:
    """Delete an analysis and its files; False when not found (or, with ``user_id``, not theirs)."""
    deleted = _delete.exec(
        db, analysis_id=check_id(analysis_id, "analysis_id"), owner_id=optional_id(user_id, "user_id")
    )
    return deleted > 0


def find(
    db: Connection[Any],
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
    limit = check_limit(limit)
    order = check_order(order)
    listing = f"analyses.{'user' if user_id is not None else 'all'}.{order}"
    after_created, after_id = time_cursor(listing, after)
    filters = {
        "status": optional_status(status),
        "analysis_type": optional_text(analysis_type, "analysis_type"),
        "created_after": optional_time(created_after, "created_after"),
        "created_before": optional_time(created_before, "created_before"),
        "name_prefix": optional_text(name_prefix, "name_prefix"),
    }
    if user_id is not None:
        scoped = _find_for_user if order == "newest" else _find_for_user_oldest
        rows = scoped.many(
            db,
            user_id=check_id(user_id, "user_id"),
            status=filters["status"],
            analysis_type=filters["analysis_type"],
            created_after=filters["created_after"],
            created_before=filters["created_before"],
            name_prefix=filters["name_prefix"],
            after_created=after_created,
            after_id=after_id,
            fetch=limit + 1,
        )
    else:
        everyone = _find if order == "newest" else _find_oldest
        rows = everyone.many(
            db,
            status=filters["status"],
            analysis_type=filters["analysis_type"],
            created_after=filters["created_after"],
            created_before=filters["created_before"],
            name_prefix=filters["name_prefix"],
            after_created=after_created,
            after_id=after_id,
            fetch=limit + 1,
        )
    return time_page(rows, limit, listing, lambda a: (a.created_at, a.id))


def find_page(
    db: Connection[Any], *, user_id: int | None = None, status: str | None = None, page: int = 1, per_page: int = 50
) -> OffsetPage[DataAnalysis]:
    """A numbered page, newest first, with the total (for UIs with page numbers)."""
    per, offset = offset_args(page, per_page)
    owner, st = optional_id(user_id, "user_id"), optional_status(status)
    items = _find_page.many(db, owner_id=owner, status=st, per_page=per, offset=offset)
    return offset_page(items, page, per, _count.scalar(db, owner_id=owner, status=st))


def count(db: Connection[Any], *, user_id: int | None = None, status: str | None = None) -> int:
    """How many analyses (of one user, in one status)."""
    return _count.scalar(db, owner_id=optional_id(user_id, "user_id"), status=optional_status(status))
