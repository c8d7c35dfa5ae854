"""Stats, retention by partition, and backup/restore (round trip, corruption, truncation)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import analysis, file, generation, user

from datalayer import (
    BackupError,
    ValidationError,
    backup_database_data,
    cache_entry_repo,
    cleanup_old_data,
    data_analysis_repo,
    get_database_stats,
    restore_database_data,
    system_log_repo,
    tool_generation_repo,
)
from datalayer.builtin_schema import REGISTRY
from datalayer.pool import DataLayerPool, connection
from datalayer.repos.system_log import LogEvent
from datalayer.testing import TestServer, fresh_database

NOW = datetime.now(UTC)
BACKUP_TABLES = tuple(t.name for t in REGISTRY.backed_up)


def test_stats(db: Any) -> None:
    ann = user(db)
    a, b = analysis(db, ann), analysis(db, ann)
    data_analysis_repo.start(db, a.id)
    generation(db, ann)
    system_log_repo.create(db, service="s", level="ERROR", message="m")
    stats = get_database_stats(db)
    assert stats["users"] == 1 and stats["recent_analyses"] == 2
    assert stats["analyses_by_status"] == {"pending": 1, "running": 1, "completed": 0, "failed": 0}
    assert stats["tool_generations_by_status"]["pending"] == 1
    assert stats["log_events_last_hour"]["ERROR"] == 1 and stats["log_events_last_hour"]["INFO"] == 0
    assert set(stats["tables"]) == set(REGISTRY.names)  # cache_invalidations too, which no backup holds
    assert all(t["total_bytes"] > 0 for t in stats["tables"].values())
    assert any(p["name"] == "system_log_default" for p in stats["log_partitions"])
    assert b.id


def _sixty_days(db: Any, per_day: int = 24) -> dict[str, int]:
    """Logs for each of the last 60 days (partitions created for every day)."""
    per_partition: dict[str, int] = {}
    events = []
    for d in range(60):
        day = (NOW - timedelta(days=d)).date()
        db.execute("SELECT datalayer_ensure_log_partition(%s)", (day,))
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        stamps = [start + timedelta(hours=h) for h in range(per_day) if start + timedelta(hours=h) <= NOW]
        per_partition[f"system_log_p{day:%Y%m%d}"] = len(stamps)
        events += [LogEvent(service="s", level="INFO", message=f"{d}", created_at=t) for t in stamps]
    system_log_repo.bulk_insert(db, events)
    return per_partition


def test_cleanup_drops_old_partitions_and_counts(db: Any) -> None:
    per_partition = _sixty_days(db)
    cache_entry_repo.set(db, "old", 1, ttl=0.001)
    cache_entry_repo.set(db, "live", 1, ttl=600)
    import time

    time.sleep(0.01)
    cutoff_expected = datetime.now(UTC) - timedelta(days=30)
    expected_rows = db.execute("SELECT count(*) FROM system_log WHERE created_at < %s",
                               (cutoff_expected,)).fetchone()[0]
    total = db.execute("SELECT count(*) FROM system_log").fetchone()[0]
    result = cleanup_old_data(db, days=30)
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert abs((cutoff - cutoff_expected).total_seconds()) < 60
    left = db.execute("SELECT count(*) FROM system_log").fetchone()[0]
    assert result["system_logs"] == total - left
    assert abs(result["system_logs"] - expected_rows) <= 1  # the clock moved between the two counts
    assert db.execute("SELECT count(*) FROM system_log WHERE created_at < %s", (cutoff,)).fetchone() == (0,)
    assert result["cache_entries"] == 1 and cache_entry_repo.get(db, "live") is not None
    names = {r[0] for r in db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'system_log'::regclass")}
    for name in per_partition:
        day = datetime.strptime(name[12:], "%Y%m%d").replace(tzinfo=UTC)
        if day + timedelta(days=1) <= cutoff:
            assert name not in names, f"{name} older than the cutoff still exists"
        else:
            assert name in names
    assert result["partitions_dropped"] == sum(
        1 for n in per_partition if datetime.strptime(n[12:], "%Y%m%d").replace(tzinfo=UTC) + timedelta(days=1) <= cutoff)
    again = cleanup_old_data(db, days=30)
    assert again["system_logs"] == 0 and again["partitions_dropped"] == 0


def test_cleanup_whole_days_only_drops_partitions(db: Any) -> None:
    per_partition = _sixty_days(db)
    result = cleanup_old_data(db, days=30, whole_days=True)
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert (cutoff.hour, cutoff.minute, cutoff.second, cutoff.microsecond) == (0, 0, 0, 0)
    assert cutoff.date() == (datetime.now(UTC) - timedelta(days=30)).date()
    kept = {name: n for name, n in per_partition.items()
            if datetime.strptime(name[12:], "%Y%m%d").replace(tzinfo=UTC) >= cutoff}
    assert len(kept) == 31  # today and the 30 days before it, the cutoff's day whole
    # Every kept partition still holds every row: nothing was deleted row by row.
    for name, n in kept.items():
        assert db.execute(f"SELECT count(*) FROM {name}").fetchone() == (n,), name
    assert result["partitions_dropped"] == len(per_partition) - len(kept)
    assert result["system_logs"] == sum(per_partition.values()) - sum(kept.values())


@pytest.mark.parametrize("days", [0, -1, "30", 1.5, None, 10**6])
def test_cleanup_refuses_bad_days(db: Any, days: Any) -> None:
    with pytest.raises(ValidationError):
        cleanup_old_data(db, days=days)


def _populate(db: Any) -> None:
    ann, bob = user(db), user(db)
    a = analysis(db, ann, parameters={"nested": {"list": [1, 2.5, None, "x\ty\nz"]}, "quote": "it's \\ \"q\""})
    data_analysis_repo.start(db, a.id)
    data_analysis_repo.complete(db, a.id, result={"ok": True})
    file(db, a, "csv", 10)
    file(db, a, "png", 20)
    g = generation(db, bob, spec={"prompt": "ünïcødé 🚀"})
    tool_generation_repo.start(db, g.id)
    tool_generation_repo.fail(db, g.id, error="line1\nline2\\")
    for d in range(3):
        db.execute("SELECT datalayer_ensure_log_partition(%s)", ((NOW - timedelta(days=d)).date(),))
    system_log_repo.bulk_insert(db, [LogEvent(service="s", level="INFO", message=f"m{i}\n\\N",
                                              details={"i": i}, created_at=NOW - timedelta(hours=i))
                                     for i in range(60)])
    cache_entry_repo.set(db, "user:{1}", {"name": "Ann"}, ttl=600, version=2)


def _dump(db: Any) -> dict[str, list[Any]]:
    return {t: db.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in BACKUP_TABLES}


def test_backup_restore_round_trip(dl_pool: DataLayerPool, datalayer_server: TestServer, tmp_path: Path) -> None:
    path = tmp_path / "backup.json"
    with connection(dl_pool) as db:
        _populate(db)
        before = _dump(db)
        progress: list[tuple[str, int]] = []
        assert backup_database_data(db, path, progress=lambda t, n: progress.append((t, n))) is True
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not list(tmp_path.glob(".backup.json.*"))
    assert {t for t, _ in progress} == set(BACKUP_TABLES)
    with fresh_database(datalayer_server) as empty, connection(empty) as db2:
        for t in BACKUP_TABLES:  # the template is empty; make sure
            assert db2.execute(f"SELECT count(*) FROM {t}").fetchone() == (0,)
        counts = restore_database_data(db2, path)
        assert counts == {t: len(rows) for t, rows in before.items()}
        assert _dump(db2) == before
        assert db2.execute("SELECT count(*) FROM system_log_default").fetchone() == (0,)
        # identity sequences moved past the restored ids
        fresh = user(db2)
        assert fresh.id > max(r[0] for r in before["users"])
        # restoring again into non-empty tables is refused, and changes nothing
        with pytest.raises(BackupError, match="empty tables"):
            restore_database_data(db2, path)
        assert db2.execute("SELECT count(*) FROM users").fetchone() == (len(before["users"]) + 1,)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def backup_file(dl_pool: DataLayerPool, tmp_path: Path) -> Path:
    path = tmp_path / "b.json"
    with connection(dl_pool) as db:
        _populate(db)
        backup_database_data(db, path)
    return path


def _restore_fails(server: TestServer, path: Path, match: str) -> BackupError:
    with fresh_database(server) as empty, connection(empty) as db:
        with pytest.raises(BackupError, match=match) as e:
            restore_database_data(db, path)
        for t in BACKUP_TABLES:
            assert db.execute(f"SELECT count(*) FROM {t}").fetchone() == (0,), f"{t} half-restored"
    return e.value


def test_truncated_backup_changes_nothing(backup_file: Path, datalayer_server: TestServer) -> None:
    lines = _lines(backup_file)
    cut = next(i for i, ln in enumerate(lines) if b'"name":"system_log"' in ln) + 10
    backup_file.write_bytes(b"".join(lines[:cut]))
    err = _restore_fails(datalayer_server, backup_file, "truncated")
    assert err.line is not None and err.line >= cut


def test_truncated_mid_line(backup_file: Path, datalayer_server: TestServer) -> None:
    data = backup_file.read_bytes()
    backup_file.write_bytes(data[: len(data) // 2])
    _restore_fails(datalayer_server, backup_file, "truncated")


def test_corrupt_row_names_the_line(backup_file: Path, datalayer_server: TestServer) -> None:
    lines = _lines(backup_file)
    i = next(i for i, ln in enumerate(lines) if b'"name":"data_analyses"' in ln) + 1
    lines[i] = b"not\ta\trow\n"
    backup_file.write_bytes(b"".join(lines))
    err = _restore_fails(datalayer_server, backup_file, f"line {i + 1}")
    assert err.line == i + 1


def test_flipped_bytes_fail_the_checksum(backup_file: Path, datalayer_server: TestServer) -> None:
    lines = _lines(backup_file)
    i = next(i for i, ln in enumerate(lines) if b"m7" in ln)
    lines[i] = lines[i].replace(b"m7", b"m8")
    backup_file.write_bytes(b"".join(lines))
    _restore_fails(datalayer_server, backup_file, "corrupt")


@pytest.mark.parametrize("content", [b"", b"hello\n", b'{"__datalayer__":"backup","format_version":99}\n',
                                     b"\x00\xff\xfe", b'{"__datalayer__":"backup","format_version":1,"tables":["x"]}\n'])
def test_not_a_backup(datalayer_server: TestServer, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk"
    path.write_bytes(content)
    _restore_fails(datalayer_server, path, "backup|format|unknown tables")


def test_backup_failure_leaves_no_file(db: Any, tmp_path: Path) -> None:
    with pytest.raises(BackupError):
        backup_database_data(db, tmp_path / "missing-dir" / "b.json")
    existing = tmp_path / "keep.json"
    existing.write_text("previous backup")
    os.chmod(tmp_path, 0o500)
    try:
        if os.geteuid() != 0:  # root ignores directory permissions
            with pytest.raises(BackupError):
                backup_database_data(db, existing)
            assert existing.read_text() == "previous backup"
    finally:
        os.chmod(tmp_path, 0o700)
