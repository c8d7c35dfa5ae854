"""One text rule at the boundary: a lone surrogate (what ``os.fsdecode(b"\\xff")`` returns) or NUL in any
text a caller passes is a ValidationError naming the field, never a UnicodeEncodeError or a psycopg
DataError, and nothing is written; the validators report it the same way."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from datalayer import (
    ValidationError,
    analysis_file_repo,
    cache_entry_repo,
    data_analysis_repo,
    hash_password,
    log_system_event,
    system_log_repo,
    tool_generation_repo,
    user_repo,
    validate_analysis_data,
    validate_user_data,
)
from datalayer._run import bind
from datalayer._sql import QueryFile, load_queries, parse_sql
from datalayer.cache._keys import Keys

SURROGATE = os.fsdecode(b"caf\xe9")  # 'caf\udce9': undecodable bytes from a file name
NUL = "nul\x00byte"
SHA = "a" * 64
NOW = datetime.now(UTC)

Call = Callable[[Any, dict[str, int], str], object]

# (entry point, the field the error must name, how to call it with the bad text)
ENTRY_POINTS: list[tuple[str, str, Call]] = [
    ("user create username", "username",
     lambda db, ids, t: user_repo.create(db, username=t, email="a@example.com", hashed_password="h")),
    ("user create email", "email",
     lambda db, ids, t: user_repo.create(db, username="ann", email=f"{t}@example.com", hashed_password="h")),
    ("user create hashed_password", "hashed_password",
     lambda db, ids, t: user_repo.create(db, username="ann", email="a@example.com", hashed_password=t)),
    ("user create_with_password", "password",
     lambda db, ids, t: user_repo.create_with_password(db, username="ann", email="a@example.com",
                                                       password=t + "-long-enough")),
    ("user update username", "username", lambda db, ids, t: user_repo.update(db, ids["user"], username=t)),
    ("user update email", "email", lambda db, ids, t: user_repo.update(db, ids["user"], email=t + "@x.com")),
    ("user update hashed_password", "hashed_password",
     lambda db, ids, t: user_repo.update(db, ids["user"], hashed_password=t)),
    ("user get_by_username", "username", lambda db, ids, t: user_repo.get_by_username(db, t)),
    ("user get_by_email", "email", lambda db, ids, t: user_repo.get_by_email(db, t + "@example.com")),
    ("analysis create name", "name",
     lambda db, ids, t: data_analysis_repo.create(db, user_id=ids["user"], name=t, analysis_type="x")),
    ("analysis create type", "analysis_type",
     lambda db, ids, t: data_analysis_repo.create(db, user_id=ids["user"], name="n", analysis_type=t)),
    ("analysis create parameters value", "parameters",
     lambda db, ids, t: data_analysis_repo.create(db, user_id=ids["user"], name="n", analysis_type="x",
                                                  parameters={"k": [t]})),
    ("analysis create parameters key", "parameters",
     lambda db, ids, t: data_analysis_repo.create(db, user_id=ids["user"], name="n", analysis_type="x",
                                                  parameters={t: 1})),
    ("analysis update name", "name", lambda db, ids, t: data_analysis_repo.update(db, ids["analysis"], name=t)),
    ("analysis find name_prefix", "name_prefix", lambda db, ids, t: data_analysis_repo.find(db, name_prefix=t)),
    ("analysis find analysis_type", "analysis_type",
     lambda db, ids, t: data_analysis_repo.find(db, user_id=ids["user"], analysis_type=t)),
    ("analysis fail error", "error", lambda db, ids, t: data_analysis_repo.fail(db, ids["running"], error=t)),
    ("file create filename", "filename",
     lambda db, ids, t: analysis_file_repo.create(db, analysis_id=ids["analysis"], filename=t, file_type="csv",
                                                  size_bytes=1, storage_uri="s3://b/k", checksum=SHA)),
    ("file create storage_uri", "storage_uri",
     lambda db, ids, t: analysis_file_repo.create(db, analysis_id=ids["analysis"], filename="f", file_type="csv",
                                                  size_bytes=1, storage_uri=t)),
    ("file update file_type", "file_type", lambda db, ids, t: analysis_file_repo.update(db, ids["file"], file_type=t)),
    ("file list_for_analysis", "file_type",
     lambda db, ids, t: analysis_file_repo.list_for_analysis(db, ids["analysis"], file_type=t)),
    ("file find filename_prefix", "filename_prefix",
     lambda db, ids, t: analysis_file_repo.find(db, filename_prefix=t)),
    ("generation create tool_type", "tool_type",
     lambda db, ids, t: tool_generation_repo.create(db, user_id=ids["user"], tool_type=t)),
    ("generation create spec", "spec",
     lambda db, ids, t: tool_generation_repo.create(db, user_id=ids["user"], tool_type="chart", spec={"s": t})),
    ("generation update tool_type", "tool_type",
     lambda db, ids, t: tool_generation_repo.update(db, ids["generation"], tool_type=t)),
    ("generation count tool_type", "tool_type", lambda db, ids, t: tool_generation_repo.count(db, tool_type=t)),
    ("log_system_event message", "message",
     lambda db, ids, t: log_system_event(db, service="svc", level="INFO", message=t)),
    ("log_system_event service", "service",
     lambda db, ids, t: log_system_event(db, service=t, level="INFO", message="m")),
    ("log_system_event details", "details",
     lambda db, ids, t: log_system_event(db, service="svc", level="INFO", message="m", details={"d": t})),
    ("system_log find service", "service",
     lambda db, ids, t: system_log_repo.find(db, since=NOW - timedelta(hours=1), until=NOW, service=t)),
    ("cache_entries set key", "key", lambda db, ids, t: cache_entry_repo.set(db, t, {"v": 1})),
    ("cache_entries get key", "key", lambda db, ids, t: cache_entry_repo.get(db, t)),
    ("cache_entries delete_prefix", "prefix", lambda db, ids, t: cache_entry_repo.delete_prefix(db, t)),
    ("hash_password", "password", lambda db, ids, t: hash_password(t + "-long-enough")),
]


def _counts(db: Any) -> tuple[int, ...]:
    row = db.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM data_analyses), "
                     "(SELECT count(*) FROM analysis_files), (SELECT count(*) FROM tool_generations), "
                     "(SELECT count(*) FROM system_log), (SELECT count(*) FROM cache_entries), "
                     "(SELECT max(updated_at) FROM users), (SELECT max(updated_at) FROM data_analyses), "
                     "(SELECT max(updated_at) FROM analysis_files), "
                     "(SELECT max(updated_at) FROM tool_generations)").fetchone()
    return tuple(row)


@pytest.fixture
def ids(db: psycopg.Connection) -> dict[str, int]:
    u = user_repo.create(db, username="owner", email="owner@example.com", hashed_password="h")
    a = data_analysis_repo.create(db, user_id=u.id, name="a", analysis_type="t")
    r = data_analysis_repo.start(db, data_analysis_repo.create(db, user_id=u.id, name="r", analysis_type="t").id)
    f = analysis_file_repo.create(db, analysis_id=a.id, filename="f", file_type="csv", size_bytes=1,
                                  storage_uri="s3://b/f")
    g = tool_generation_repo.create(db, user_id=u.id, tool_type="chart")
    return {"user": u.id, "analysis": a.id, "running": r.id, "file": f.id, "generation": g.id}


@pytest.mark.parametrize("bad", [SURROGATE, NUL], ids=["surrogate", "nul"])
@pytest.mark.parametrize(("call", "field"), [(c, f) for _, f, c in ENTRY_POINTS], ids=[n for n, _, _ in ENTRY_POINTS])
def test_every_entry_point_names_the_field(db: psycopg.Connection, ids: dict[str, int], call: Call, field: str,
                                           bad: str) -> None:
    before = _counts(db)
    with pytest.raises(ValidationError) as e:
        call(db, ids, bad)
    assert field in e.value.errors, e.value.errors
    message = e.value.errors[field]
    assert ("surrogate" in message) if bad is SURROGATE else ("NUL" in message), message
    assert _counts(db) == before  # nothing written


@pytest.mark.parametrize("bad", [SURROGATE, "a\ud800b"])
def test_cache_keys_name_the_field(bad: str) -> None:
    keys = Keys("dl")
    for build, field in ((keys.user, "user_id"), (keys.analysis_result, "analysis_id"),
                         (keys.tool_generation, "generation_id"), (keys.api_generation, "endpoint")):
        with pytest.raises(ValidationError) as e:
            build(bad)
        assert field in e.value.errors


def test_validators_report_it_the_same_way() -> None:
    r = validate_user_data({"username": "ann", "email": f"{SURROGATE}@example.com", "password": "long-enough"})
    assert not r["valid"] and "surrogate" in r["errors"]["email"]
    r = validate_user_data({"username": SURROGATE, "email": "a@example.com", "password": SURROGATE + "-long"})
    assert "surrogate" in r["errors"]["username"] and "surrogate" in r["errors"]["password"]
    r = validate_analysis_data({"user_id": 1, "name": SURROGATE, "analysis_type": "t", "parameters": {"x": SURROGATE}})
    assert "surrogate" in r["errors"]["name"] and "surrogate" in r["errors"]["parameters"]


def test_validator_and_repository_say_the_same(db: psycopg.Connection) -> None:
    r = validate_user_data({"username": "ann", "email": f"{SURROGATE}@example.com", "password": "long-enough"})
    with pytest.raises(ValidationError) as e:
        user_repo.create_with_password(db, username="ann", email=f"{SURROGATE}@example.com", password="long-enough")
    assert e.value.errors == r["errors"]


def test_backstop_at_the_execution_point_names_the_parameter(db: psycopg.Connection) -> None:
    """A query whose function forgot to check its text still gives a ValidationError naming the parameter,
    in a transaction that stays usable."""
    qf = QueryFile(domain="users", path=load_queries("users").path, queries=parse_sql(
        "-- name: echo :scalar\nSELECT :'who'::text\n\n-- name: many :many\nSELECT unnest(:'names'::text[])\n",
        domain="users", file="sql/users.sql"))
    echo, many = bind(qf, "echo", str), bind(qf, "many", str)
    for bad, word in ((SURROGATE, "surrogate"), (NUL, "NUL")):
        with db.transaction():
            with pytest.raises(ValidationError) as e:
                echo.scalar(db, who=bad)
            assert word in e.value.errors["who"] and "sql/users.sql" in e.value.errors["who"]
            with pytest.raises(ValidationError) as e:
                many.many(db, names=["fine", bad])
            assert word in e.value.errors["names"]
            assert echo.scalar(db, who="still usable") == "still usable"


def test_backstop_in_copy(db: psycopg.Connection) -> None:
    qf = QueryFile(domain="system_log", path=load_queries("system_log").path, queries=parse_sql(
        "-- name: copy_tmp :copy\nCOPY pg_temp.h1_copy (t) FROM STDIN\n", domain="system_log",
        file="sql/system_log.sql"))
    copy = bind(qf, "copy_tmp", None)
    with db.transaction():
        db.execute("CREATE TEMP TABLE h1_copy (t text) ON COMMIT DROP")
        for bad, word in ((SURROGATE, "surrogate"), (NUL, "NUL")):
            with pytest.raises(ValidationError) as e, db.transaction():
                copy.copy_in(db, [("ok",), (bad,)])
            assert list(e.value.errors) == ["row 2 column 1"] and word in e.value.errors["row 2 column 1"]
        assert db.execute("SELECT count(*) FROM h1_copy").fetchone() == (0,)  # nothing half-written
