"""The public SQL toolkit's types reach the caller: mypy --strict proves each result type here.

Checked by tests/test_sql_public.py (``assert_type`` fails the type check on any other type) and run
there against a real database.
"""

from __future__ import annotations

from pathlib import Path
from typing import assert_type

import attrs

from datalayer import sql
from datalayer.pool import DataLayerConnection


@attrs.frozen
class Note:
    id: int
    title: str


notes = sql.load(Path(__file__).parent / "sql" / "notes.sql")
get = notes.bind("get", Note)
get_one = notes.bind("get_one", Note)
every = notes.bind("every", Note)
count = notes.bind("count", int)
maybe_count = notes.bind("count", int, nullable=True)
rename = notes.bind("rename")
load = notes.bind("load")

assert_type(get, sql.BoundQuery[Note])
assert_type(rename, sql.BoundQuery[None])
assert_type(maybe_count, sql.BoundQuery[int | None])


def run(db: DataLayerConnection) -> tuple[Note | None, Note, list[Note], int, int, int]:
    """Every cardinality, typed."""
    db.execute("CREATE TABLE notes (id bigint PRIMARY KEY, title text NOT NULL)")
    sent = load.copy(db, [(1, "one"), (2, "two")])
    assert_type(sent, int)
    changed = rename.exec(db, note_id=1, title="first")
    assert_type(changed, int)
    maybe = get.maybe(db, note_id=1)
    assert_type(maybe, Note | None)
    one = get_one.one(db, note_id=2)
    assert_type(one, Note)
    many = every.many(db)
    assert_type(many, list[Note])
    total = count.scalar(db)
    assert_type(total, int)
    return maybe, one, many, total, changed, sent
