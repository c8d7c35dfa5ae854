"""system_log partitions stay ahead: after a plain `yoyo apply`, and in a service whose clock runs for months."""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import ROOT, url_of
from psycopg import pq

from datalayer import SystemLogHandler, ensure_log_partitions, list_log_partitions, log_system_event
from datalayer import system_log_repo as repo
from datalayer.config import DatabaseTarget
from datalayer.partitions import DEFAULT_AHEAD, PartitionKeeper, partition_name, set_keeper
from datalayer.pool import DataLayerPool, connection
from datalayer.repos.system_log import LogEvent


class Clock:
    """A service's clock that the test moves forward (no sleeping for days)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def keeper_with_clock() -> Iterator[tuple[PartitionKeeper, Clock]]:
    clock = Clock(datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0))
    keeper = PartitionKeeper(clock=clock)
    previous = set_keeper(keeper)
    try:
        yield keeper, clock
    finally:
        keeper.wait()
        set_keeper(previous)


def _days(db: Any) -> set[date]:
    return {p.day for p in list_log_partitions(db) if p.day is not None}


def test_writers_keep_partitions_ahead_as_the_clock_runs(
    dl_pool: DataLayerPool, keeper_with_clock: tuple[PartitionKeeper, Clock]
) -> None:
    keeper, clock = keeper_with_clock
    start = clock.now
    handler = SystemLogHandler(service="clock", pool=dl_pool, flush_interval=0.02)
    steps = range(0, 120, 2)  # four months, two days at a time: well past the 7 days migrate made
    try:
        with connection(dl_pool) as db:
            for day in steps:
                clock.now = start + timedelta(days=day)
                repo.bulk_insert(db, [LogEvent(service="bulk", level="INFO", message=f"d{day}", created_at=clock.now)])
                record = logging.LogRecord("svc", logging.INFO, __file__, 1, "d%d", (day,), None)
                record.created = clock.now.timestamp()
                handler.emit(record)
                assert handler.drain(10)
                assert keeper.wait(30)
    finally:
        handler.close()
    assert handler.written == len(steps) and handler.rejected == 0
    with connection(dl_pool) as db:
        assert db.execute("SELECT count(*) FROM system_log_default").fetchone() == (0,)
        rows = db.execute("SELECT tableoid::regclass::text, service, message FROM system_log").fetchall()
        have = _days(db)
    assert len(rows) == 2 * len(steps)
    for day in steps:
        part = partition_name((start + timedelta(days=day)).date())
        assert (part, "bulk", f"d{day}") in rows
        assert (part, "clock", f"d{day}") in rows
    last = (start + timedelta(days=steps[-1])).date()
    assert all(last + timedelta(days=i) in have for i in range(keeper.refresh_within + 1)), "not ahead of the clock"
    assert keeper.created >= steps[-1] - DEFAULT_AHEAD and keeper.failures == 0


def test_log_system_event_tops_up_in_the_background(
    db: Any, keeper_with_clock: tuple[PartitionKeeper, Clock]
) -> None:
    keeper, clock = keeper_with_clock
    clock.now += timedelta(days=30)
    log_system_event(db, service="api", level="INFO", message="a month on")
    assert keeper.wait(30)
    ahead = [(clock.now + timedelta(days=i)).date() for i in range(DEFAULT_AHEAD + 1)]
    assert set(ahead) <= _days(db)


def test_the_hot_path_sends_nothing_and_starts_nothing(db: Any) -> None:
    keeper = PartitionKeeper()
    keeper.check(db)  # learns what exists (the template's days), on a connection of its own
    assert keeper.wait(30) and keeper.failures == 0
    threads = {t for t in threading.enumerate() if t.name == "datalayer-partitions"}
    with tempfile.TemporaryFile() as trace:
        db.pgconn.trace(trace.fileno())
        db.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            for _ in range(1000):
                keeper.check(db)
        finally:
            db.pgconn.untrace()
        trace.seek(0)
        assert trace.read() == b"", "keep_ahead talked to the server on the hot path"
    assert {t for t in threading.enumerate() if t.name == "datalayer-partitions"} <= threads


def test_a_failing_top_up_never_fails_the_write(
    db: Any, keeper_with_clock: tuple[PartitionKeeper, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    keeper, clock = keeper_with_clock
    db.execute("DROP FUNCTION datalayer_ensure_log_partition(date)")  # this test's own database
    clock.now += timedelta(days=30)
    entry = log_system_event(db, service="api", level="WARNING", message="still written")
    assert repo.bulk_insert(db, [LogEvent(service="api", level="INFO", message="and this")]) == 1
    assert keeper.wait(30)
    assert keeper.failures == 1  # once: later writes leave the database alone for a while
    assert repo.get_by_id(db, entry.id) == entry
    assert "could not create system_log partitions ahead" in caplog.text
    broken = PartitionKeeper(clock=lambda: 1 / 0)  # type: ignore[arg-type, return-value]
    set_keeper(broken)
    try:
        assert log_system_event(db, service="api", level="INFO", message="clock broken").message == "clock broken"
    finally:
        set_keeper(keeper)


def test_ensure_log_partitions_returns_how_many_it_created(db: Any) -> None:
    far = datetime.now(UTC).date() + timedelta(days=200)
    assert ensure_log_partitions(db, ahead=4, today=far) == 5
    assert ensure_log_partitions(db, ahead=4, today=far) == 0
    assert {far + timedelta(days=i) for i in range(5)} <= _days(db)


def test_plain_yoyo_apply_leaves_partitions_ahead(dl_empty_target: DatabaseTarget) -> None:
    yoyo = Path(sys.executable).parent / "yoyo"
    url = url_of(dl_empty_target).replace("postgresql://", "postgresql+psycopg://", 1)
    r = subprocess.run([str(yoyo), "apply", "--database", url], cwd=ROOT, capture_output=True, text=True,
                       timeout=180, check=False)
    assert r.returncode == 0, r.stderr
    assert "could not create" not in r.stderr
    with psycopg.connect(dl_empty_target.conninfo(), autocommit=True) as c:
        have = _days(c)
        ledger = c.execute("SELECT count(*) FROM datalayer_migration_ledger").fetchone()
    today = datetime.now(UTC).date()
    assert {today + timedelta(days=i) for i in range(DEFAULT_AHEAD + 1)} <= have, sorted(have)
    assert ledger is not None and ledger[0] >= 3  # the checksum step still ran in the same hook
