"""Listings of the repositories: one helper per kind of page (keyset by time, keyset by id, numbered).

One source, two APIs: ``_pages.py`` is generated from ``_pages_async.py`` by tools/async_to_sync.py.
The cursors themselves, and the page a fetch makes, are I/O-free and live in ``_cursors``.

The helpers pass the listing's filters through to the query as they are (``**params``): the bound
query refuses a parameter it does not use, or one it misses, at run time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, TypeVar

from psycopg import AsyncConnection

from datalayer.records import OffsetPage, Page
from datalayer.repos._common import check_limit, page_args
from datalayer.repos._cursors import MAX_CURSOR_CHARS, decode_cursor, encode_cursor, keyset_page
from datalayer.sql import BoundQuery

__all__ = ["MAX_CURSOR_CHARS", "by_id", "by_time", "decode_cursor", "encode_cursor", "numbered"]

T = TypeVar("T")
R = TypeVar("R", bound="_Timed")


class _Identified(Protocol):
    @property
    def id(self) -> int: ...


class _Timed(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...


K = TypeVar("K", bound=_Identified)


async def by_time(
    db: AsyncConnection[Any], query: BoundQuery[R], listing: str, *, limit: object, after: object, **params: Any
) -> Page[R]:
    """A keyset page of ``query`` in (created_at, id) order, newest first unless the query says otherwise.

    The query takes ``params`` plus ``after_created``, ``after_id`` and ``fetch``.
    """
    fetch = check_limit(limit)
    created, ident = (None, None) if after is None else decode_cursor(listing, after, (datetime, int))
    rows = await query.amany(db, **params, after_created=created, after_id=ident, fetch=fetch + 1)
    return keyset_page(rows, fetch, listing, lambda r: (r.created_at, r.id))


async def by_id(
    db: AsyncConnection[Any], query: BoundQuery[K], listing: str, *, limit: object, after: object, **params: Any
) -> Page[K]:
    """A keyset page of ``query`` in id order; the query takes ``params`` plus ``after_id`` and ``fetch``."""
    fetch = check_limit(limit)
    ident = None if after is None else decode_cursor(listing, after, (int,))[0]
    rows = await query.amany(db, **params, after_id=ident, fetch=fetch + 1)
    return keyset_page(rows, fetch, listing, lambda r: (r.id,))


async def numbered(
    db: AsyncConnection[Any],
    query: BoundQuery[T],
    count: BoundQuery[int],
    *,
    page: object,
    per_page: object,
    **params: Any,
) -> OffsetPage[T]:
    """A numbered page of ``query`` (which takes ``params`` plus ``per_page`` and ``offset``) with the
    total ``count`` gives for the same ``params``."""
    number, per, offset = page_args(page, per_page)
    items = await query.amany(db, **params, per_page=per, offset=offset)
    return OffsetPage(items=items, page=number, per_page=per, total=await count.ascalar(db, **params))
