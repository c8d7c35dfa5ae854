"""system_log_repo and events: time-bounded listings that prune partitions, COPY bulk insert, the handler."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import psycopg
import psycopg.sql
import pytest

from datalayer import (
    SystemLogHandler,
    ValidationError,
    log_system_event,
)
from datalayer import (
    system_log_repo as repo,
)
from datalayer._sql import load_queries
from datalayer.pool import DataLayerPool, connection
from datalayer.repos.system_log import LogEvent
from datalayer.transactions import transaction

NOW = datetime.now(UTC)


def test_create_and_get(db: Any) -> None:
    e = repo.create(db, service="billing", level="ERROR", message="charge failed", details={"invoice": 42}, user_id=7)
    assert (e.service, e.level, e.message, e.details, e.user_id) == ("billing", "ERROR", "charge failed", {"invoice": 42}, 7)
    assert repo.get_by_id(db, e.id) == e
    assert repo.get_by_id(db, e.id + 100) is None


def test_log_system_event_is_lenient_about_level_case(db: Any) -> None:
    e = log_system_event(db, service="api", level="warn", message="slow", details={"ms": 900})
    assert e.level == "WARNING"
    with pytest.raises(ValidationError):
        log_system_event(db, service="api", level="LOUD", message="x")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"service": ""}, "service"), ({"level": "info"}, "level"), ({"message": 5}, "message"),
    ({"details": {"x": "\x00"}}, "details"), ({"user_id": -3}, "user_id"),
])
def test_bad_input(db: Any, kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"service": "s", "level": "INFO", "message": "m", **kwargs}
    with pytest.raises(ValidationError) as e:
        repo.create(db, **args)
    assert field in e.value.errors


def _seed_days(db: Any, days: int) -> list[datetime]:
    """One partition and 3 events per day for the last ``days`` days."""
    stamps = []
    for d in range(days):
        day = (NOW - timedelta(days=d)).date()
        db.execute("SELECT datalayer_ensure_log_partition(%s)", (day,))
        for h in (1, 2, 3):
            stamps.append(datetime(day.year, day.month, day.day, h, tzinfo=UTC))
    repo.bulk_insert(db, [LogEvent(service="svc" if i % 2 else "other", level="ERROR" if i % 3 == 0 else "INFO",
                                   message=f"m{i}", created_at=t) for i, t in enumerate(stamps)])
    return stamps


def test_find_filters_and_keyset(db: Any) -> None:
    stamps = _seed_days(db, 4)
    since, until = NOW - timedelta(days=10), NOW + timedelta(days=1)
    everything = repo.find(db, since=since, until=until, limit=1000).items
    assert len(everything) == len(stamps)
    assert [e.created_at for e in everything] == sorted(stamps, reverse=True)
    page, seen = repo.find(db, since=since, until=until, limit=5), []
    while True:
        seen += page.items
        if not page.next_cursor:
            break
        page = repo.find(db, since=since, until=until, limit=5, after=page.next_cursor)
    assert seen == everything
    errors = repo.find(db, since=since, until=until, level="ERROR", service="other", limit=1000).items
    assert errors and all(e.level == "ERROR" and e.service == "other" for e in errors)
    counts = {c.level: c.count for c in repo.count_by_level(db, since=since, until=until)}
    assert counts == {"ERROR": sum(1 for i in range(len(stamps)) if i % 3 == 0),
                      "INFO": sum(1 for i in range(len(stamps)) if i % 3)}


@pytest.mark.parametrize("kwargs", [
    {"since": NOW, "until": NOW},
    {"since": NOW, "until": NOW - timedelta(hours=1)},
    {"since": NOW - timedelta(days=100), "until": NOW},
    {"since": datetime(2026, 1, 1), "until": NOW},
    {"since": "yesterday", "until": NOW},
])
def test_unbounded_or_bad_ranges_refused(db: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        repo.find(db, **kwargs)


def _scanned(plan: Any) -> tuple[set[str], int]:
    relations, removed = set(), 0
    stack = [plan]
    while stack:
        node = stack.pop()
        if "Relation Name" in node:
            relations.add(node["Relation Name"])
        removed += node.get("Subplans Removed", 0)
        stack += node.get("Plans", [])
    return relations, removed


@pytest.mark.parametrize("generic", [False, True])
def test_bounded_range_prunes_partitions(db: Any, generic: bool) -> None:
    _seed_days(db, 6)
    q = load_queries("system_log").queries["find"]
    day = (NOW - timedelta(days=2)).date()
    since = datetime(day.year, day.month, day.day, tzinfo=UTC)
    params = {"since": since, "until": since + timedelta(days=1), "service": None, "level": None, "user_id": None,
              "after_created": None, "after_id": None, "fetch": 100}
    if generic:
        # One transaction: behind a transaction pooler (TEST_PGBOUNCER=1) the SET, PREPARE and EXECUTE
        # must reach one server session, and leave nothing in it for the next client.
        with transaction(db):
            db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            db.execute("PREPARE find_generic AS " + _dollar(q.sql))
            types = db.execute("SELECT parameter_types::text[] FROM pg_prepared_statements "
                               "WHERE name = 'find_generic'").fetchone()[0]
            # EXECUTE's arguments cannot be bind parameters: send them as literals of the prepared types
            literals = psycopg.sql.SQL(", ").join(
                psycopg.sql.SQL("{}::{}").format(psycopg.sql.Literal(params[k]), psycopg.sql.SQL(t))
                for k, t in zip(_order(q.sql), types, strict=True))
            plan = db.execute(psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE find_generic({})").format(
                literals)).fetchone()[0][0]["Plan"]
            db.execute("DEALLOCATE find_generic")
    else:
        plan = db.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + q.sql, params).fetchone()[0][0]["Plan"]
    relations, removed = _scanned(plan)
    assert relations == {f"system_log_p{day:%Y%m%d}"}, relations
    total = db.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'system_log'::regclass").fetchone()[0]
    if generic:
        assert removed == total - 1  # pruned at executor start: "Subplans Removed"


def _order(sql: str) -> list[str]:
    import re

    return list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))


def _dollar(sql: str) -> str:
    from datalayer._sql import _to_dollar

    return _to_dollar(sql)


def test_bulk_insert_is_all_or_nothing(db: Any) -> None:
    good = [{"service": "s", "level": "INFO", "message": f"m{i}", "details": {"i": i}} for i in range(100)]
    assert repo.bulk_insert(db, good) == 100
    bad = [*good[:10], {"service": "s", "level": "NOPE", "message": "x"}, *good[:10]]
    with pytest.raises(ValidationError) as e:
        repo.bulk_insert(db, bad)
    assert "events[10].level" in e.value.errors
    with pytest.raises(ValidationError) as e2:
        repo.bulk_insert(db, [*good[:3], {"service": "s", "level": "INFO", "message": "m", "colour": "red"}])
    assert "events[3].colour" in e2.value.errors
    assert db.execute("SELECT count(*) FROM system_log").fetchone() == (100,)
    assert repo.bulk_insert(db, []) == 0


def test_bulk_insert_stores_hostile_text_verbatim(db: Any) -> None:
    evil = ["'; DROP TABLE system_log; --", "\\.\n\\N", "tab\there", "line\nbreak", "back\\slash", "ünïcødé 🚀"]
    repo.bulk_insert(db, [{"service": "s", "level": "INFO", "message": m, "details": {"m": m}} for m in evil])
    rows = repo.find(db, since=NOW - timedelta(hours=1), until=NOW + timedelta(hours=1), limit=50).items
    assert sorted(r.message for r in rows) == sorted(evil)
    assert all(r.details["m"] == r.message for r in rows)


def test_handler_writes_batches_in_the_background(dl_pool: DataLayerPool) -> None:
    handler = SystemLogHandler(service="worker", pool=dl_pool, batch_size=50, flush_interval=0.05)
    log = logging.getLogger("test.handler")
    log.addHandler(handler)
    log.setLevel(1)
    try:
        for i in range(120):
            log.info("job %d done", i, extra={"job": i, "user_id": 9})
        try:
            raise ValueError("bad input")
        except ValueError:
            log.exception("job failed")
        log.log(5, "very verbose")
        assert handler.drain(10)
    finally:
        log.removeHandler(handler)
        handler.close()
    assert handler.written == 122 and handler.dropped == 0
    with connection(dl_pool) as db:
        rows = repo.find(db, since=NOW - timedelta(hours=1), until=NOW + timedelta(hours=1), service="worker",
                         limit=1000).items
    assert len(rows) == 122
    failed = next(r for r in rows if r.message == "job failed")
    assert failed.level == "ERROR" and "ValueError: bad input" in failed.details["exception"]
    job = next(r for r in rows if r.message == "job 7 done")
    assert job.details["job"] == 7 and job.user_id == 9 and job.details["logger"] == "test.handler"
    assert next(r for r in rows if r.message == "very verbose").level == "DEBUG"


def test_handler_never_blocks_and_counts_drops(capsys: pytest.CaptureFixture[str]) -> None:
    # A pool that can never connect: the writer thread retries, the caller never waits.
    from datalayer.config import DatabaseTarget
    from datalayer.pool import DataLayerPool as Pool
    from datalayer.testing import settings_for_tests

    dead = DatabaseTarget(params={"host": "127.0.0.1", "port": "1", "dbname": "x", "user": "u"})
    settings = settings_for_tests(pool_timeout=0.2)
    pool = Pool(settings, dead, conninfo=dead.conninfo(), min_size=0, max_size=1, timeout=0.2, open=False)
    pool.open(wait=False)
    handler = SystemLogHandler(service="x", pool=pool, capacity=100, flush_interval=0.01)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg %s", ("a",), None)
    t0 = time.monotonic()
    for _ in range(1000):
        handler.emit(record)
    elapsed = time.monotonic() - t0
    handler.close(timeout=0.2)
    pool.close()
    assert elapsed < 0.5, f"emit blocked: {elapsed:.3f}s for 1000 records"
    assert handler.dropped >= 1000 - 100 - handler.batch_size  # the buffer, plus a batch the writer holds
    assert handler.pending() + handler.dropped == 1000
    err = capsys.readouterr().err
    assert "could not be written" in err and "dropped" in err


def test_handler_flushes_at_exit_before_the_embedded_server_stops(tmp_path: Any) -> None:
    from helpers import clean_env, run_py

    code = (
        "import logging\n"
        "from datalayer import SystemLogHandler\n"
        "h = SystemLogHandler(service='atexit', flush_interval=5)\n"  # long interval: only the exit flush writes
        "logging.getLogger().addHandler(h)\n"
        "logging.getLogger().setLevel(logging.INFO)\n"
        "for i in range(25): logging.info('before exit %d', i)\n"
    )
    env = clean_env(DATALAYER_HOME=str(tmp_path / "home"))
    # the data directory exists (initdb is not part of what this test times); the server is stopped
    prepared = run_py("from datalayer import connection\nwith connection() as db: db.execute('SELECT 1')", env,
                      timeout=180)
    assert prepared.returncode == 0, prepared.stderr
    pid_file = tmp_path / "home" / "pgdata" / "postmaster.pid"
    assert not pid_file.exists(), "the first process left its embedded server running"
    r = run_py(code, env, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "could not be written" not in r.stderr
    # The writer thread may still be starting the server when the interpreter exits: it must stop too.
    assert not pid_file.exists(), "the embedded server started during exit was left running"
    check = run_py(
        "from datalayer import connection\n"
        "with connection() as db:\n"
        "    print(db.execute(\"SELECT count(*) FROM system_log WHERE service = 'atexit'\").fetchone()[0])\n",
        env, timeout=120)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "25"
    assert not pid_file.exists()


def test_raw_copy_error_rolls_back(db: Any) -> None:
    from datalayer import DataLayerError, transaction
    from datalayer.repos.system_log import copy_rows

    with pytest.raises(DataLayerError), transaction(db):
        copy_rows(db, [(NOW, "s", "INFO", "m", "{}", None), (NOW, "s", "BOGUS", "m", "{}", None)])
    assert db.execute("SELECT count(*) FROM system_log").fetchone() == (0,)
    assert isinstance(db, psycopg.Connection)


def test_record_landed_finds_only_the_tagged_event_in_its_span(db: Any) -> None:
    e = repo.create(db, service="svc", level="INFO", message="m", details={"record_id": "r-1"})
    span = {"first": e.created_at - timedelta(seconds=1), "last": e.created_at + timedelta(seconds=1)}
    assert repo.record_landed(db, record_id="r-1", service="svc", **span) is True
    assert repo.record_landed(db, record_id="r-2", service="svc", **span) is False
    assert repo.record_landed(db, record_id="r-1", service="other", **span) is False
    later = {"first": e.created_at + timedelta(seconds=1), "last": e.created_at + timedelta(seconds=2)}
    assert repo.record_landed(db, record_id="r-1", service="svc", **later) is False


# --- only DataLayerError leaves: what is not a list of events, a closed connection, a tzinfo that fails ---

@pytest.mark.parametrize("events", [None, 5, 1.5, "abc", {"service": "s", "level": "INFO", "message": "m"}])
def test_bulk_insert_refuses_what_is_not_a_list_of_events(db: Any, events: Any) -> None:
    with pytest.raises(ValidationError) as e:
        repo.bulk_insert(db, events)
    assert list(e.value.errors) == ["events"] and type(events).__name__ in e.value.errors["events"]
    with pytest.raises(ValidationError) as e:
        repo.copy_rows(db, events)
    assert list(e.value.errors) == ["rows"]
    assert db.execute("SELECT count(*) FROM system_log").fetchone() == (0,)


def _closed_calls(conn: Any) -> list[Any]:
    return [
        lambda: repo.get_by_id(conn, 1),
        lambda: repo.find(conn, since=NOW - timedelta(hours=1), until=NOW),
        lambda: repo.create(conn, service="s", level="INFO", message="m"),
        lambda: repo.bulk_insert(conn, [{"service": "s", "level": "INFO", "message": "m"}]),
        lambda: log_system_event(conn, service="s", level="INFO", message="m"),
        lambda: transaction(conn).__enter__(),
    ]


def test_a_closed_connection_is_a_validation_error_naming_db(dl_pool: DataLayerPool,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with connection(dl_pool) as db:
        raw = psycopg.connect(**db.info.get_parameters(), password=db.info.password)  # the caller's own
    raw.close()
    with connection(dl_pool) as pooled:  # a pooled one keeps its cursor across calls: closed after a first query
        repo.get_by_id(pooled, 1)
        pooled.close()
        for conn in (raw, pooled):
            for call in _closed_calls(conn):
                with pytest.raises(ValidationError) as e:
                    call()
                assert list(e.value.errors) == ["db"] and "is closed" in e.value.errors["db"]
    assert "partitions ahead failed" not in caplog.text  # refused before any other work


def test_a_wrong_db_is_refused_before_partitions_are_kept_ahead(caplog: pytest.LogCaptureFixture) -> None:
    for call in (lambda: log_system_event(None, service="s", level="INFO", message="m"),  # type: ignore[arg-type]
                 lambda: repo.bulk_insert(None, [])):  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as e:
            call()
        assert list(e.value.errors) == ["db"] and "NoneType" in e.value.errors["db"]
    assert "partitions ahead failed" not in caplog.text


class _Offset(tzinfo):
    """A caller's tzinfo: Python checks what utcoffset answers only when it is asked."""

    def __init__(self, offset: Any) -> None:
        self.offset = offset

    def utcoffset(self, dt: datetime | None) -> Any:
        return self.offset

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None


