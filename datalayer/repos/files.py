"""Files of analyses: CRUD, owner-scoped access, per-type totals, listings.

>>> analysis_file_repo.create(db, analysis_id=a.id, filename="data.csv", file_type="csv",   # doctest: +SKIP
...                           size_bytes=1024, storage_uri="s3://bucket/data.csv")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

from psycopg import Connection

from datalayer._pagination import check_limit, decode_cursor, keyset_page
from datalayer._run import Bound, bind
from datalayer._sql import load_queries
from datalayer.errors import ValidationError
from datalayer.records import AnalysisFile, FileTypeTotal, Page
from datalayer.repos._common import check_id, check_ids, check_text, optional_id, optional_text

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

_q = load_queries("analysis_files")
_create = bind(_q, "create", AnalysisFile)
_get_by_id = bind(_q, "get_by_id", AnalysisFile)
_get_for_user = bind(_q, "get_for_user", AnalysisFile)
_get_many = bind(_q, "get_many", AnalysisFile)
_update = bind(_q, "update", AnalysisFile)
_delete: Bound[None] = bind(_q, "delete", None)
_delete_for_user: Bound[None] = bind(_q, "delete_for_user", None)
_list_for_analysis = bind(_q, "list_for_analysis", AnalysisFile)
_list_for_user_analysis = bind(_q, "list_for_user_analysis", AnalysisFile)
_totals_by_type = bind(_q, "totals_by_type", FileTypeTotal)
_find = bind(_q, "find", AnalysisFile)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_LISTING = "analysis_files.id"


class FileChanges(TypedDict, total=False):
    """The columns ``update`` may change; ``checksum=None`` clears the checksum."""

    filename: str
    file_type: str
    size_bytes: int
    storage_uri: str
    checksum: str | None


def _size(value: object) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise ValidationError({"size_bytes": "must be a non-negative integer"})
    return value


def _checksum(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value.lower()):
        raise ValidationError({"checksum": "must be a sha256 digest: 64 hexadecimal characters"})
    return value.lower()


def create(
    db: Connection[Any],
    *,
    analysis_id: int,
    filename: str,
    file_type: str,
    size_bytes: int,
    storage_uri: str,
    checksum: str | None = None,
) -> AnalysisFile:
    """Record a file of an analysis; IntegrityConflict (field analysis_id) if the analysis does not exist."""
    return _create.one(
        db,
        analysis_id=check_id(analysis_id, "analysis_id"),
        filename=check_text(filename, "filename", max_chars=255),
        file_type=check_text(file_type, "file_type", max_chars=50),
        size_bytes=_size(size_bytes),
        storage_uri=check_text(storage_uri, "storage_uri", max_chars=2048),
        checksum=_checksum(checksum),
    )


def get_by_id(db: Connection[Any], file_id: int) -> AnalysisFile | None:
    """One file by id, or None."""
    return _get_by_id.maybe(db, file_id=check_id(file_id, "file_id"))


def get_for_user(db: Connection[Any], user_id: int, file_id: int) -> AnalysisFile | None:
    """The file if its analysis belongs to ``user_id``, else None."""
    return _get_for_user.maybe(db, user_id=check_id(user_id, "user_id"), file_id=check_id(file_id, "file_id"))


def get_many(db: Connection[Any], ids: Sequence[int]) -> list[AnalysisFile]:
    """The files among ``ids`` in id order; an empty list gives []."""
    checked = check_ids(ids)
    return _get_many.many(db, ids=checked) if checked else []


def update(db: Connection[Any], file_id: int, **changes: Unpack[FileChanges]) -> AnalysisFile | None:
    """Change some columns; None when there is no such file."""
    unknown = set(changes) - set(FileChanges.__annotations__)
    if unknown:
        raise ValidationError({k: "is not a column update may change" for k in sorted(unknown)})
    return _update.maybe(
        db,
        file_id=check_id(file_id, "file_id"),
        filename=optional_text(changes.get("filename"), "filename", max_chars=255),
        file_type=optional_text(changes.get("file_type"), "file_type", max_chars=50),
        size_bytes=_size(changes["size_bytes"]) if "size_bytes" in changes else None,
        storage_uri=optional_text(changes.get("storage_uri"), "storage_uri", max_chars=2048),
        set_checksum="checksum" in changes,
        checksum=_checksum(changes.get("checksum")),
    )


def delete(db: Connection[Any], file_id: int, *, user_id: int | None = None) -> bool:
    """Delete a file; with ``user_id`` only if its analysis is theirs. False when nothing was deleted."""
    ident = check_id(file_id, "file_id")
    if user_id is None:
        return _delete.exec(db, file_id=ident) > 0
    return _delete_for_user.exec(db, file_id=ident, user_id=check_id(user_id, "user_id")) > 0


def list_for_analysis(
    db: Connection[Any], analysis_id: int, *, file_type: str | None = None, user_id: int | None = None
) -> list[AnalysisFile]:
    """The files of an analysis in id order, optionally of one type; with ``user_id``, [] unless theirs."""
    ident = check_id(analysis_id, "analysis_id")
    ftype = optional_text(file_type, "file_type", max_chars=50)
    if user_id is None:
        return _list_for_analysis.many(db, analysis_id=ident, file_type=ftype)
    return _list_for_user_analysis.many(db, analysis_id=ident, file_type=ftype, user_id=check_id(user_id, "user_id"))


def totals_by_type(db: Connection[Any], analysis_id: int) -> list[FileTypeTotal]:
    """Per file type of an analysis: how many files and their total size in bytes."""
    return _totals_by_type.many(db, analysis_id=check_id(analysis_id, "analysis_id"))


def find(
    db: Connection[Any],
    *,
    analysis_id: int | None = None,
    file_type: str | None = None,
    filename_prefix: str | None = None,
    limit: int = 50,
    after: str | None = None,
) -> Page[AnalysisFile]:
    """A keyset page of files in id order, optionally of one analysis, type or filename prefix."""
    limit = check_limit(limit)
    after_id = decode_cursor(_LISTING, after, (int,))[0] if after is not None else None
    rows = _find.many(
        db,
        analysis_id=optional_id(analysis_id, "analysis_id"),
        file_type=optional_text(file_type, "file_type", max_chars=50),
        filename_prefix=optional_text(filename_prefix, "filename_prefix"),
        after_id=after_id,
        fetch=limit + 1,
    )
    return keyset_page(rows, limit, _LISTING, lambda f: (f.id,))
