"""The two types the cache_entries repository shares between its sync and async forms.

Kept apart from ``cache_entries_async`` (the source ``cache_entries.py`` is generated from) so that
both forms use the same classes: an envelope made for one is a ``Checked`` to the other, and a pending
invalidation read by either is the same record.
"""

from __future__ import annotations

import attrs
from psycopg.types.json import Jsonb

__all__ = ["Checked", "PendingInvalidation"]


@attrs.frozen
class PendingInvalidation:
    """An invalidation the cache recorded because its Redis part may not have happened."""

    id: int
    kind: str
    key: str
    table_done: bool


class Checked:
    """A cache envelope (JSON text) whose value already passed the JSON-column rules: the cache checks
    each value once, on its way in, and stores the same text in Redis and in cache_entries."""

    __slots__ = ("jsonb",)

    def __init__(self, text: bytes) -> None:
        self.jsonb = Jsonb(None, dumps=lambda _obj: text)
