"""datalayer.tracing: one event per statement a bound query sends (sync and async), per cache lookup and
per breaker change; never a parameter value; a tracer that raises never breaks a query."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from datalayer import IntegrityConflict, NotFound, ValidationError, sql, tracing
from datalayer.cache import CacheManager
from datalayer.config import RedisTarget
from datalayer.pool import DataLayerConnection, DataLayerPool
from datalayer.testing import fresh_cache
from datalayer.tracing import BreakerEvent, CacheEvent, QueryEvent

SECRET = "Zq7-unmistakable-parameter-value"  # must appear in no event

NOTES_SQL = """\
-- name: create_table :exec
CREATE TABLE tnotes (id bigint PRIMARY KEY, title text NOT NULL UNIQUE)

-- name: add :exec
INSERT INTO tnotes (id, title) VALUES (:id, :'title')

-- name: by_title :maybe
SELECT id, title FROM tnotes WHERE title = :'title'

-- name: get_one :one
SELECT id, title FROM tnotes WHERE id = :id

-- name: every :many
SELECT id, title FROM tnotes ORDER BY id

-- name: load :copy
COPY tnotes (id, title) FROM STDIN

-- name: answer :scalar
SELECT 42

-- name: nap :exec
SELECT pg_sleep(:seconds)

-- name: wrapped :many
SELECT id, jsonb_build_object('n', title) AS inner_ FROM tnotes ORDER BY id
"""


@attrs.frozen
class TNote:
    id: int
    title: str


@pytest.fixture
def notes(tmp_path: Path) -> sql.QueryFile:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "tnotes"\n')
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "tnotes.sql").write_text(NOTES_SQL)
    return sql.load(tmp_path / "sql" / "tnotes.sql")


@pytest.fixture
def events() -> Iterator[list[tracing.Event]]:
    seen: list[tracing.Event] = []
    with tracing.tracer(seen.append):
        yield seen


def _queries(events: list[tracing.Event]) -> list[QueryEvent]:
    return [e for e in events if isinstance(e, QueryEvent)]


def _assert_no_values(events: list[Any], *values: str) -> None:
    assert events
    for e in events:
        text = repr(e) + repr(attrs.asdict(e, recurse=True))
        for value in values:
            assert value not in text, e


def _names(events: list[tracing.Event]) -> list[str]:
    return [e.query.name for e in _queries(events)]


def test_an_event_per_statement_with_the_query_and_no_values(
    notes: sql.QueryFile, db: DataLayerConnection, events: list[tracing.Event]
) -> None:
    notes.bind("create_table").exec(db)
    notes.bind("add").exec(db, id=1, title=SECRET)
    assert notes.bind("by_title", TNote).maybe(db, title=SECRET) == TNote(1, SECRET)
    assert notes.bind("every", TNote).many(db) == [TNote(1, SECRET)]
    assert notes.bind("load").copy(db, [(2, f"{SECRET}-copied")]) == 1

    assert _names(events) == ["create_table", "add", "by_title", "every", "load"]
    by_title = _queries(events)[2]
    q = by_title.query
    assert (q.qualname, q.file, q.line, q.cardinality) == ("tnotes.by_title", "sql/tnotes.sql", 7, "maybe")
    assert q.text == "SELECT id, title FROM tnotes WHERE title = :'title'"  # as written: the placeholder
    assert by_title.rowcount == 1 and by_title.error is None and by_title.sqlstate is None
    assert 0 < by_title.duration < 60
    assert abs(by_title.start / 1e9 - time.time()) < 60
    assert by_title.database == db.info.dbname and by_title.port == db.info.port
    assert _queries(events)[1].rowcount == 1  # the INSERT's
    assert _queries(events)[4].rowcount == 1  # rows sent through COPY
    assert "tnotes.by_title sql/tnotes.sql:7" in repr(by_title)
    _assert_no_values(events, SECRET)


def test_a_failure_is_an_event_with_the_error_class_and_sqlstate(
    notes: sql.QueryFile, db: DataLayerConnection, events: list[tracing.Event]
) -> None:
    notes.bind("create_table").exec(db)
    notes.bind("add").exec(db, id=1, title=SECRET)
    with pytest.raises(IntegrityConflict):
        notes.bind("add").exec(db, id=2, title=SECRET)
    with pytest.raises(NotFound):  # the statement ran: NotFound is the caller's contract, not a failure
        notes.bind("get_one", TNote).one(db, id=99)
    with pytest.raises(IntegrityConflict):
        notes.bind("load").copy(db, [(1, "again")])

    add_failed, get_one, copy_failed = _queries(events)[2:]
    assert (add_failed.error, add_failed.sqlstate, add_failed.rowcount) == (IntegrityConflict, "23505", -1)
    assert (get_one.error, get_one.rowcount) == (None, 0)
    assert (copy_failed.query.name, copy_failed.error, copy_failed.sqlstate) == ("load", IntegrityConflict, "23505")
    _assert_no_values(events, SECRET)


def test_a_call_refused_before_sending_sends_nothing_and_traces_nothing(
    notes: sql.QueryFile, db: DataLayerConnection, events: list[tracing.Event]
) -> None:
    from datalayer import QueryError

    with pytest.raises(QueryError, match="missing title"):
        notes.bind("add").exec(db, id=1)
    assert _queries(events) == []


def test_a_read_retried_on_a_fresh_connection_is_one_event(
    notes: sql.QueryFile, dl_pool: DataLayerPool, db: DataLayerConnection, events: list[tracing.Event]
) -> None:
    import datalayer

    notes.bind("create_table").exec(db)
    notes.bind("add").exec(db, id=1, title="one")
    with datalayer.connection(dl_pool) as victim:
        db.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        time.sleep(0.1)
        del events[:]
        assert notes.bind("get_one", TNote).one(victim, id=1) == TNote(1, "one")
    (event,) = _queries(events)
    assert (event.query.name, event.rowcount, event.error) == ("get_one", 1, None)


def test_a_tracer_that_raises_is_logged_once_and_never_breaks_a_query(
    notes: sql.QueryFile, db: DataLayerConnection, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: tracing.Event) -> None:
        raise RuntimeError("tracer bug")

    seen: list[tracing.Event] = []
    with caplog.at_level(logging.ERROR, "datalayer"), tracing.tracer(broken), tracing.tracer(seen.append):
        notes.bind("create_table").exec(db)
        notes.bind("add").exec(db, id=1, title="a")
        assert notes.bind("every", TNote).many(db) == [TNote(1, "a")]
    logged = [r for r in caplog.records if "tracer" in r.getMessage()]
    assert len(logged) == 1 and "broken" in logged[0].getMessage()
    assert _names(seen) == ["create_table", "add", "every"]  # the tracer after it still sees everything


def test_removing_a_tracer_stops_its_events(notes: sql.QueryFile, db: DataLayerConnection) -> None:
    seen: list[tracing.Event] = []
    remove = tracing.add_tracer(seen.append)
    notes.bind("create_table").exec(db)
    remove()
    remove()  # twice: harmless
    notes.bind("add").exec(db, id=1, title="a")
    with tracing.tracer(seen.append):
        notes.bind("every", TNote).many(db)
    notes.bind("every", TNote).many(db)
    assert _names(seen) == ["create_table", "every"]
    assert tracing._tracers == ()


def test_a_tracer_must_be_a_plain_callable() -> None:
    async def coroutine(event: tracing.Event) -> None:
        return None

    with pytest.raises(ValidationError, match="fn"):
        tracing.add_tracer("print")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="coroutine"):
        tracing.add_tracer(coroutine)


# ------------------------------------------------------------------------------------------- async


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_async_queries_give_the_same_events_in_their_task(notes: sql.QueryFile, adb: Any) -> None:
    seen: list[tuple[str, str | None]] = []

    def record(event: tracing.Event) -> None:
        if isinstance(event, QueryEvent):
            task = asyncio.current_task()
            seen.append((event.query.name, None if task is None else task.get_name()))
        all_events.append(event)

    all_events: list[tracing.Event] = []
    with tracing.tracer(record):
        await notes.bind("create_table").aexec(adb)
        await notes.bind("add").aexec(adb, id=1, title=SECRET)

        async def read() -> TNote | None:
            return await notes.bind("by_title", TNote).amaybe(adb, title=SECRET)

        assert await asyncio.create_task(read(), name="reader") == TNote(1, SECRET)
        assert await notes.bind("load").acopy(adb, [(2, "b")]) == 1
        with pytest.raises(IntegrityConflict):
            await notes.bind("add").aexec(adb, id=3, title=SECRET)
    assert [name for name, _ in seen] == ["create_table", "add", "by_title", "load", "add"]
    assert seen[2][1] == "reader"  # emitted in the task that awaited the query
    last = _queries(all_events)[-1]
    assert (last.error, last.sqlstate) == (IntegrityConflict, "23505")
    _assert_no_values(all_events, SECRET)


# ------------------------------------------------------------------------------------------- cache


def _lookups(events: list[tracing.Event]) -> list[tuple[str, str, bool]]:
    return [(e.layer, e.operation, e.hit) for e in events if isinstance(e, CacheEvent)]


def test_cache_lookups_are_events_per_layer(dl_cache: CacheManager, events: list[tracing.Event]) -> None:
    key = dl_cache.keys.user(SECRET)
    assert dl_cache.get(key) is None  # nowhere yet
    assert _lookups(events) == [("l1", "get", False), ("redis", "get", False), ("table", "get", False)]
    dl_cache.set(key, {"name": SECRET}, ttl=60)
    del events[:]
    assert dl_cache.get(key) == {"name": SECRET}  # from Redis, into L1
    assert _lookups(events) == [("l1", "get", False), ("redis", "get", True)]
    del events[:]
    assert dl_cache.get(key) == {"name": SECRET}
    assert _lookups(events) == [("l1", "get", True)]
    _assert_no_values(events, SECRET, "name")


def test_get_or_load_lookups_are_load_events(dl_cache: CacheManager, events: list[tracing.Event]) -> None:
    key = dl_cache.keys.user(7)
    assert dl_cache.get_or_load(key, lambda: {"n": 1}, ttl=60) == {"n": 1}
    ops = {e.operation for e in events if isinstance(e, CacheEvent)}
    assert ops == {"load"}


def _refused_redis() -> RedisTarget:
    with socket.socket() as s:  # a port nothing listens on: Redis refuses at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return RedisTarget(url=f"redis://127.0.0.1:{port}/0")


def test_a_breaker_change_and_a_table_hit_are_events(dl_pool: DataLayerPool, events: list[tracing.Event]) -> None:
    with fresh_cache(_refused_redis(), dl_pool, breaker_cooldown=60) as cache:
        key = cache.keys.user(1)
        cache.set(key, {"n": 1}, ttl=60)  # Redis refused: the breaker opens; the table takes it
        changes = [(e.previous, e.state, e.sequence) for e in events if isinstance(e, BreakerEvent)]
        assert changes[:1] == [("closed", "open", 1)]  # the breaker's first change
        del events[:]
        assert cache.get(key) == {"n": 1}
        assert _lookups(events) == [("l1", "get", False), ("table", "get", True)]  # Redis skipped


def test_no_tracer_no_events_and_the_runner_checks_only_the_tuple(
    notes: sql.QueryFile, db: DataLayerConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no tracer, building an event would be a bug: make it fail loudly if it happens.
    def must_not_run(*args: Any) -> None:
        raise AssertionError("an event was built with no tracer installed")

    monkeypatch.setattr(tracing, "Mark", must_not_run)
    monkeypatch.setattr(tracing, "emit", must_not_run)
    assert tracing._tracers == ()
    notes.bind("create_table").exec(db)
    notes.bind("add").exec(db, id=1, title="a")
    assert notes.bind("every", TNote).many(db) == [TNote(1, "a")]
    assert notes.bind("load").copy(db, [(2, "b")]) == 1
    with pytest.raises(IntegrityConflict):
        notes.bind("add").exec(db, id=1, title="a")


# ------------------------------------------------------------------------------ review: the hook's rules


def test_a_tracer_raising_on_a_failed_query_logs_its_own_error_only(
    notes: sql.QueryFile, db: DataLayerConnection, caplog: pytest.LogCaptureFixture
) -> None:
    # The duplicate's server error holds the value (DETAIL: Key (title)=(...)): it must not reach the log
    # chained to the tracer's error.
    def broken(event: tracing.Event) -> None:
        raise RuntimeError("tracer bug")

    notes.bind("create_table").exec(db)
    notes.bind("add").exec(db, id=1, title=SECRET)
    with caplog.at_level(logging.ERROR, "datalayer"), tracing.tracer(broken), pytest.raises(IntegrityConflict):
        notes.bind("add").exec(db, id=2, title=SECRET)
    (logged,) = [r for r in caplog.records if "tracer" in r.getMessage()]
    assert "RuntimeError: tracer bug" in logged.getMessage() and logged.exc_info is None
    assert SECRET not in caplog.text and "IntegrityConflict" not in caplog.text


def test_a_tracer_may_query_the_callers_connection_and_is_not_traced_itself(
    notes: sql.QueryFile, db: DataLayerConnection
) -> None:
    notes.bind("create_table").exec(db)
    for i in (1, 2, 3):
        notes.bind("add").exec(db, id=i, title=f"t{i}")
    calls: list[str] = []

    def audit(event: tracing.Event) -> None:
        if isinstance(event, QueryEvent):
            calls.append(event.query.name)
            # On the caller's own connection (its kept cursor): the caller's rows are already made.
            assert notes.bind("get_one", TNote).one(db, id=3) == TNote(3, "t3")

    with tracing.tracer(audit):
        assert notes.bind("every", TNote).many(db) == [TNote(1, "t1"), TNote(2, "t2"), TNote(3, "t3")]
        assert notes.bind("get_one", TNote).one(db, id=1) == TNote(1, "t1")
        assert notes.bind("by_title", TNote).maybe(db, title="t2") == TNote(2, "t2")
    assert calls == ["every", "get_one", "by_title"]  # the tracer's own queries: not traced, no recursion


@attrs.frozen
class Inner:
    n: int


@attrs.frozen
class Wrapped:
    id: int
    inner_: Inner  # from a jsonb object whose n is not a number: the row maker fails


@attrs.frozen
class Misnamed:
    ident: int
    title: str


@attrs.frozen
class NumberedTitle:
    id: int
    title: int  # strict records: the column is text


def test_a_call_failing_after_the_execute_is_a_failed_event(
    notes: sql.QueryFile, db: DataLayerConnection, events: list[tracing.Event]
) -> None:
    from datalayer import QueryError
    from datalayer.sql import strict_records

    notes.bind("create_table").exec(db)
    notes.bind("add").exec(db, id=1, title="not a number")
    del events[:]
    with pytest.raises(QueryError, match="cannot become"):
        notes.bind("wrapped", Wrapped).many(db)
    with pytest.raises(QueryError, match="not the fields"):
        notes.bind("every", Misnamed).many(db)
    before = strict_records(True)
    try:
        with pytest.raises(QueryError, match="strict records"):
            notes.bind("every", NumberedTitle).many(db)
    finally:
        strict_records(before)
    assert [(e.query.name, e.error, e.rowcount) for e in _queries(events)] == [
        ("wrapped", QueryError, -1),
        ("every", QueryError, -1),
        ("every", QueryError, -1),
    ]


@pytest.mark.anyio
async def test_a_cancelled_query_is_an_event_with_the_cancellation(notes: sql.QueryFile, adl_pool: Any) -> None:
    from datalayer import aio

    seen: list[tracing.Event] = []
    with tracing.tracer(seen.append):
        async with aio.connection(adl_pool) as conn:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(notes.bind("nap").aexec(conn, seconds=5), 0.2)
    (event,) = _queries(seen)
    assert (event.query.name, event.error, event.rowcount) == ("nap", asyncio.CancelledError, -1)
    assert 0.1 < event.duration < 5


def test_a_replica_read_retried_on_the_primary_reports_the_primary(
    notes: sql.QueryFile, dl_pool: DataLayerPool, db: DataLayerConnection, events: list[tracing.Event]
) -> None:
    import datalayer
    from datalayer.config import DatabaseTarget
    from datalayer.pool import open_pool
    from datalayer.testing import settings_for_tests

    # A stand-in replica: a pool on another database of the same server, its connection marked as
    # connection(replica=True) marks a replica's (a read lost with it runs again on the primary).
    target = dl_pool.target
    elsewhere = DatabaseTarget({**target.params, "dbname": "postgres"}, password=target.password)
    settings = settings_for_tests(pool_size=1, pool_min_size=1, max_overflow=0)
    replica = open_pool(settings, target=elsewhere, name="stand-in-replica")
    try:
        with datalayer.connection(replica) as victim:
            victim._dl_primary = dl_pool
            try:
                db.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
                time.sleep(0.1)
                del events[:]
                assert notes.bind("answer", int).scalar(victim) == 42
            finally:
                victim._dl_primary = None
    finally:
        replica.close()
    (event,) = _queries(events)
    assert event.error is None and event.database == db.info.dbname != "postgres"


def test_a_coroutine_tracer_is_refused_or_closed_unrun(
    notes: sql.QueryFile, db: DataLayerConnection, caplog: pytest.LogCaptureFixture
) -> None:
    class AsyncHook:
        async def __call__(self, event: tracing.Event) -> None:
            return None

    with pytest.raises(ValidationError, match="coroutine"):
        tracing.add_tracer(AsyncHook())

    ran: list[tracing.Event] = []

    async def later(event: tracing.Event) -> None:
        ran.append(event)

    def hands_on(event: tracing.Event) -> Any:
        return later(event)  # a plain function, returning a coroutine: nothing awaits it

    notes.bind("create_table").exec(db)
    import warnings

    with (
        warnings.catch_warnings(),
        caplog.at_level(logging.ERROR, "datalayer"),
        tracing.tracer(hands_on),
    ):
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail the test
        notes.bind("add").exec(db, id=1, title="a")
        notes.bind("add").exec(db, id=2, title="b")
    logged = [r.getMessage() for r in caplog.records if "awaitable" in r.getMessage()]
    assert len(logged) == 1 and "plain functions" in logged[0]
    assert ran == []


def test_a_tracer_that_removes_itself_then_raises_leaves_nothing_behind(
    notes: sql.QueryFile, db: DataLayerConnection, caplog: pytest.LogCaptureFixture
) -> None:
    def once(event: tracing.Event) -> None:
        remove()
        raise RuntimeError("tracer bug")

    notes.bind("create_table").exec(db)
    with caplog.at_level(logging.ERROR, "datalayer"):
        for i in (1, 2):  # the same function installed again is a new tracer: its first failure is logged
            remove = tracing.add_tracer(once)
            notes.bind("add").exec(db, id=i, title=f"t{i}")
    assert len([r for r in caplog.records if "tracer bug" in r.getMessage()]) == 2
    assert tracing._tracers == ()
    assert not getattr(tracing, "_failed", ())  # no failure kept by id, to be inherited by a new tracer
