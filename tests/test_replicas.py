"""Read replicas' settings and the rules a replica connection keeps (the replica itself: tests/reliability/
test_streaming_replica.py, which builds a real streaming replica)."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from datalayer import (
    ConfigError,
    QueryError,
    Settings,
    ValidationError,
    connection,
    run_in_transaction,
    sql,
    transaction,
    user_repo,
)
from datalayer.config import DatabaseTarget, Secret
from datalayer.pool import open_pool
from datalayer.testing import TestServer, settings_for_tests

PRIMARY = {"DATABASE_URL": "postgresql://app:pw@db.example.com/app"}


def test_replica_urls_become_targets_with_the_primary_rules() -> None:
    s = Settings.from_env(
        {
            **PRIMARY,
            "DATABASE_REPLICA_URLS": "postgresql://app:s3cr,et@r1.example.com:5433/app , "
            "postgres://r2a:5432,r2b:5433/app?sslmode=verify-ca",
        }
    )
    first, second = s.replicas
    assert first.params["host"] == "r1.example.com" and first.params["port"] == "5433"
    assert first.password is not None and first.password.value == "s3cr,et"  # a comma in a password stays
    assert first.params["sslmode"] == "verify-full"  # remote: the same safe default as DATABASE_URL
    assert second.params["host"] == "r2a,r2b" and second.params["sslmode"] == "verify-ca"  # multi-host kept whole
    assert "s3cr" not in repr(s)
    assert (s.replica_max_lag, s.replica_wait) == (16 * 2**20, 0.5)
    assert Settings.from_env(PRIMARY).replicas == ()


@pytest.mark.parametrize(
    ("raw", "expected"), [("1048576", 2**20), ("512kB", 512 * 1024), ("16MB", 16 * 2**20), ("1 GiB", 2**30), ("0", 0)]
)
def test_replica_max_lag_takes_bytes_with_postgresql_units(raw: str, expected: int) -> None:
    assert Settings.from_env({**PRIMARY, "REPLICA_MAX_LAG": raw}).replica_max_lag == expected


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"DATABASE_REPLICA_URLS": "postgresql://r.example.com/app"}, "DATABASE_REPLICA_URLS", "without DATABASE_URL"),
        (
            {**PRIMARY, "DATABASE_REPLICA_URLS": "postgresql://r.example.com/app,,postgresql://q.example.com/app"},
            "DATABASE_REPLICA_URLS",
            "entry 1",
        ),
        (
            {**PRIMARY, "DATABASE_REPLICA_URLS": "postgresql://r.example.com/app, mysql://u:Zq7secret@q/app"},
            "DATABASE_REPLICA_URLS",
            "entry 1",
        ),
        (
            {**PRIMARY, "DATABASE_REPLICA_URLS": "postgresql://r/app, postgresql://u:Zq7secret@q/app?nosuch=1"},
            "DATABASE_REPLICA_URLS",
            "entry 2",
        ),
        (
            {**PRIMARY, "DATABASE_REPLICA_URLS": "postgresql://r/app, postgresql://u:Zq7secret@q/app?options=-c%20x=1"},
            "DATABASE_REPLICA_URLS",
            "entry 2",
        ),
        (
            {**PRIMARY, "DATABASE_REPLICA_URLS": "postgresql://u:Zq7secret@r/app, postgresql://u:Zq7other@r:5432/app"},
            "DATABASE_REPLICA_URLS",
            "entry 2 is the same server as entry 1",
        ),
        ({**PRIMARY, "REPLICA_MAX_LAG": "16 parsecs"}, "REPLICA_MAX_LAG", "number of bytes"),
        ({**PRIMARY, "REPLICA_WAIT": "-1"}, "REPLICA_WAIT", "from 0"),
        ({**PRIMARY, "REPLICA_WAIT": "soon"}, "REPLICA_WAIT", "number of seconds"),
    ],
)
def test_bad_replica_settings_name_the_variable_and_entry_never_the_password(
    env: dict[str, str], variable: str, says: str
) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env(env)
    assert e.value.variable == variable
    assert says in str(e.value)
    assert "Zq7" not in str(e.value)


def test_replica_settings_built_directly_are_checked() -> None:
    with pytest.raises(ConfigError) as e:
        Settings(replicas=("postgresql://r/app",))  # type: ignore[arg-type]
    assert e.value.variable == "DATABASE_REPLICA_URLS"
    with pytest.raises(ConfigError):
        Settings(replica_wait=61)
    with pytest.raises(ConfigError):
        Settings(replica_max_lag=-1)
    target = DatabaseTarget(params={"host": "r.example.com", "dbname": "app"})
    assert Settings(replicas=(target,)).replicas == (target,)


def test_the_environment_replaces_the_dotenv_replica_list_with_the_database_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A .env replica list belongs to the .env primary: an environment that names another primary drops it.
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "DATABASE_URL=postgresql://a@old.example.com/app\nDATABASE_REPLICA_URLS=postgresql://a@old-r.example.com/app\n"
    )
    for name in list(os.environ):
        if name.startswith(("DATABASE_", "REPLICA_", "DATALAYER_DOTENV")):
            monkeypatch.delenv(name)
    assert Settings.from_env().replicas[0].params["host"] == "old-r.example.com"
    monkeypatch.setenv("DATABASE_URL", "postgresql://a@new.example.com/app")
    assert Settings.from_env().replicas == ()


# ------------------------------------------------ replicas that cannot serve: skipped, reads on the primary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _in_recovery(db: psycopg.Connection[Any]) -> bool:
    row = db.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row is not None
    return bool(row[0])


@pytest.mark.parametrize("kind", ["unreachable", "not in recovery", "wrong database"])
def test_a_replica_that_cannot_serve_is_skipped_and_reads_go_to_the_primary(
    datalayer_server: TestServer, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    primary = datalayer_server.target
    if kind == "unreachable":  # nothing listens there: connection refused
        bad = DatabaseTarget(
            params={"host": "127.0.0.1", "port": str(_free_port()), "dbname": "app", "user": "app"},
            password=Secret("Zq7secret"),
        )
        says = "cannot be reached"
    elif kind == "wrong database":  # a setting to fix: the message names the replica's entry
        bad = DatabaseTarget(params={**primary.params, "dbname": "datalayer_no_such_db"}, password=primary.password)
        says = "check DATABASE_REPLICA_URLS entry 1"
    else:  # the primary itself listed as a replica (or a promoted one): its data may have diverged
        bad, says = primary, "not in recovery"
    pool = open_pool(settings_for_tests(database=primary, replicas=(bad,)), target=primary)
    try:
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="datalayer"):
            while not any(says in r.getMessage() for r in caplog.records):
                assert time.monotonic() - start < 10, "no health check reported the replica"
                with connection(pool, replica=True) as db:
                    assert not _in_recovery(db)  # the primary serves, and the caller sees no error
                time.sleep(0.05)
        with connection(pool, replica=True) as db:
            assert not _in_recovery(db)
        assert "Zq7" not in caplog.text and "check DATABASE_URL" not in caplog.text
    finally:
        pool.close()
    assert pool.replicas is None  # closed with the pool


def test_without_replicas_a_replica_connection_is_the_primary_with_the_same_rules(
    datalayer_server: TestServer,
) -> None:
    primary = datalayer_server.target
    pool = open_pool(settings_for_tests(database=primary), target=primary)
    try:
        with connection(pool, replica=True) as db:
            assert not _in_recovery(db)
            with pytest.raises(ValidationError) as e, transaction(db):
                pass
            assert "replica connection" in e.value.errors["db"] and "transaction()" in e.value.errors["db"]
            with pytest.raises(ValidationError):
                run_in_transaction(db, lambda _: None)
            with pytest.raises(QueryError) as write:  # refused before it is sent, whatever the tables
                user_repo.create(db, username="nope", email="nope@example.com", hashed_password="h")
            assert write.value.sqlstate == "25006" and "serves reads only" in str(write.value)
        with connection(pool) as db, transaction(db):  # the same connection, lent again normally
            assert not _in_recovery(db)
    finally:
        pool.close()


def test_a_write_keyword_in_a_string_literal_or_comment_does_not_make_a_read_a_write(
    datalayer_server: TestServer, tmp_path: Path
) -> None:
    (tmp_path / "words.sql").write_text(
        "-- name: words :many\n"
        "WITH x AS (SELECT 'update' AS w, $$delete$$ AS d /* insert */) SELECT w FROM x -- merge\n;\n"
        "-- name: named :many\n"
        'WITH x AS (SELECT 1 AS "update") SELECT "update" FROM x;\n'
        "-- name: sneaky :many\n"
        "WITH x AS (UPDATE users SET email = email WHERE false RETURNING id) SELECT id FROM x;\n"
    )
    queries = sql.load(tmp_path / "words.sql")
    primary = datalayer_server.target
    pool = open_pool(settings_for_tests(database=primary), target=primary)
    try:
        with connection(pool, replica=True) as db:
            assert queries.bind("words", str).many(db) == ["update"]
            assert queries.bind("named", int).many(db) == [1]
            with pytest.raises(QueryError) as write:  # a real write in the CTE is still refused
                queries.bind("sneaky", int).many(db)
            assert write.value.sqlstate == "25006"
    finally:
        pool.close()


def test_a_read_on_the_primary_for_a_replica_connection_cannot_write_at_the_server(
    datalayer_server: TestServer, tmp_path: Path
) -> None:
    # Writes a SELECT wraps are classified as reads: the server refuses them (the session is read-only).
    (tmp_path / "sneaky.sql").write_text(
        "-- name: next_id :scalar\nSELECT nextval('replica_rule_seq');\n"
        "-- name: locked :many\nSELECT id FROM replica_rule_rows FOR UPDATE;\n"
    )
    queries = sql.load(tmp_path / "sneaky.sql")
    primary = datalayer_server.target
    pool = open_pool(settings_for_tests(database=primary, pool_size=1, max_overflow=0), target=primary)
    try:
        with connection(pool) as db:
            db.execute("CREATE SEQUENCE IF NOT EXISTS replica_rule_seq")
            db.execute("CREATE TABLE IF NOT EXISTS replica_rule_rows (id int)")
        with connection(pool, replica=True) as db:
            for name, result in (("next_id", int), ("locked", int)):
                with pytest.raises(QueryError) as refused:
                    getattr(queries.bind(name, result), "scalar" if name == "next_id" else "many")(db)
                assert refused.value.sqlstate == "25006", name
            assert db.execute("SELECT count(*) FROM replica_rule_rows").fetchone() is not None  # reads work
        with connection(pool) as db:  # the same (only) connection, lent again normally: it writes
            assert queries.bind("next_id", int).scalar(db) > 0
    finally:
        pool.close()
