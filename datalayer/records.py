"""Frozen attrs records: what query functions return. They hold no connection and do no I/O.

Field order is column order: rows become records positionally (``datalayer check`` verifies that
every query's columns match its record's fields in name, order, type and nullability).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

import attrs

__all__ = ["JSON", "OffsetPage", "Page", "User"]

T = TypeVar("T")

JSON = dict[str, Any]


@attrs.frozen
class User:
    id: int
    username: str
    email: str
    hashed_password: str = attrs.field(repr=False)
    is_active: bool
    created_at: datetime
    updated_at: datetime


@attrs.frozen
class Page(Generic[T]):
    """One page of a keyset listing; pass ``next_cursor`` as ``after=`` for the next one."""

    items: list[T]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


@attrs.frozen
class OffsetPage(Generic[T]):
    """One numbered page with the total, for UIs that show page numbers."""

    items: list[T]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max((self.total + self.per_page - 1) // self.per_page, 1)
