"""Files of analyses: CRUD, owner-scoped access, per-type totals, listings.

A file belongs to its analysis's user. Every write takes ``user_id``: with it, only a file of that
user's analysis is written (None: any owner).

>>> analysis_file_repo.create(db, analysis_id=a.id, filename="data.csv", file_type="csv",   # doctest: +SKIP
...                           size_bytes=1024, storage_uri="s3://bucket/data.csv", user_id=u.id)

One source, two APIs: ``files_async.py`` is ``datalayer.aio.analysis_file_repo`` (awaited);
``files.py``, generated from it by tools/async_to_sync.py, is ``datalayer.analysis_file_repo``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

from psycopg import AsyncConnection

from datalayer import sql
from datalayer.errors import NotFound
from datalayer.project import builtin_sql_dir
from datalayer.records import AnalysisFile, FileTypeTotal, Page
from datalayer.repos import _pages_async
from datalayer.repos._common import (
    MAX_FILE_TYPE_CHARS,
    MAX_FILENAME_CHARS,
    MAX_URI_CHARS,
    check_changes,
    check_checksum,
    check_id,
    check_ids,
    check_size,
    check_text,
    optional_id,
    optional_text,
)

__all__ = [
    "FileChanges",
    "create",
    "delete",
    "find",
    "get_by_id",
    "get_for_user",
    "get_many",
    "list_for_analysis",
    "totals_by_type",
    "update",
]

_q = sql.load(builtin_sql_dir() / "analysis_files.sql")
_create = _q.bind("create", AnalysisFile)
_get_by_id = _q.bind("get_by_id", AnalysisFile)
_get_for_user = _q.bind("get_for_user", AnalysisFile)
_get_many = _q.bind("get_many", AnalysisFile)
_update = _q.bind("update", AnalysisFile)
_delete = _q.bind("delete")
_list_for_analysis = _q.bind("list_for_analysis", AnalysisFile)
_totals_by_type = _q.bind("totals_by_type", FileTypeTotal)
_find = _q.bind("find", AnalysisFile)

_LISTING = "analysis_files.id"


class FileChanges(TypedDict, total=False):
    """The columns ``update`` may change; ``checksum=None`` clears the checksum."""

    filename: str
    file_type: str
    size_bytes: int
    storage_uri: str
    checksum: str | None


async def create(
    db: AsyncConnection[Any],
    *,
    analysis_id: int,
    filename: str,
    file_type: str,
    size_bytes: int,
    storage_uri: str,
    checksum: str | None = None,
    user_id: int | None = None,
) -> AnalysisFile:
    """Record a file of an analysis; IntegrityConflict (field analysis_id) if the analysis does not exist,
    NotFound when ``user_id`` is given and the analysis is not theirs."""
    ident = check_id(analysis_id, "analysis_id")
    made = await _create.amaybe(
        db,
        analysis_id=ident,
        filename=check_text(filename, "filename", max_chars=MAX_FILENAME_CHARS),
        file_type=check_text(file_type, "file_type", max_chars=MAX_FILE_TYPE_CHARS),
        size_bytes=check_size(size_bytes),
        storage_uri=check_text(storage_uri, "storage_uri", max_chars=MAX_URI_CHARS),
        checksum=check_checksum(checksum),
        user_id=optional_id(user_id, "user_id"),
    )
    if made is None:  # only with user_id: the analysis is someone else's or missing
        raise NotFound(f"analysis {ident} does not exist (or belongs to another user)")
    return made


async def get_by_id(db: AsyncConnection[Any], file_id: int) -> AnalysisFile | None:
    """One file by id, or None."""
    return await _get_by_id.amaybe(db, file_id=check_id(file_id, "file_id"))


async def get_for_user(db: AsyncConnection[Any], user_id: int, file_id: int) -> AnalysisFile | None:
    """The file if its analysis belongs to ``user_id``, else None."""
    return await _get_for_user.amaybe(db, user_id=check_id(user_id, "user_id"), file_id=check_id(file_id, "file_id"))


async def get_many(db: AsyncConnection[Any], ids: Sequence[int]) -> list[AnalysisFile]:
    """The files among ``ids`` in id order; an empty list gives []."""
    checked = check_ids(ids)
    return await _get_many.amany(db, ids=checked) if checked else []


async def update(
    db: AsyncConnection[Any], file_id: int, *, user_id: int | None = None, **changes: Unpack[FileChanges]
) -> AnalysisFile | None:
    """Change some columns; None when there is no such file (or, with ``user_id``, it is not theirs)."""
    check_changes(changes, FileChanges.__annotations__)
    return await _update.amaybe(
        db,
        file_id=check_id(file_id, "file_id"),
        user_id=optional_id(user_id, "user_id"),
        filename=optional_text(changes.get("filename"), "filename", max_chars=MAX_FILENAME_CHARS),
        file_type=optional_text(changes.get("file_type"), "file_type", max_chars=MAX_FILE_TYPE_CHARS),
        size_bytes=check_size(changes["size_bytes"]) if "size_bytes" in changes else None,
        storage_uri=optional_text(changes.get("storage_uri"), "storage_uri", max_chars=MAX_URI_CHARS),
        set_checksum="checksum" in changes,
        checksum=check_checksum(changes.get("checksum")),
    )


async def delete(db: AsyncConnection[Any], file_id: int, *, user_id: int | None = None) -> bool:
    """Delete a file; with ``user_id`` only if its analysis is theirs. False when nothing was deleted."""
    return await _delete.aexec(db, file_id=check_id(file_id, "file_id"), user_id=optional_id(user_id, "user_id")) > 0


async def list_for_analysis(
    db: AsyncConnection[Any], analysis_id: int, *, file_type: str | None = None, user_id: int | None = None
) -> list[AnalysisFile]:
    """The files of an analysis in id order, optionally of one type; with ``user_id``, [] unless theirs."""
    return await _list_for_analysis.amany(
        db,
        analysis_id=check_id(analysis_id, "analysis_id"),
        file_type=optional_text(file_type, "file_type", max_chars=MAX_FILE_TYPE_CHARS),
        user_id=optional_id(user_id, "user_id"),
    )


async def totals_by_type(db: AsyncConnection[Any], analysis_id: int) -> list[FileTypeTotal]:
    """Per file type of an analysis: how many files and their total size in bytes."""
    return await _totals_by_type.amany(db, analysis_id=check_id(analysis_id, "analysis_id"))


async def find(
    db: AsyncConnection[Any],
    *,
    analysis_id: int | None = None,
    file_type: str | None = None,
    filename_prefix: str | None = None,
    limit: int = 50,
    after: str | None = None,
) -> Page[AnalysisFile]:
    """A keyset page of files in id order, optionally of one analysis, type or filename prefix."""
    return await _pages_async.by_id(
        db,
        _find,
        _LISTING,
        limit=limit,
        after=after,
        analysis_id=optional_id(analysis_id, "analysis_id"),
        file_type=optional_text(file_type, "file_type", max_chars=MAX_FILE_TYPE_CHARS),
        filename_prefix=optional_text(filename_prefix, "filename_prefix"),
    )
