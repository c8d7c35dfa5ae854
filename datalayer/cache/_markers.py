"""What a layer returns when it could not answer, shared by the sync and the async cache."""

from __future__ import annotations

from typing import Any

__all__ = ["MISSING", "SKIPPED"]


class _Skipped:
    def __repr__(self) -> str:
        return "SKIPPED"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


# Redis was not asked (the breaker is open) or did not answer.
SKIPPED: Any = _Skipped()
# The cache_entries table is off, or the database failed.
MISSING: Any = _Missing()