@pytest.mark.parametrize("offset", [timedelta(hours=30), timedelta(hours=-24), "+01:00", None])
def test_a_tzinfo_with_a_bad_offset_is_a_validation_error_naming_the_field(db: Any, offset: Any) -> None:
    bad = NOW.replace(tzinfo=_Offset(offset))
    calls = {
        "since": lambda: repo.find(db, since=bad - timedelta(hours=1), until=NOW),
        "until": lambda: repo.count_by_level(db, since=NOW - timedelta(hours=1), until=bad),
        "events[1].created_at": lambda: repo.bulk_insert(db, [
            {"service": "s", "level": "INFO", "message": "m"},
            {"service": "s", "level": "INFO", "message": "m", "created_at": bad}]),
    }
    for field, call in calls.items():
        with pytest.raises(ValidationError) as e:
            call()
        assert list(e.value.errors) == [field] and "timezone-aware" in e.value.errors[field]
    assert db.execute("SELECT count(*) FROM system_log").fetchone() == (0,)


@pytest.mark.parametrize("at", [datetime(2099, 1, 1, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC)])
def test_bulk_insert_refuses_times_no_partition_can_hold(db: Any, at: datetime) -> None:
    # Such a row would wait in system_log_default for good: health red, no maintenance able to move it.
    with pytest.raises(ValidationError, match="created_at"):
        repo.bulk_insert(db, [LogEvent(service="s", level="INFO", message="m", created_at=at)])
    assert db.execute("SELECT count(*) FROM system_log").fetchone() == (0,)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    repo.bulk_insert(db, [LogEvent(service="s", level="INFO", message="m", created_at=tomorrow)])
