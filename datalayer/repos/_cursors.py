"""Opaque keyset cursors of the repositories' listings, and the page a fetch of ``limit + 1`` rows makes.

A cursor is the sort key of the last row of a page, tagged with the listing it belongs to and
base64url-encoded. Decoding checks the tag and every value's type, so a cursor that was tampered
with, truncated, or made for another listing is a ValidationError, never a SQL error.

No I/O here: the sync and async page helpers (``_pages`` and its source ``_pages_async``) share it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson

from datalayer.errors import ValidationError
from datalayer.records import Page

__all__ = ["MAX_CURSOR_CHARS", "decode_cursor", "encode_cursor", "keyset_page"]

T = TypeVar("T")
MAX_CURSOR_CHARS = 512
_TYPES: dict[type, str] = {int: "i", str: "s", datetime: "t"}


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


def keyset_page(rows: list[T], limit: int, listing: str, key: Callable[[T], Sequence[Any]]) -> Page[T]:
    """The page of ``rows``: up to ``limit + 1`` rows were fetched, and the extra one says there is more."""
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(items=rows, next_cursor=encode_cursor(listing, key(rows[-1])))
    return Page(items=rows, next_cursor=None)
