"""Listings of the repositories: opaque keyset cursors, and one helper per kind of page.

A cursor is the sort key of the last row of a page, tagged with the listing it belongs to and
base64url-encoded. Decoding checks the tag and every value's type, so a cursor that was tampered
with, truncated, or made for another listing is a ValidationError, never a SQL error.

The helpers pass the listing's filters through to the query as they are (``**params``): the bound
query refuses a parameter it does not use, or one it misses, at run time.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

import orjson
from psycopg import Connection

from datalayer.errors import ValidationError
from datalayer.records import OffsetPage, Page
from datalayer.repos._common import check_limit, page_args
from datalayer.sql import BoundQuery

__all__ = ["by_id", "by_time", "decode_cursor", "encode_cursor", "numbered"]

T = TypeVar("T")
R = TypeVar("R", bound="_Timed")
MAX_CURSOR_CHARS = 512
_TYPES: dict[type, str] = {int: "i", str: "s", datetime: "t"}


class _Identified(Protocol):
    @property
    def id(self) -> int: ...


class _Timed(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...


K = TypeVar("K", bound=_Identified)


def encode_cursor(listing: str, key: Sequence[int | str | datetime]) -> str:
    """An opaque cursor for the row whose sort key is ``key``."""
    parts: list[Any] = [listing]
    for v in key:
        tag = _TYPES[type(v)]
        parts.append([tag, v.isoformat() if isinstance(v, datetime) else v])
    return base64.urlsafe_b64encode(orjson.dumps(parts)).rstrip(b"=").decode("ascii")


def decode_cursor(listing: str, cursor: object, types: Sequence[type]) -> tuple[Any, ...]:
    """The sort key inside ``cursor``; ValidationError if it is not a cursor of ``listing``."""
    bad = ValidationError({"after": "is not a cursor of this listing; pass the next_cursor of a previous page"})
    if not isinstance(cursor, str) or not 0 < len(cursor) <= MAX_CURSOR_CHARS:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad from None
    if not isinstance(parts, list) or len(parts) != len(types) + 1 or parts[0] != listing:
        raise bad
    out: list[Any] = []
    for tp, part in zip(types, parts[1:], strict=True):
        if not isinstance(part, list) or len(part) != 2 or part[0] != _TYPES[tp]:
            raise bad
        value = part[1]
        try:
            if tp is datetime:
                value = datetime.fromisoformat(value) if isinstance(value, str) else None
                if value is None or value.tzinfo is None:
                    raise bad
            elif tp is int:
                if type(value) is not int or not -(2**63) <= value < 2**63:
                    raise bad
            elif not isinstance(value, tp):
                raise bad
        except ValueError:
            raise bad from None
        out.append(value)
    return tuple(out)


def _keyset_page(rows: list[T], limit: int, listing: str, key: Callable[[T], Sequence[Any]]) -> Page[T]:
    # Up to ``limit + 1`` rows were fetched: the extra one says there is more.
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(items=rows, next_cursor=encode_cursor(listing, key(rows[-1])))
    return Page(items=rows, next_cursor=None)


def by_time(
    db: Connection[Any], query: BoundQuery[R], listing: str, *, limit: object, after: object, **params: Any
) -> Page[R]:
    """A keyset page of ``query`` in (created_at, id) order, newest first unless the query says otherwise.

    The query takes ``params`` plus ``after_created``, ``after_id`` and ``fetch``.
    """
    fetch = check_limit(limit)
    created, ident = (None, None) if after is None else decode_cursor(listing, after, (datetime, int))
    rows = query.many(db, **params, after_created=created, after_id=ident, fetch=fetch + 1)
    return _keyset_page(rows, fetch, listing, lambda r: (r.created_at, r.id))


def by_id(
    db: Connection[Any], query: BoundQuery[K], listing: str, *, limit: object, after: object, **params: Any
) -> Page[K]:
    """A keyset page of ``query`` in id order; the query takes ``params`` plus ``after_id`` and ``fetch``."""
    fetch = check_limit(limit)
    ident = None if after is None else decode_cursor(listing, after, (int,))[0]
    rows = query.many(db, **params, after_id=ident, fetch=fetch + 1)
    return _keyset_page(rows, fetch, listing, lambda r: (r.id,))


def numbered(
    db: Connection[Any], query: BoundQuery[T], count: BoundQuery[int], *, page: object, per_page: object, **params: Any
) -> OffsetPage[T]:
    """A numbered page of ``query`` (which takes ``params`` plus ``per_page`` and ``offset``) with the
    total ``count`` gives for the same ``params``."""
    number, per, offset = page_args(page, per_page)
    items = query.many(db, **params, per_page=per, offset=offset)
    return OffsetPage(items=items, page=number, per_page=per, total=count.scalar(db, **params))
