"""Typed functions over sql/notes.sql."""

from collections.abc import Sequence
from pathlib import Path

from datalayer import Connection, ValidationError, sql
from notes.records import Note

# Relative to this file, never to the working directory: cron jobs and containers run elsewhere.
_q = sql.load(Path(__file__).resolve().parent.parent / "sql" / "notes.sql")
_create = _q.bind("create", Note)
_get = _q.bind("get", Note)
_find = _q.bind("find", Note)
_count = _q.bind("count", int)
_delete = _q.bind("delete")

MAX_PAGE = 100


def create(db: Connection, *, title: str, body: str = "", tags: Sequence[str] = ()) -> Note:
    """A new note; the caller's transaction (if any) decides when it is committed."""
    if not 1 <= len(title) <= 200:
        raise ValidationError({"title": "must be 1 to 200 characters"})
    return _create.one(db, title=title, body=body, tags=list(tags))


def get(db: Connection, note_id: int) -> Note | None:
    """One note, or None."""
    return _get.maybe(db, note_id=note_id)


def find(db: Connection, *, limit: int = 20, after_id: int | None = None) -> list[Note]:
    """A page of notes, newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError({"limit": f"must be 1 to {MAX_PAGE}"})
    return _find.many(db, limit=limit, after_id=after_id)


def count(db: Connection) -> int:
    """How many notes there are."""
    return _count.scalar(db)


def delete(db: Connection, note_id: int) -> bool:
    """Delete a note; False when there was none."""
    return _delete.exec(db, note_id=note_id) == 1
