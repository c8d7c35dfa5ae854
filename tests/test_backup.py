"""Backup and restore against hostile files and hostile paths (issue 11, items 2, 3 and 9).

Each damaged file here is re-sealed (counts and checksums recomputed) where the damage would otherwise
only be caught by the checksum: the restore must refuse what a careful attacker or a broken tool
writes, not only what a flipped bit does.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from backup_files import Backup
from factories import user

from datalayer import BackupError, ValidationError, backup_database_data, restore_database_data, system_log_repo
from datalayer.backup import BACKUP_FORMAT_VERSION
from datalayer.builtin_schema import REGISTRY
from datalayer.pool import DataLayerPool, connection
from datalayer.repos.system_log import LogEvent
from datalayer.testing import TestServer, fresh_database

TODAY = datetime.now(UTC).date()
BACKUP_TABLES = tuple(t.name for t in REGISTRY.backed_up)
# The order datalayer wrote the built-in tables in before the registry (parents first too).
LEGACY_ORDER = ("users", "data_analyses", "analysis_files", "tool_generations", "system_log", "cache_entries")


def _log_days(db: Any, days_ago: list[int]) -> None:
    events = [LogEvent(service="s", level="INFO", message=f"d{d}",
                       created_at=datetime.now(UTC) - timedelta(days=d)) for d in days_ago]
    system_log_repo.bulk_insert(db, events)


@pytest.fixture
def source(dl_pool: DataLayerPool, tmp_path: Path) -> Path:
    """A backup of three users, an analysis-free database and log rows 40, 41 and 100 days old."""
    path = tmp_path / "b.json"
    with connection(dl_pool) as db:
        for _ in range(3):
            user(db)
        _log_days(db, [40, 41, 100])
        backup_database_data(db, path)
    return path


def _tables_empty(db: Any) -> None:
    for t in BACKUP_TABLES:
        assert db.execute(f"SELECT count(*) FROM {t}").fetchone() == (0,), f"{t} half-restored"


def _refused(server: TestServer, path: Path, match: str) -> BackupError:
    with fresh_database(server) as empty, connection(empty) as db:
        with pytest.raises(BackupError, match=match) as e:
            restore_database_data(db, path)
        _tables_empty(db)
    return e.value


def _partitions(db: Any) -> set[str]:
    return {r[0] for r in db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'system_log'::regclass AND c.relname <> 'system_log_default'")}


# -- item 3: counts are the server's, sections are what the header says -------------------------


def test_end_of_data_line_inside_a_section_is_refused(source: Path, datalayer_server: TestServer) -> None:
    # `\.` ends PostgreSQL's COPY: before the fix the rows after it were counted and reported, never stored.
    b = Backup(source.read_bytes())
    _, rows = b.section("users")
    rows.insert(1, b"\\.\n")
    b.seal(source)
    line = source.read_bytes().splitlines().index(b"\\.") + 1
    err = _refused(datalayer_server, source, rf"line {line}: an end-of-data line")
    assert err.line == line


@pytest.mark.parametrize("tables", [
    [*BACKUP_TABLES[:1], *BACKUP_TABLES],           # the first one twice
    [*BACKUP_TABLES, BACKUP_TABLES[-1]],            # the last one twice
])
def test_table_named_twice_is_refused(source: Path, datalayer_server: TestServer, tables: list[str]) -> None:
    b = Backup(source.read_bytes())
    b.header["tables"] = tables
    dup = tables[-1] if tables[-1] == tables[-2] else tables[0]
    b.sections.insert(b.sections.index(b.section(dup)), b.section(dup))  # and the section written twice
    b.seal(source)
    err = _refused(datalayer_server, source, f"line 1: the header names table {dup} twice")
    assert err.line == 1


@pytest.mark.parametrize(("tables", "match"), [
    ([*BACKUP_TABLES, "pg_authid"], "unknown table 'pg_authid'"),
    (list(BACKUP_TABLES[1:]), "a backup of this database holds cache_entries, system_log"),  # one missing
    (list(reversed(BACKUP_TABLES)), "names tool_generations before users, which it references"),  # children first
    ("users", "not a list"),
    ([1, 2], "not a list"),
    (None, "not a list"),
])
def test_header_tables_are_checked(source: Path, datalayer_server: TestServer, tables: Any, match: str) -> None:
    b = Backup(source.read_bytes())
    b.header["tables"] = tables
    b.seal(source)
    assert _refused(datalayer_server, source, match).line == 1


def test_partitions_only_for_days_in_the_rows(source: Path, datalayer_server: TestServer) -> None:
    # A format-1 style header claiming a 400-day range must not create 400 empty partitions.
    b = Backup(source.read_bytes())
    head, _ = b.section("system_log")
    head["first_day"], head["last_day"] = (TODAY - timedelta(days=399)).isoformat(), TODAY.isoformat()
    b.seal(source)
    with fresh_database(datalayer_server) as empty, connection(empty) as db:
        before = _partitions(db)
        counts = restore_database_data(db, source)
        assert counts["system_log"] == 3 and counts["users"] == 3
        created = _partitions(db) - before
        assert created == {f"system_log_p{TODAY - timedelta(days=d):%Y%m%d}" for d in (40, 41, 100)}
        assert db.execute("SELECT count(*) FROM system_log_default").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM system_log").fetchone() == (3,)


def _cut(data: bytes, marker: bytes) -> bytes:
    return data[: data.index(marker)]


def _edit_end_table(table: str, value: Any) -> Any:
    def edit(data: bytes) -> bytes:
        lines = data.splitlines(keepends=True)
        i = next(i for i, ln in enumerate(lines) if ln.startswith(b'{"__datalayer__":"end_table","name":"' + table.encode()))
        doc = orjson.loads(lines[i])
        doc["rows"] = value
        lines[i] = orjson.dumps(doc) + b"\n"
        return b"".join(lines)
    return edit


def _edit_header(**fields: Any) -> Any:
    def edit(data: bytes) -> bytes:
        first, rest = data.split(b"\n", 1)
        return orjson.dumps({**orjson.loads(first), **fields}) + b"\n" + rest
    return edit


HOSTILE = {
    "version true": (_edit_header(format_version=True), "backup format True"),
    "version string": (_edit_header(format_version="2"), "backup format '2'"),
    "version float": (_edit_header(format_version=2.0), "backup format 2.0"),
    "version negative": (_edit_header(format_version=-1), "backup format -1"),
    "version huge": (_edit_header(format_version=10**18), "newer datalayer: upgrade"),
    "version next": (_edit_header(format_version=BACKUP_FORMAT_VERSION + 1), "newer datalayer: upgrade"),
    "version missing": (_edit_header(format_version=None), "backup format None"),
    "byte-order mark": (lambda d: b"\xef\xbb\xbf" + d, "byte-order mark"),
    "crlf": (lambda d: d.replace(b"\n", b"\r\n"), "carriage return"),
    "crlf in rows only": (lambda d: d.replace(b"@example.com\t", b"@example.com\r\t", 1), r"line \d+ holds a carriage"),
    "bytes after end": (lambda d: d + b"{}\n", "data after the end marker"),
    "second backup appended": (lambda d: d + d, "data after the end marker"),
    "no end marker": (lambda d: _cut(d, b'{"__datalayer__":"end","rows"'), "truncated"),
    "no final newline": (lambda d: d[:-1], "truncated"),
    "rows true": (_edit_end_table("cache_entries", False), "corrupt"),
    "rows negative": (_edit_end_table("users", -3), "corrupt"),
    "rows huge": (_edit_end_table("users", 10**18), "corrupt"),
    "rows string": (_edit_end_table("users", "3"), "corrupt"),
    "end counts bool": (lambda d: d.replace(b'"cache_entries":0,', b'"cache_entries":false,'), "row counts do not match"),
    "sections swapped": (lambda d: d.replace(b'"name":"analysis_files"', b'"name":"tool_generations"', 1),
                         "expected the section of analysis_files"),
    "marker kind wrong": (lambda d: d.replace(b'{"__datalayer__":"end_table","name":"users"',
                                              b'{"__datalayer__":"table","name":"users"', 1),
                          "expected a 'end_table' marker"),
    "huge control line": (lambda d: d.replace(b'"tables":[', b'"pad":"' + b"x" * (2 << 20) + b'","tables":[', 1),
                          "longer than"),
    "header not an object": (lambda d: b'{"__datalayer__":' + b"1}\n" + d.split(b"\n", 1)[1], "not a datalayer backup"),
    "deeply nested": (lambda d: b'{"__datalayer__":' + b"[" * 5000 + b"]" * 5000 + b"}\n", "not a datalayer backup"),
    "column twice": (lambda d: d.replace(b'"columns":["id",', b'"columns":["id","id",', 1), "names a column twice"),
    "no columns": (lambda d: d.replace(b'"columns":["id",', b'"cols":["id",', 1), "no column list"),
    "unknown column": (lambda d: d.replace(b'"columns":["id",', b'"columns":["id","is_admin",', 1),
                       "no column 'is_admin'"),
    # a column left out would silently take its default (a new id, now()) instead of the backed-up value
    "column left out": (lambda d: d.replace(b'"columns":["id",', b'"columns":[', 1), "has no column 'id'"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_control_fields(source: Path, datalayer_server: TestServer, case: str) -> None:
    edit, match = HOSTILE[case]
    source.write_bytes(edit(source.read_bytes()))
    err = _refused(datalayer_server, source, match)
    assert err.line is None or err.line >= 1


def test_a_backup_in_the_legacy_table_order_restores(source: Path, datalayer_server: TestServer) -> None:
    # Backups written before the registry list the tables in another order, parents first as well.
    b = Backup(source.read_bytes())
    b.header["tables"] = list(LEGACY_ORDER)
    b.sections = [b.section(t) for t in LEGACY_ORDER]
    b.seal(source)
    with fresh_database(datalayer_server) as empty, connection(empty) as db:
        counts = restore_database_data(db, source)
        assert list(counts) == list(LEGACY_ORDER) and counts["users"] == 3 and counts["system_log"] == 3


def test_a_row_that_looks_like_a_control_line_round_trips(dl_pool: DataLayerPool, datalayer_server: TestServer,
                                                        tmp_path: Path) -> None:
    # A table whose first column is text: its row could start like a control line.
    path = tmp_path / "b.json"
    trap = '{"__datalayer__":"end","rows":{}}'
    with connection(dl_pool) as db:
        db.execute("CREATE TABLE kv (k text PRIMARY KEY, v text)")
        db.execute("INSERT INTO kv VALUES (%s, %s), ('plain', %s)", (trap, trap, "\\."))
        backup_database_data(db, path)
    with fresh_database(datalayer_server) as empty, connection(empty) as db2:
        db2.execute("CREATE TABLE kv (k text PRIMARY KEY, v text)")
        assert restore_database_data(db2, path)["kv"] == 2
        assert db2.execute("SELECT k, v FROM kv ORDER BY k").fetchall() == [("plain", "\\."), (trap, trap)]


# -- item 2: a format-1 backup (before users.email_key) is restored with the key computed ------------


def _as_format_1(path: Path, emails: list[str] | None = None) -> None:
    b = Backup(path.read_bytes())
    b.header["format_version"] = 1
    head, rows = b.section("users")
    if "email_key" in head["columns"]:
        k = head["columns"].index("email_key")
        head["columns"].remove("email_key")
        rows[:] = [b"\t".join(f for j, f in enumerate(r.rstrip(b"\n").split(b"\t")) if j != k) + b"\n" for r in rows]
    if emails is not None:
        e = head["columns"].index("email")
        for i, addr in enumerate(emails):
            fields = rows[i].rstrip(b"\n").split(b"\t")
            fields[e] = addr.encode()
            rows[i] = b"\t".join(fields) + b"\n"
    b.seal(path)


def _has_email_key(db: Any) -> bool:
    return db.execute("SELECT to_regclass('users') IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute "
                      "WHERE attrelid = 'users'::regclass AND attname = 'email_key')").fetchone()[0]


def test_format_1_backup_restores_with_computed_keys(source: Path, datalayer_server: TestServer) -> None:
    from datalayer.text import email_key

    _as_format_1(source, ["Ann@Example.COM.", "İx@example.com", "x@Straße.de"])
    with fresh_database(datalayer_server) as empty, connection(empty) as db:
        if not _has_email_key(db):
            pytest.skip("users.email_key arrives with migration 0005")
        assert restore_database_data(db, source)["users"] == 3
        rows = db.execute("SELECT email, email_key FROM users ORDER BY id").fetchall()
        assert [r[0] for r in rows] == ["Ann@Example.COM.", "İx@example.com", "x@Straße.de"]  # as typed
        assert [r[1] for r in rows] == [email_key(r[0]) for r in rows]
        assert rows[0][1] == "ann@example.com"


def test_format_1_backup_with_clashing_addresses_is_refused(source: Path, datalayer_server: TestServer) -> None:
    _as_format_1(source, ["ann@example.com", "ANN@example.com.", "zero\u200bwidth@example.com"])
    with fresh_database(datalayer_server) as empty, connection(empty) as db:
        if not _has_email_key(db):
            pytest.skip("users.email_key arrives with migration 0005")
        ids = [int(r.split(b"\t")[0]) for r in Backup(source.read_bytes()).section("users")[1]]
        with pytest.raises(BackupError, match=rf"cannot compute email_key from email for id {ids[2]} "):
            restore_database_data(db, source)
        _tables_empty(db)
    _as_format_1(source, ["ann@example.com", "ANN@example.com.", "bob@example.com"])
    err = _refused(datalayer_server, source, "share one email_key")
    assert f"{{{ids[0]},{ids[1]}}}" in str(err)


def test_a_key_in_the_file_is_recomputed_not_trusted(source: Path, datalayer_server: TestServer) -> None:
    b = Backup(source.read_bytes())
    head, rows = b.section("users")
    if "email_key" not in head["columns"]:
        pytest.skip("users.email_key arrives with migration 0005")
    k = head["columns"].index("email_key")
    fields = rows[0].rstrip(b"\n").split(b"\t")
    fields[k] = b"victim@example.com"
    rows[0] = b"\t".join(fields) + b"\n"
    b.seal(source)
    with fresh_database(datalayer_server) as empty, connection(empty) as db:
        restore_database_data(db, source)
        assert db.execute("SELECT count(*) FROM users WHERE email_key = 'victim@example.com'").fetchone() == (0,)


# -- restore into the wrong place, from the wrong kind of file -----------------------------------


def test_restore_into_an_unmigrated_database_says_migrate(source: Path, datalayer_server: TestServer) -> None:
    name = f"dl_bare_{os.getpid()}"
    janitor = datalayer_server.janitor(name)
    janitor.drop()
    with janitor:
        from datalayer.pool import open_pool
        from datalayer.testing import settings_for_tests

        pool = open_pool(settings_for_tests(), target=datalayer_server.target_for(name), wait=True)
        try:
            with connection(pool) as db:
                with pytest.raises(BackupError, match=r"not migrated \(table _yoyo_migration does not exist\).*datalayer migrate"):
                    restore_database_data(db, source)
                with pytest.raises(BackupError, match="not migrated"):
                    backup_database_data(db, source.with_name("other.json"))
            assert not source.with_name("other.json").exists()
        finally:
            pool.close()


def _restore_in_thread(db: Any, path: Path) -> list[BaseException]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            restore_database_data(db, path)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "restore hung on a FIFO"
    return errors


def test_restore_refuses_fifo_directory_and_device(dl_pool: DataLayerPool, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with connection(dl_pool) as db:
        errors = _restore_in_thread(db, fifo)  # before the fix: open() waited forever for a writer
        assert len(errors) == 1 and isinstance(errors[0], BackupError), errors
        assert "not a regular file" in str(errors[0])
        for path in (tmp_path, Path("/dev/zero")):
            with pytest.raises(BackupError, match="not a regular file"):
                restore_database_data(db, path)
        with pytest.raises(BackupError, match="cannot read the backup"):
            restore_database_data(db, tmp_path / "missing.json")


@pytest.mark.parametrize("path", [None, 42, b"b.json", "", "with\x00nul"])
def test_bad_path_arguments(db: Any, path: Any) -> None:
    with pytest.raises(ValidationError, match="path"):
        backup_database_data(db, path)
    with pytest.raises(ValidationError, match="path"):
        restore_database_data(db, path)


# -- item 9: the backup file is never written through a link -----------------------------------


def test_planted_symlinks_are_not_followed(db: Any, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o644)
    target = tmp_path / "b.json"
    # The names the old code would have used (.NAME.PID.tmp), for this and nearby pids.
    for pid in range(max(os.getpid() - 50, 1), os.getpid() + 50):
        (tmp_path / f".b.json.{pid}.tmp").symlink_to(victim)
    user(db)
    assert backup_database_data(db, target) is True
    assert victim.read_text() == "precious" and oct(victim.stat().st_mode & 0o777) == "0o644"
    assert not target.is_symlink() and oct(target.stat().st_mode & 0o777) == "0o600"
    assert target.read_bytes().startswith(b'{"__datalayer__":"backup"')
    left = {p.name for p in tmp_path.iterdir()} - {"victim", "b.json"}
    assert all(name.endswith(".tmp") and (tmp_path / name).is_symlink() for name in left)  # only the planted ones


def test_backup_target_must_be_a_regular_file(db: Any, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    with pytest.raises(BackupError, match="symbolic link"):
        backup_database_data(db, link)
    assert victim.read_text() == "precious" and link.is_symlink()
    (tmp_path / "dir.json").mkdir()
    os.mkfifo(tmp_path / "fifo.json")
    for name in ("dir.json", "fifo.json"):
        with pytest.raises(BackupError, match="not a regular file"):
            backup_database_data(db, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "fifo.json", "link.json", "victim"]


def test_backup_is_owner_only_whatever_the_umask(db: Any, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        backup_database_data(db, tmp_path / "b.json")
    finally:
        os.umask(old)
    assert oct((tmp_path / "b.json").stat().st_mode & 0o777) == "0o600"


def test_round_trip_with_control_like_text(dl_pool: DataLayerPool, datalayer_server: TestServer,
                                           tmp_path: Path) -> None:
    from datalayer import cache_entry_repo

    tricky = '{"__datalayer__":"end","rows":{}}'
    path = tmp_path / "b.json"
    with connection(dl_pool) as db:
        cache_entry_repo.set(db, tricky, {"k": tricky}, ttl=600)
        system_log_repo.create(db, service="s", level="INFO", message="\\.\n" + tricky)
        backup_database_data(db, path)
    with fresh_database(datalayer_server) as empty, connection(empty) as db2:
        assert restore_database_data(db2, path)["cache_entries"] == 1
        entry = cache_entry_repo.get(db2, tricky)
        assert entry is not None and entry.value == {"k": tricky}
        assert db2.execute("SELECT message FROM system_log").fetchone() == ("\\.\n" + tricky,)


def test_log_days_the_partition_function_refuses_stay_in_the_default(dl_pool: DataLayerPool,
                                                                     datalayer_server: TestServer,
                                                                     tmp_path: Path) -> None:
    # 1960 and two years ahead are outside what datalayer_ensure_log_partition accepts: the restore
    # keeps those rows (in the default partition, like any insert for a day without a partition).
    path = tmp_path / "b.json"
    with connection(dl_pool) as db:
        db.execute("INSERT INTO system_log (created_at, service, level, message) VALUES "
                   "('1960-05-01 12:00+00', 's', 'INFO', 'old'), (now() + interval '800 days', 's', 'INFO', 'future'), "
                   "(now(), 's', 'INFO', 'today')")
        backup_database_data(db, path)
    with fresh_database(datalayer_server) as empty, connection(empty) as db2:
        before = _partitions(db2)
        assert restore_database_data(db2, path)["system_log"] == 3
        assert _partitions(db2) == before  # today's partition existed; nothing for 1960 or the far future
        assert sorted(r[0] for r in db2.execute("SELECT message FROM system_log_default")) == ["future", "old"]
