"""Frozen attrs records: what query functions return. They hold no connection and do no I/O.

Field order is column order: rows become records positionally (``datalayer check`` verifies that
every query's columns match its record's fields in name, order, type and nullability).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

import attrs

__all__ = [
    "JSON",
    "AnalysisFile",
    "AnalysisWithFiles",
    "CacheEntry",
    "DataAnalysis",
    "DroppedPartition",
    "FileTypeTotal",
    "LevelCount",
    "OffsetPage",
    "Page",
    "StatusCount",
    "SystemLogEntry",
    "TableSize",
    "ToolGeneration",
    "User",
]

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
class DataAnalysis:
    id: int
    user_id: int
    name: str
    analysis_type: str
    parameters: JSON
    status: str  # pending | running | completed | failed
    result: Any  # any JSON value (complete() takes one), None before completion
    error: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen
class AnalysisFile:
    id: int
    analysis_id: int
    filename: str
    file_type: str
    size_bytes: int
    storage_uri: str
    checksum: str | None  # sha256, lower-case hex
    created_at: datetime
    updated_at: datetime


@attrs.frozen
class AnalysisWithFiles:
    """An analysis and its files, read in one round trip."""

    id: int
    user_id: int
    name: str
    analysis_type: str
    parameters: JSON
    status: str
    result: Any  # any JSON value (complete() takes one), None before completion
    error: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    files: list[AnalysisFile]


@attrs.frozen
class FileTypeTotal:
    file_type: str
    file_count: int
    total_bytes: int


@attrs.frozen
class ToolGeneration:
    id: int
    user_id: int
    tool_type: str
    spec: JSON
    status: str  # pending | running | completed | failed
    output: Any  # any JSON value (complete() takes one), None before completion
    error: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen
class SystemLogEntry:
    id: int
    created_at: datetime
    service: str
    level: str  # DEBUG | INFO | WARNING | ERROR | CRITICAL
    message: str
    details: JSON
    user_id: int | None
    updated_at: datetime


@attrs.frozen
class CacheEntry:
    id: int
    key: str
    value: Any
    version: int
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen
class StatusCount:
    status: str
    count: int


@attrs.frozen
class LevelCount:
    level: str
    count: int


@attrs.frozen
class TableSize:
    name: str
    total_bytes: int
    estimated_rows: int


@attrs.frozen
class DroppedPartition:
    partition_name: str
    row_count: int


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
