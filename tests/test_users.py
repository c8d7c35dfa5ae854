"""users: every function, good and hostile input, cardinality and error locations."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from datalayer import (
    IntegrityConflict,
    MultipleRowsFound,
    NotFound,
    QueryError,
    User,
    ValidationError,
    user_repo,
    verify_password,
)
from datalayer._run import bind
from datalayer._sql import QueryFile, load_queries, parse_sql


def _new(db: psycopg.Connection, name: str | None = None, **kw: object) -> User:
    name = name or f"u_{uuid.uuid4().hex[:10]}"
    return user_repo.create(db, username=name, email=f"{name}@Example.com", hashed_password="h$x", **kw)  # type: ignore[arg-type]


def test_create_and_read_back(db: psycopg.Connection) -> None:
    u = _new(db, "alice")
    assert u.id > 0
    assert (u.username, u.email, u.is_active) == ("alice", "alice@example.com", True)
    assert u.created_at.tzinfo is not None and u.created_at == u.updated_at
    assert user_repo.get_by_id(db, u.id) == u
    assert user_repo.get_by_username(db, "alice") == u
    assert user_repo.get_by_email(db, "ALICE@example.COM") == u
    assert user_repo.get_by_id(db, u.id + 1000) is None
    assert user_repo.get_by_username(db, "nobody") is None
    assert user_repo.get_by_email(db, "nobody@example.com") is None


def test_hashed_password_not_in_repr(db: psycopg.Connection) -> None:
    u = user_repo.create(db, username="bob", email="bob@example.com", hashed_password="$argon2id$secretish")
    assert "secretish" not in repr(u)


def test_create_with_password_hashes(db: psycopg.Connection) -> None:
    u = user_repo.create_with_password(db, username="carol", email="carol@example.com", password="pw-123456789")
    assert u.hashed_password.startswith("$argon2id$")
    assert "pw-123456789" not in u.hashed_password
    assert verify_password("pw-123456789", u.hashed_password)


@pytest.mark.parametrize(
    ("field", "other"),
    [("username", {"username": "dup", "email": "other@example.com"}),
     ("email", {"username": "other", "email": "DUP@example.com"})],
)
def test_duplicates_name_the_field(db: psycopg.Connection, field: str, other: dict[str, str]) -> None:
    user_repo.create(db, username="dup", email="dup@example.com", hashed_password="h")
    with pytest.raises(IntegrityConflict) as e:
        user_repo.create(db, hashed_password="h", **other)
    assert e.value.field == field
    assert field in str(e.value)
    assert "sql/users.sql:" in str(e.value) and "users.create" in str(e.value)
    assert isinstance(e.value.__cause__, psycopg.errors.UniqueViolation)
    assert user_repo.count(db) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"username": "a", "email": "a@example.com"}, "username"),
        ({"username": "has space", "email": "a@example.com"}, "username"),
        ({"username": "x" * 51, "email": "a@example.com"}, "username"),
        ({"username": "nul\x00name", "email": "a@example.com"}, "username"),
        ({"username": "robert'); DROP TABLE users;--", "email": "a@example.com"}, "username"),
        ({"username": "okname", "email": "not-an-email"}, "email"),
        ({"username": "okname", "email": "a@b@c.com"}, "email"),
        ({"username": "okname", "email": "x" * 250 + "@example.com"}, "email"),
        ({"username": 42, "email": "a@example.com"}, "username"),
    ],
)
def test_bad_input_is_validation_error(db: psycopg.Connection, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        user_repo.create(db, hashed_password="h", **kwargs)  # type: ignore[arg-type]
    assert field in e.value.errors
    assert user_repo.count(db) == 0


def test_empty_hash_refused(db: psycopg.Connection) -> None:
    with pytest.raises(ValidationError) as e:
        user_repo.create(db, username="dave", email="dave@example.com", hashed_password="")
    assert "hashed_password" in e.value.errors


def test_update_partial(db: psycopg.Connection) -> None:
    u = _new(db, "erin")
    changed = user_repo.update(db, u.id, is_active=False)
    assert changed is not None
    assert changed.is_active is False and changed.username == "erin" and changed.email == u.email
    assert changed.updated_at >= u.updated_at
    again = user_repo.update(db, u.id, email="ERIN2@Example.com", username="erin2")
    assert again is not None and (again.email, again.username) == ("erin2@example.com", "erin2")
    assert user_repo.update(db, u.id + 999, is_active=True) is None


def test_update_touches_updated_at_only_on_change(db: psycopg.Connection) -> None:
    u = _new(db, "frank")
    db.execute("UPDATE users SET created_at = created_at - interval '1 hour', updated_at = updated_at - interval '1 hour' WHERE id = %s", (u.id,))
    stale = user_repo.get_by_id(db, u.id)
    assert stale is not None
    same = user_repo.update(db, u.id)  # no change: the trigger leaves updated_at alone
    assert same is not None and same.updated_at == stale.updated_at
    changed = user_repo.update(db, u.id, is_active=False)
    assert changed is not None and changed.updated_at > stale.updated_at


def test_update_unknown_field_and_bad_values(db: psycopg.Connection) -> None:
    u = _new(db)
    with pytest.raises(ValidationError) as e:
        user_repo.update(db, u.id, nickname="x")  # type: ignore[call-arg]
    assert "nickname" in e.value.errors
    with pytest.raises(ValidationError):
        user_repo.update(db, u.id, is_active="yes")  # type: ignore[typeddict-item]
    with pytest.raises(ValidationError):
        user_repo.update(db, u.id, email="bad")
    other = _new(db, "george")
    with pytest.raises(IntegrityConflict) as conflict:
        user_repo.update(db, u.id, username=other.username)
    assert conflict.value.field == "username"
    assert "users.update" in str(conflict.value)


def test_delete(db: psycopg.Connection) -> None:
    u = _new(db)
    assert user_repo.delete(db, u.id) is True
    assert user_repo.delete(db, u.id) is False
    assert user_repo.get_by_id(db, u.id) is None


@pytest.mark.parametrize("bad", [0, -1, 2**63, "1", 1.0, True, None])
def test_bad_ids(db: psycopg.Connection, bad: object) -> None:
    with pytest.raises(ValidationError):
        user_repo.get_by_id(db, bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        user_repo.delete(db, bad)  # type: ignore[arg-type]


def test_get_many(db: psycopg.Connection) -> None:
    users = [_new(db) for _ in range(3)]
    assert user_repo.get_many(db, []) == []
    ids = [users[2].id, users[0].id, 999_999]
    assert user_repo.get_many(db, ids) == [users[0], users[2]]


def test_find_keyset_pages(db: psycopg.Connection) -> None:
    made = [_new(db) for _ in range(7)]
    user_repo.update(db, made[3].id, is_active=False)
    seen: list[User] = []
    page = user_repo.find(db, limit=3)
    while True:
        seen += page.items
        if page.next_cursor is None:
            break
        page = user_repo.find(db, limit=3, after=page.next_cursor)
    assert [u.id for u in seen] == [u.id for u in made]
    active = user_repo.find(db, limit=50, is_active=True)
    assert made[3].id not in [u.id for u in active.items] and len(active.items) == 6
    assert not active.has_more


@pytest.mark.parametrize("cursor", ["", "garbage", "eyJ4IjoxfQ", "W10", "WyJvdGhlciIsWyJpIiwxXV0", "x" * 5000,
                                    "WyJ1c2Vycy5pZCIsWyJzIiwiMSJdXQ"])
def test_malformed_cursor_is_validation_error(db: psycopg.Connection, cursor: str) -> None:
    with pytest.raises(ValidationError) as e:
        user_repo.find(db, after=cursor)
    assert "after" in e.value.errors


@pytest.mark.parametrize("limit", [0, -5, 1001, "10", 2.5, True])
def test_bad_limit(db: psycopg.Connection, limit: object) -> None:
    with pytest.raises(ValidationError):
        user_repo.find(db, limit=limit)  # type: ignore[arg-type]


def test_find_page_with_total(db: psycopg.Connection) -> None:
    made = [_new(db) for _ in range(5)]
    p2 = user_repo.find_page(db, page=2, per_page=2)
    assert [u.id for u in p2.items] == [made[2].id, made[3].id]
    assert (p2.total, p2.pages) == (5, 3)
    assert user_repo.find_page(db, page=9, per_page=2).items == []


def test_injection_strings_are_data(db: psycopg.Connection) -> None:
    evil = "x'; DROP TABLE users; --@example.com"
    assert user_repo.get_by_email(db, evil) is None
    assert user_repo.get_by_username(db, "' OR '1'='1") is None
    assert user_repo.get_by_username(db, "nul\x00") is None
    _new(db)
    assert user_repo.count(db) == 1


def test_cardinality_errors_name_the_query(db: psycopg.Connection) -> None:
    qf = QueryFile(domain="users", path=load_queries("users").path, queries=parse_sql(
        "-- name: all_one :one\nSELECT id FROM users\n\n-- name: all_maybe :maybe\nSELECT id FROM users\n",
        domain="users", file="sql/users.sql"))
    one = bind(qf, "all_one", int)
    maybe = bind(qf, "all_maybe", int)
    with pytest.raises(NotFound) as nf:
        one.one(db)
    assert "sql/users.sql:1 users.all_one" in str(nf.value)
    assert maybe.maybe(db) is None
    _new(db)
    assert one.one(db) > 0
    _new(db)
    with pytest.raises(MultipleRowsFound) as mr:
        one.one(db)
    assert "2 rows" in str(mr.value) and "users.all_one" in str(mr.value)
    with pytest.raises(MultipleRowsFound):
        maybe.maybe(db)
    with pytest.raises(QueryError, match="declared :one"):
        one.many(db)
    missing = bind(qf, "nope", int)
    with pytest.raises(QueryError, match="no query named 'nope'"):
        missing.one(db)


def test_postgres_error_points_at_file_and_line(db: psycopg.Connection) -> None:
    source = "-- name: broken :many\n-- a doc line\nSELECT id,\n       no_such_column\nFROM users\n"
    qf = QueryFile(domain="users", path=load_queries("users").path,
                   queries=parse_sql(source, domain="users", file="sql/users.sql"))
    with pytest.raises(QueryError) as e:
        bind(qf, "broken", int).many(db)
    # the column is on line 4 of the file
    assert e.value.location == "sql/users.sql:4 users.broken"
    assert "no_such_column" in str(e.value) and e.value.sqlstate == "42703"
    assert isinstance(e.value.__cause__, psycopg.errors.UndefinedColumn)
