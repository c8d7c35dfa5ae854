"""Tool generations: CRUD, owner-scoped access, listings by status and tool type, status moves."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict, Unpack

from psycopg import Connection

from datalayer._pagination import check_limit, offset_args, offset_page
from datalayer._run import Bound, bind
from datalayer._sql import load_queries
from datalayer.errors import ValidationError
from datalayer.records import OffsetPage, Page, ToolGeneration
from datalayer.repos._common import (
    MAX_TYPE_CHARS,
    check_id,
    check_ids,
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

_q = load_queries("tool_generations")
_create = bind(_q, "create", ToolGeneration)
_get_by_id = bind(_q, "get_by_id", ToolGeneration)
_get_for_user = bind(_q, "get_for_user", ToolGeneration)
_get_many = bind(_q, "get_many", ToolGeneration)
_update = bind(_q, "update", ToolGeneration)
_transition = bind(_q, "transition", ToolGeneration)
_status_of = bind(_q, "status_of", str)
_delete: Bound[None] = bind(_q, "delete", None)
_find_for_user = bind(_q, "find_for_user", ToolGeneration)
_find = bind(_q, "find", ToolGeneration)
_find_page = bind(_q, "find_page", ToolGeneration)
_count = bind(_q, "count", int)


class GenerationChanges(TypedDict, total=False):
    """The columns ``update`` may change (status moves go through start/complete/fail)."""

    tool_type: str
    spec: dict[str, Any]


def create(db: Connection[Any], *, user_id: int, tool_type: str, spec: dict[str, Any] | None = None) -> ToolGeneration:
    """A new pending generation; IntegrityConflict (field user_id) if the user does not exist."""
    return _create.one(
        db,
        user_id=check_id(user_id, "user_id"),
        tool_type=check_type(tool_type, "tool_type"),
        spec=json_value({} if spec is None else spec, "spec"),
    )


def get_by_id(db: Connection[Any], generation_id: int) -> ToolGeneration | None:
    """One generation by id, or None."""
    return _get_by_id.maybe(db, generation_id=check_id(generation_id, "generation_id"))


def get_for_user(db: Connection[Any], user_id: int, generation_id: int) -> ToolGeneration | None:
    """The generation if it belongs to ``user_id``, else None."""
    return _get_for_user.maybe(
        db, user_id=check_id(user_id, "user_id"), generation_id=check_id(generation_id, "generation_id")
    )


def get_many(db: Connection[Any], ids: Sequence[int]) -> list[ToolGeneration]:
    """The generations among ``ids`` in id order; an empty list gives []."""
    checked = check_ids(ids)
    return _get_many.many(db, ids=checked) if checked else []


def update(
    db: Connection[Any], generation_id: int, *, user_id: int | None = None, **changes: Unpack[GenerationChanges]
) -> ToolGeneration | None:
    """Change tool_type and/or spec; None when not found (or, with ``user_id``, not theirs)."""
    unknown = set(changes) - set(GenerationChanges.__annotations__)
    if unknown:
        raise ValidationError({k: "is not a column update may change" for k in sorted(unknown)})
    return _update.maybe(
        db,
        generation_id=check_id(generation_id, "generation_id"),
        owner_id=optional_id(user_id, "user_id"),
        tool_type=optional_text(changes.get("tool_type"), "tool_type", max_chars=MAX_TYPE_CHARS),
        spec=optional_json(changes.get("spec"), "spec"),
    )


def _move(
    db: Connection[Any],
    generation_id: int,
    to_status: str,
    *,
    user_id: int | None,
    output: object = None,
    error: str | None = None,
) -> ToolGeneration:
    ident = check_id(generation_id, "generation_id")
    owner = optional_id(user_id, "user_id")
    moved = _transition.maybe(
        db,
        generation_id=ident,
        owner_id=owner,
        to_status=to_status,
        output=optional_json(output, "output", require_object=False),
        error=optional_text(error, "error", max_chars=10_000),
    )
    if moved is None:
        current = _status_of.maybe(db, generation_id=ident, owner_id=owner)
        raise transition_error("tool generation", ident, to_status, current)
    return moved


def start(db: Connection[Any], generation_id: int, *, user_id: int | None = None) -> ToolGeneration:
    """pending -> running (sets started_at)."""
    return _move(db, generation_id, "running", user_id=user_id)


def complete(db: Connection[Any], generation_id: int, *, output: object, user_id: int | None = None) -> ToolGeneration:
    """running -> completed with ``output`` (any JSON value) and completed_at."""
    if output is None:
        raise ValidationError({"output": "must be a JSON value (use fail() for a run without output)"})
    return _move(db, generation_id, "completed", user_id=user_id, output=output)


def fail(db: Connection[Any], generation_id: int, *, error: str, user_id: int | None = None) -> ToolGeneration:
    """running -> failed with ``error`` and completed_at."""
    return _move(db, generation_id, "failed", user_id=user_id, error=check_text(error, "error", max_chars=10_000))


def delete(db: Connection[Any], generation_id: int, *, user_id: int | None = None) -> bool:
    """Delete a generation; False when not found (or, with ``user_id``, not theirs)."""
    ident = check_id(generation_id, "generation_id")
    return _delete.exec(db, generation_id=ident, owner_id=optional_id(user_id, "user_id")) > 0


def find(
    db: Connection[Any],
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
    limit = check_limit(limit)
    listing = f"tool_generations.{'user' if user_id is not None else 'all'}"
    after_created, after_id = time_cursor(listing, after)
    st, tt = optional_status(status), optional_text(tool_type, "tool_type", max_chars=MAX_TYPE_CHARS)
    since, until = optional_time(created_after, "created_after"), optional_time(created_before, "created_before")
    if user_id is not None:
        rows = _find_for_user.many(
            db,
            user_id=check_id(user_id, "user_id"),
            status=st,
            tool_type=tt,
            created_after=since,
            created_before=until,
            after_created=after_created,
            after_id=after_id,
            fetch=limit + 1,
        )
    else:
        rows = _find.many(
            db,
            status=st,
            tool_type=tt,
            created_after=since,
            created_before=until,
            after_created=after_created,
            after_id=after_id,
            fetch=limit + 1,
        )
    return time_page(rows, limit, listing, lambda g: (g.created_at, g.id))


def find_page(
    db: Connection[Any],
    *,
    user_id: int | None = None,
    status: str | None = None,
    tool_type: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> OffsetPage[ToolGeneration]:
    """A numbered page, newest first, with the total."""
    per, offset = offset_args(page, per_page)
    owner, st = optional_id(user_id, "user_id"), optional_status(status)
    tt = optional_text(tool_type, "tool_type", max_chars=MAX_TYPE_CHARS)
    items = _find_page.many(db, owner_id=owner, status=st, tool_type=tt, per_page=per, offset=offset)
    return offset_page(items, page, per, _count.scalar(db, owner_id=owner, status=st, tool_type=tt))


def count(
    db: Connection[Any], *, user_id: int | None = None, status: str | None = None, tool_type: str | None = None
) -> int:
    """How many generations (of one user, status, tool type)."""
    return _count.scalar(
        db,
        owner_id=optional_id(user_id, "user_id"),
        status=optional_status(status),
        tool_type=optional_text(tool_type, "tool_type", max_chars=MAX_TYPE_CHARS),
    )
