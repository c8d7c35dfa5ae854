"""The status machine analyses and tool generations share: pending -> running -> completed | failed.

One table of moves (``TRANSITIONS``); each entity binds its own ``transition`` and ``status_of``
queries, which take the same parameters: the row's id (``analysis_id``, ``generation_id``),
``user_id`` (NULL: any owner), ``to_status``, ``from_status``, the jsonb column a completed run sets
(``result``, ``output``) and ``error``. The move is one UPDATE; only when it matches no row is the
status read, to say why.

One source, two APIs: ``_status.py`` is generated from ``_status_async.py`` by tools/async_to_sync.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import attrs
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from datalayer.builtin_schema import STATUSES
from datalayer.errors import IllegalTransition, NotFound
from datalayer.repos._common import (
    MAX_ERROR_CHARS,
    check_id,
    check_present,
    check_text,
    json_value,
    optional_id,
)
from datalayer.sql import BoundQuery

__all__ = ["PATH", "STATUSES", "TRANSITIONS", "StatusMachine"]

R = TypeVar("R")

# The status a move to each target starts from.
TRANSITIONS: Mapping[str, str] = {"running": "pending", "completed": "running", "failed": "running"}
PATH = "pending -> running -> completed | failed"


@attrs.frozen
class StatusMachine(Generic[R]):
    """The moves of one entity's status, through its own two queries."""

    kind: str  # how messages name a row: "analysis", "tool generation"
    id_name: str  # the argument and query parameter naming the row: "analysis_id"
    payload: str  # the jsonb column ``complete`` sets: "result", "output"
    transition: BoundQuery[R]
    status_of: BoundQuery[str]

    async def start(self, db: AsyncConnection[Any], ident: int, *, user_id: int | None) -> R:
        """pending -> running (sets started_at)."""
        return await self._move(db, ident, "running", user_id)

    async def complete(self, db: AsyncConnection[Any], ident: int, payload: object, *, user_id: int | None) -> R:
        """running -> completed with ``payload`` (any JSON value but None) and completed_at."""
        value = check_present(payload, self.payload, "must be a JSON value (use fail() for a run that produced none)")
        return await self._move(
            db, ident, "completed", user_id, payload=json_value(value, self.payload, require_object=False)
        )

    async def fail(self, db: AsyncConnection[Any], ident: int, error: str, *, user_id: int | None) -> R:
        """running -> failed with ``error`` and completed_at."""
        return await self._move(
            db, ident, "failed", user_id, error=check_text(error, "error", max_chars=MAX_ERROR_CHARS)
        )

    async def _move(
        self,
        db: AsyncConnection[Any],
        ident: int,
        target: str,
        user_id: int | None,
        *,
        payload: Jsonb | None = None,
        error: str | None = None,
    ) -> R:
        key = {self.id_name: check_id(ident, self.id_name), "user_id": optional_id(user_id, "user_id")}
        moved = await self.transition.amaybe(
            db,
            **key,
            to_status=target,
            from_status=TRANSITIONS[target],
            **{self.payload: payload},
            error=error,
        )
        if moved is None:
            raise self._refused(key[self.id_name], target, await self.status_of.amaybe(db, **key))
        return moved

    def _refused(self, ident: object, target: str, current: str | None) -> Exception:
        # The move matched no row: the row is missing (or not the caller's), or in another status.
        if current is None:
            return NotFound(f"{self.kind} {ident} does not exist (or belongs to another user)")
        return IllegalTransition(
            f"{self.kind} {ident} is {current}; it can move to {target} only from {TRANSITIONS[target]} ({PATH})",
            current=current,
            target=target,
        )
