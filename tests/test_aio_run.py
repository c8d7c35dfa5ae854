"""Bound queries on async connections: ``aone`` / ``amaybe`` / ``amany`` / ``ascalar`` / ``aexec`` /
``acopy`` follow the sync methods' rules (one runner is generated from the other)."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from datalayer import MultipleRowsFound, NotFound, QueryError, ValidationError, sql
from datalayer.pool import DataLayerPool

pytestmark = pytest.mark.anyio

NOTES_SQL = """\
-- name: create_table :exec
CREATE TABLE anotes (id bigint PRIMARY KEY, title text NOT NULL, body text)

-- name: add :exec
INSERT INTO anotes (id, title, body) VALUES (:id, :'title', :'body')

-- name: get :maybe
SELECT id, title, body FROM anotes WHERE id = :id

-- name: get_one :one
SELECT id, title, body FROM anotes WHERE id = :id

-- name: every :many
SELECT id, title, body FROM anotes ORDER BY id

-- name: count :scalar
SELECT count(*) FROM anotes

-- name: wrong_shape :many
SELECT id, body, title FROM anotes ORDER BY id

-- name: slow :scalar
SELECT pg_sleep(:'seconds'::float8)::text

-- name: load :copy
COPY anotes (id, title) FROM STDIN
"""


@attrs.frozen
class ANote:
    id: int
    title: str
    body: str | None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def notes(tmp_path: Path) -> sql.QueryFile:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "anotes"\n')
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "anotes.sql").write_text(NOTES_SQL)
    return sql.load(tmp_path / "sql" / "anotes.sql")


async def _filled(notes: sql.QueryFile, adb: psycopg.AsyncConnection[Any]) -> None:
    await notes.bind("create_table").aexec(adb)
    add = notes.bind("add")
    assert await add.aexec(adb, id=1, title="first", body=None) == 1
    assert await add.aexec(adb, id=2, title="second", body="text") == 1


async def test_every_cardinality_on_a_pooled_async_connection(notes: sql.QueryFile, adb: Any) -> None:
    await _filled(notes, adb)
    get = notes.bind("get", ANote)
    assert await get.amaybe(adb, id=1) == ANote(1, "first", None)
    assert await get.amaybe(adb, id=9) is None
    assert await notes.bind("get_one", ANote).aone(adb, id=2) == ANote(2, "second", "text")
    with pytest.raises(NotFound, match=r"sql/anotes.sql:\d+ anotes.get_one"):
        await notes.bind("get_one", ANote).aone(adb, id=9)
    assert [n.id for n in await notes.bind("every", ANote).amany(adb)] == [1, 2]
    assert await notes.bind("count", int).ascalar(adb) == 2
    assert await notes.bind("load").acopy(adb, [(3, "c"), (4, "d")]) == 2
    assert await notes.bind("count", int).ascalar(adb) == 4


async def test_a_plain_psycopg_async_connection_works_too(notes: sql.QueryFile, dl_pool: DataLayerPool) -> None:
    async with await psycopg.AsyncConnection.connect(dl_pool.target.conninfo(), autocommit=True) as adb:
        await _filled(notes, adb)
        assert await notes.bind("get", ANote).amaybe(adb, id=2) == ANote(2, "second", "text")


async def test_the_same_rules_as_the_sync_methods(notes: sql.QueryFile, adb: Any, tmp_path: Path) -> None:
    await _filled(notes, adb)
    get = notes.bind("get", ANote)
    with pytest.raises(QueryError, match=r"missing id; extra ident; it takes exactly: id"):
        await get.amaybe(adb, ident=1)
    with pytest.raises(QueryError, match=r"is declared :maybe; call it with \.maybe\(\), not \.many\(\)"):
        await get.amany(adb, id=1)
    with pytest.raises(MultipleRowsFound, match=r"2 rows for sql/two.sql:1 two.two, expected one"):
        await _two_rows(tmp_path, adb)
    with pytest.raises(QueryError, match=r"columns"):
        await notes.bind("wrong_shape", ANote).amany(adb)
    with pytest.raises(QueryError, match=r"COPY has no parameters"):
        await notes.bind("load").acopy(adb, [], id=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError) as bad:
        await notes.bind("add").aexec(adb, id=5, title="nul\x00", body=None)
    assert "title" in bad.value.errors


async def _two_rows(root: Path, adb: Any) -> None:
    (root / "sql" / "two.sql").write_text("-- name: two :one\nSELECT 1 UNION ALL SELECT 2\n")
    await sql.load(root / "sql" / "two.sql").bind("two", int).aone(adb)


async def test_each_kind_of_connection_is_refused_by_the_other_kind(notes: sql.QueryFile, adb: Any,
                                                                    db: psycopg.Connection[Any]) -> None:
    count = notes.bind("count", int)
    with pytest.raises(ValidationError) as e:
        await count.ascalar(db)
    assert "must be a psycopg.AsyncConnection, got DataLayerConnection" in e.value.errors["db"]
    with pytest.raises(ValidationError) as e:
        count.scalar(adb)
    assert "must be a psycopg.Connection, got AsyncDataLayerConnection" in e.value.errors["db"]
    assert "datalayer.aio" in e.value.errors["db"]
    with pytest.raises(ValidationError):
        await count.ascalar(None)  # type: ignore[arg-type]


async def test_strict_records_check_async_results(notes: sql.QueryFile, adb: Any, tmp_path: Path) -> None:
    await _filled(notes, adb)
    (tmp_path / "sql" / "nulls.sql").write_text("-- name: null_title :one\nSELECT 1::bigint AS id, NULL::text AS title,"
                                               " NULL::text AS body\n")
    bound = sql.load(tmp_path / "sql" / "nulls.sql").bind("null_title", ANote)
    previous = sql.strict_records(True)
    try:
        with pytest.raises(QueryError, match=r"strict records: .*title"):
            await bound.aone(adb)
    finally:
        sql.strict_records(previous)


async def test_a_slow_query_leaves_the_event_loop_free(notes: sql.QueryFile, adb: Any) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        await notes.bind("slow", str).ascalar(adb, seconds=0.3)
    finally:
        task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 10 and max(gaps) < 0.1, gaps


async def test_a_read_is_retried_on_a_fresh_connection_after_its_own_died(notes: sql.QueryFile, adl_pool: Any,
                                                                           db: psycopg.Connection[Any]) -> None:
    from datalayer import aio

    async with aio.connection(adl_pool) as adb:
        await _filled(notes, adb)
        pid = adb.info.backend_pid
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await asyncio.sleep(0.1)
        assert await notes.bind("get", ANote).amaybe(adb, id=1) == ANote(1, "first", None)
