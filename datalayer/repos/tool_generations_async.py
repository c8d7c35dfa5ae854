"""Tool generations: CRUD, owner-scoped access, listings by status and tool type, status moves.

Every write takes ``user_id``: with it, only that user's generation is changed (None: any owner).

One source, two APIs: ``tool_generations_async.py`` is ``datalayer.aio.tool_generation_repo`` (awaited);
``tool_generations.py``, generated from it by tools/async_to_sync.py, is
``datalayer.tool_generation_repo``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict, Unpack

from psycopg import AsyncConnection

from datalayer import sql
from datalayer.project import builtin_sql_dir
from datalayer.records import OffsetPage, Page, ToolGeneration
from datalayer.repos import _pages_async
from datalayer.repos._common import (
    check_changes,
    check_id,
    check_ids,
    check_type,
    json_value,
    optional_id,
    optional_json,
    optional_status,
    optional_time,
    optional_type,
)
from datalayer.repos._status_async import StatusMachine

__all__ = [
    "GenerationChanges",
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
    "start",
    "update",
]

_q = sql.load(builtin_sql_dir() / "tool_generations.sql")
_create = _q.bind("create", ToolGeneration)
_get_by_id = _q.bind("get_by_id", ToolGeneration)
_get_for_user = _q.bind("get_for_user", ToolGeneration)
_get_many = _q.bind("get_many", ToolGeneration)
_update = _q.bind("update", ToolGeneration)
_delete = _q.bind("delete")
_find_for_user = _q.bind("find_for_user", ToolGeneration)
_find = _q.bind("find", ToolGeneration)
_find_page = _q.bind("find_page", ToolGeneration)
_count = _q.bind("count", int)
_status = StatusMachine(
    kind="tool generation",
    id_name="generation_id",
    payload="output",
    transition=_q.bind("transition", ToolGeneration),
    status_of=_q.bind("status_of", str),
)


class GenerationChanges(TypedDict, total=False):
    """The columns ``update`` may change (status moves go through start/complete/fail)."""

    tool_type: str
    spec: dict[str, Any]


async def create(
    db: AsyncConnection[Any], *, user_id: int, tool_type: str, spec: dict[str, Any] | None = None
) -> ToolGeneration:
    """A new pending generation; IntegrityConflict (field user_id) if the user does not exist."""
    return await _create.aone(
        db,
        user_id=check_id(user_id, "user_id"),
        tool_type=check_type(tool_type, "tool_type"),
        spec=json_value({} if spec is None else spec, "spec"),
    )


async def get_by_id(db: AsyncConnection[Any], generation_id: int) -> ToolGeneration | None:
    """One generation by id, or None."""
    return await _get_by_id.amaybe(db, generation_id=check_id(generation_id, "generation_id"))


async def get_for_user(db: AsyncConnection[Any], user_id: int, generation_id: int) -> ToolGeneration | None:
    """The generation if it belongs to ``user_id``, else None."""
    return await _get_for_user.amaybe(
        db, user_id=check_id(user_id, "user_id"), generation_id=check_id(generation_id, "generation_id")
    )


async def get_many(db: AsyncConnection[Any], ids: Sequence[int]) -> list[ToolGeneration]:
    """The generations among ``ids`` in id order; an empty list gives []."""
    checked = check_ids(ids)
    return await _get_many.amany(db, ids=checked) if checked else []


async def update(
    db: AsyncConnection[Any], generation_id: int, *, user_id: int | None = None, **changes: Unpack[GenerationChanges]
) -> ToolGeneration | None:
    """Change tool_type and/or spec; None when not found (or, with ``user_id``, not theirs)."""
    check_changes(changes, GenerationChanges.__annotations__)
    return await _update.amaybe(
        db,
        generation_id=check_id(generation_id, "generation_id"),
        user_id=optional_id(user_id, "user_id"),
        tool_type=optional_type(changes.get("tool_type"), "tool_type"),
        spec=optional_json(changes.get("spec"), "spec"),
    )


async def start(db: AsyncConnection[Any], generation_id: int, *, user_id: int | None = None) -> ToolGeneration:
    """pending -> running (sets started_at); IllegalTransition from any other status, NotFound if missing."""
    return await _status.start(db, generation_id, user_id=user_id)


async def complete(
    db: AsyncConnection[Any], generation_id: int, *, output: object, user_id: int | None = None
) -> ToolGeneration:
    """running -> completed with ``output`` (any JSON value) and completed_at."""
    return await _status.complete(db, generation_id, output, user_id=user_id)


async def fail(
    db: AsyncConnection[Any], generation_id: int, *, error: str, user_id: int | None = None
) -> ToolGeneration:
    """running -> failed with ``error`` and completed_at."""
    return await _status.fail(db, generation_id, error, user_id=user_id)


async def delete(db: AsyncConnection[Any], generation_id: int, *, user_id: int | None = None) -> bool:
    """Delete a generation; False when not found (or, with ``user_id``, not theirs)."""
    ident = check_id(generation_id, "generation_id")
    return await _delete.aexec(db, generation_id=ident, user_id=optional_id(user_id, "user_id")) > 0


async def find(
    db: AsyncConnection[Any],
    *,
    user_id: int | None = None,
    status: str | None = None,
    tool_type: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = 50,
    after: str | None = None,
) -> Page[ToolGeneration]:
    """A keyset page of generations (one user's with ``user_id``), newest first, by status and/or type."""
    filters: dict[str, Any] = {
        "status": optional_status(status),
        "tool_type": optional_type(tool_type, "tool_type"),
        "created_after": optional_time(created_after, "created_after"),
        "created_before": optional_time(created_before, "created_before"),
    }
    query = _find  # one query per scope: each is served by its own index (see sql/tool_generations.sql)
    if user_id is not None:
        query, filters["user_id"] = _find_for_user, check_id(user_id, "user_id")
    listing = f"tool_generations.{'all' if user_id is None else 'user'}"
    return await _pages_async.by_time(db, query, listing, limit=limit, after=after, **filters)


async def find_page(
    db: AsyncConnection[Any],
    *,
    user_id: int | None = None,
    status: str | None = None,
    tool_type: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> OffsetPage[ToolGeneration]:
    """A numbered page, newest first, with the total."""
    return await _pages_async.numbered(
        db, _find_page, _count, page=page, per_page=per_page, **_counted(user_id, status, tool_type)
    )


async def count(
    db: AsyncConnection[Any], *, user_id: int | None = None, status: str | None = None, tool_type: str | None = None
) -> int:
    """How many generations (of one user, status, tool type)."""
    return await _count.ascalar(db, **_counted(user_id, status, tool_type))


def _counted(user_id: object, status: object, tool_type: object) -> dict[str, Any]:
    return {
        "user_id": optional_id(user_id, "user_id"),
        "status": optional_status(status),
        "tool_type": optional_type(tool_type, "tool_type"),
    }
