"""users: every function, good and hostile input, cardinality and error locations."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from datalayer import (
    IntegrityConflict,
    MultipleRowsFound,
    NotFound,
    QueryError,
    User,
    ValidationError,
    sql,
    user_repo,
    verify_password,
)
from datalayer.project import builtin_sql_dir


def _new(db: psycopg.Connection, name: str | None = None, **kw: object) -> User:
    name = name or f"u_{uuid.uuid4().hex[:10]}"
    return user_repo.create(db, username=name, email=f"{name}@Example.com", hashed_password="h$x", **kw)  # type: ignore[arg-type]


def test_create_and_read_back(db: psycopg.Connection) -> None:
    u = _new(db, "alice")
    assert u.id > 0
    assert (u.username, u.email, u.is_active) == ("alice", "alice@Example.com", True)  # as typed
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
    assert again is not None and (again.email, again.username) == ("ERIN2@Example.com", "erin2")
    assert user_repo.get_by_email(db, "erin2@example.com") == again
    assert user_repo.get_by_email(db, "erin@example.com") is None  # the old key went with the old address
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
    with pytest.raises(ValidationError) as e:
        user_repo.get_by_username(db, "nul\x00")
    assert "NUL" in e.value.errors["username"]
    _new(db)
    assert user_repo.count(db) == 1


def _adhoc(tmp_path: Any, name: str, source: str) -> sql.QueryFile:
    """``sql/<name>.sql`` of a throwaway project holding ``source``."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'adhoc'\n")
    (tmp_path / "sql").mkdir(exist_ok=True)
    (tmp_path / "sql" / f"{name}.sql").write_text(source)
    return sql.load(tmp_path / "sql" / f"{name}.sql")


def test_cardinality_errors_name_the_query(db: psycopg.Connection, tmp_path: Any) -> None:
    qf = _adhoc(tmp_path, "users",
                "-- name: all_one :one\nSELECT id FROM users\n\n-- name: all_maybe :maybe\nSELECT id FROM users\n")
    one = qf.bind("all_one", int)
    maybe = qf.bind("all_maybe", int)
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
    missing = qf.bind("nope", int)
    with pytest.raises(QueryError, match="no query named 'nope'"):
        missing.one(db)


def test_postgres_error_points_at_file_and_line(db: psycopg.Connection, tmp_path: Any) -> None:
    source = "-- name: broken :many\n-- a doc line\nSELECT id,\n       no_such_column\nFROM users\n"
    qf = _adhoc(tmp_path, "users", source)
    with pytest.raises(QueryError) as e:
        qf.bind("broken", int).many(db)
    # the column is on line 4 of the file
    assert e.value.location == "sql/users.sql:4 users.broken"
    assert "no_such_column" in str(e.value) and e.value.sqlstate == "42703"
    assert isinstance(e.value.__cause__, psycopg.errors.UndefinedColumn)


# --- item 7: arguments checked like every other repository ---------------------------------------------

@pytest.mark.parametrize("bad", [None, 7, "1,2", b"12", {1: 1}, [1, None], [0], [True], [2**63]])
def test_get_many_refuses_what_is_not_a_list_of_ids(db: psycopg.Connection, bad: object) -> None:
    with pytest.raises(ValidationError) as e:
        user_repo.get_many(db, bad)  # type: ignore[arg-type]
    assert "ids" in e.value.errors


def test_get_many_caps_ids_like_the_other_repositories(db: psycopg.Connection) -> None:
    assert user_repo.get_many(db, list(range(1, 10_001))) == []
    with pytest.raises(ValidationError, match="at most 10,000 ids"):
        user_repo.get_many(db, list(range(1, 10_002)))


@pytest.mark.parametrize("bad", [None, "yes", 1])
def test_is_active_filters_are_checked_everywhere(db: psycopg.Connection, bad: object) -> None:
    for call in (lambda: user_repo.count(db, is_active=bad), lambda: user_repo.find(db, is_active=bad),  # type: ignore[arg-type]
                 lambda: user_repo.create(db, username="flag", email="f@example.com", hashed_password="h",
                                          is_active=bad)):  # type: ignore[arg-type]
        if bad is None:
            continue
        with pytest.raises(ValidationError) as e:
            call()
        assert "is_active" in e.value.errors


def test_async_connection_is_a_clear_error(datalayer_server: Any, dl_pool: Any, recwarn: pytest.WarningsRecorder,
                                           tmp_path: Any) -> None:
    import asyncio

    from datalayer import DataLayerError, data_analysis_repo

    async def main() -> list[DataLayerError]:
        errors: list[DataLayerError] = []
        async with await psycopg.AsyncConnection.connect(dl_pool.target.conninfo(), autocommit=True) as adb:
            for call in (lambda: user_repo.get_by_id(adb, 1), lambda: user_repo.count(adb),  # type: ignore[arg-type]
                         lambda: user_repo.create(adb, username="asy", email="a@example.com",  # type: ignore[arg-type]
                                                  hashed_password="h"),
                         lambda: data_analysis_repo.get_many(adb, [1])):  # type: ignore[arg-type]
                with pytest.raises(ValidationError) as e:
                    call()
                errors.append(e.value)
        return errors

    errors = asyncio.run(main())
    assert all("must be a psycopg.Connection, got AsyncConnection" in e.errors["db"]
               and "datalayer.aio for async code" in e.errors["db"] for e in errors)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # no un-awaited coroutine
    copy = _adhoc(tmp_path, "system_log", "-- name: copy_tmp :copy\nCOPY pg_temp.h1_copy (t) FROM STDIN\n").bind(
        "copy_tmp")
    for not_a_connection in (None, "postgresql://x"):
        for call in (lambda: user_repo.get_by_id(not_a_connection, 1),  # type: ignore[arg-type]
                     lambda: user_repo.create(not_a_connection, username="nah", email="n@example.com",  # type: ignore[arg-type]
                                              hashed_password="h"),
                     lambda: copy.copy(not_a_connection, [("x",)])):  # type: ignore[arg-type]
            with pytest.raises(ValidationError) as e:
                call()
            assert "must be a psycopg.Connection" in e.value.errors["db"]


# --- item 2: one identity key, computed in Python, stored, unique, looked up by equality -----------------

def test_dotted_capital_i_is_not_another_users_address(db: psycopg.Connection) -> None:
    plain = user_repo.create(db, username="plain_i", email="ix@example.com", hashed_password="h")
    dotted = user_repo.create(db, username="dotted_i", email="İx@example.com", hashed_password="h")
    assert dotted.email == "İx@example.com"  # kept as typed: the only address mail may go to
    assert user_repo.get_by_email(db, "İx@example.com") == dotted
    assert user_repo.get_by_email(db, "ix@example.com") == plain
    assert user_repo.get_by_email(db, "IX@EXAMPLE.COM") == plain


@pytest.mark.parametrize(("first", "look_alike"), [
    ("ren\u00e9@example.com", "rene\u0301@example.com"),       # NFC vs NFD
    ("ann@example.com", "\uff41\uff4e\uff4e@example.com"),                  # fullwidth letters
    ("ann@example.com", "ann@\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com"),               # fullwidth domain
    ("ann@example.com", "Ann@Example.com."),                   # trailing dot on the domain
    ("ann@straße.de", "ANN@xn--strae-oqa.de"),                 # the same IDN domain, A-label
])
def test_look_alikes_are_one_account(db: psycopg.Connection, first: str, look_alike: str) -> None:
    u = user_repo.create(db, username="first", email=first, hashed_password="h")
    assert user_repo.get_by_email(db, look_alike) == u
    with pytest.raises(IntegrityConflict) as e:
        user_repo.create(db, username="second", email=look_alike, hashed_password="h")
    assert e.value.field == "email" and e.value.constraint == "users_email_key_key"
    other = user_repo.create(db, username="third", email="third@example.com", hashed_password="h")
    with pytest.raises(IntegrityConflict) as e:
        user_repo.update(db, other.id, email=look_alike)
    assert e.value.field == "email"


@pytest.mark.parametrize("invisible", ["\u200b", "\u00ad", "\u200d", "\ufeff", "\u2060", "\u034f", "\ufe0f",
                                       "\U000e0100", "\u3164", "\uffa0", "\u115f", "\u17b4", "\u180b", "\u2800"])
def test_invisible_characters_are_refused(db: psycopg.Connection, invisible: str) -> None:
    with pytest.raises(ValidationError) as e:
        user_repo.create(db, username="inv", email=f"an{invisible}n@example.com", hashed_password="h")
    assert "invisible" in e.value.errors["email"]
    assert user_repo.count(db) == 0


def test_sharp_s_domains_and_local_parts_stay_distinct(db: psycopg.Connection) -> None:
    a = user_repo.create(db, username="sharp", email="x@straße.de", hashed_password="h")
    b = user_repo.create(db, username="double_s", email="x@strasse.de", hashed_password="h")
    c = user_repo.create(db, username="local_sharp", email="straße@example.com", hashed_password="h")
    d = user_repo.create(db, username="local_ss", email="strasse@example.com", hashed_password="h")
    assert len({a.id, b.id, c.id, d.id}) == 4
    assert user_repo.get_by_email(db, "X@STRASSE.DE") == b and user_repo.get_by_email(db, "x@straße.de") == a
    assert user_repo.get_by_email(db, "STRAßE@example.com") == c


def test_no_lower_in_sql_for_email() -> None:
    users_sql = sql.load(builtin_sql_dir() / "users.sql")
    assert "lower(" not in users_sql.queries["get_by_email"].sql.lower()
    assert "email_key =" in users_sql.queries["get_by_email"].sql


# --- the 0005 migration: keys for existing rows, computed first; a collision changes nothing -------------

@pytest.fixture
def at_0004(datalayer_server: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty database migrated up to (not including) 0005, and a switch to the full migrations."""
    import os
    import shutil

    from datalayer import project as project_mod
    from datalayer import setup_database
    from datalayer.testing import settings_for_tests

    full = project_mod.builtin_migrations_dir()
    old = tmp_path / "migrations"
    old.mkdir()
    for f in full.iterdir():
        if f.is_file() and (not f.name[:4].isdigit() or f.name[:4] < "0005"):
            shutil.copy(f, old / f.name)
    name = f"dl_h1_email_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    janitor = datalayer_server.janitor(name)
    with janitor:
        target = datalayer_server.target_for(name)
        monkeypatch.setattr(project_mod, "builtin_migrations_dir", lambda: old)
        setup_database(target=target, settings=settings_for_tests())
        monkeypatch.setattr(project_mod, "builtin_migrations_dir", lambda: full)
        yield target


def _users(target: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(target.conninfo()) as c:
        return c.execute("SELECT * FROM users ORDER BY id").fetchall()


def _email_indexes(target: Any) -> set[str]:
    with psycopg.connect(target.conninfo()) as c:
        rows = c.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'users' AND indexname LIKE 'users_email%'")
        return {r[0] for r in rows.fetchall()}


def test_migration_refuses_colliding_rows_and_changes_nothing(at_0004: Any) -> None:
    from datalayer import MigrationError, migration_status, setup_database
    from datalayer.testing import settings_for_tests

    with psycopg.connect(at_0004.conninfo(), autocommit=True) as c:
        ids = [c.execute("INSERT INTO users (username, email, hashed_password) VALUES (%s, %s, 'h') RETURNING id",
                         (u, e)).fetchone()[0]
               for u, e in [("nfc", "ren\u00e9@example.com"), ("nfd", "rene\u0301@example.com"),
                            ("withdot", "ann@example.com."), ("nodot", "Ann@Example.com"), ("alone", "alone@example.com"),
                            ("zwsp", "z\u200bw@example.com")]]
    before, indexes = _users(at_0004), _email_indexes(at_0004)
    with pytest.raises(MigrationError) as e:
        setup_database(target=at_0004, settings=settings_for_tests())
    msg = str(e.value)
    assert "changed nothing" in msg
    assert f"users {ids[0]}, {ids[1]}" in msg and f"users {ids[2]}, {ids[3]}" in msg
    assert f"user {ids[5]}: must not contain invisible" in msg
    assert f"user {ids[4]}" not in msg and f", {ids[4]}" not in msg  # the innocent account is not named
    assert _users(at_0004) == before and _email_indexes(at_0004) == indexes == {"users_email_lower_key"}
    assert not {s.id: s for s in migration_status(target=at_0004, settings=settings_for_tests())}[
        "0005.users-email-key"].applied

    # resolve the accounts, and it applies: every row gets its key, the old lower() index is gone
    with psycopg.connect(at_0004.conninfo(), autocommit=True) as c:
        c.execute("DELETE FROM users WHERE id = ANY(%s)", ([ids[1], ids[2], ids[5]],))
    assert "0005.users-email-key" in setup_database(target=at_0004, settings=settings_for_tests())
    with psycopg.connect(at_0004.conninfo()) as c:
        keys = c.execute("SELECT email, email_key FROM users ORDER BY id").fetchall()
        nullable = c.execute("SELECT is_nullable FROM information_schema.columns "
                             "WHERE table_name = 'users' AND column_name = 'email_key'").fetchone()
        ledger = c.execute("SELECT sha256 FROM datalayer_migration_ledger "
                           "WHERE migration_id = '0005.users-email-key'").fetchone()
    assert keys == [("ren\u00e9@example.com", "ren\u00e9@example.com"), ("Ann@Example.com", "ann@example.com"),
                    ("alone@example.com", "alone@example.com")]
    assert nullable == ("NO",) and ledger is not None  # the ledger covers Python migrations
    assert _email_indexes(at_0004) == {"users_email_key_key"}


def test_migration_rolls_back_and_applies_again(at_0004: Any) -> None:
    from yoyo import read_migrations

    from datalayer import migrate as migrate_mod
    from datalayer import setup_database
    from datalayer.project import builtin_migrations_dir
    from datalayer.testing import settings_for_tests

    s = settings_for_tests()
    with psycopg.connect(at_0004.conninfo(), autocommit=True) as c:
        c.execute("INSERT INTO users (username, email, hashed_password) VALUES ('keep', 'Keep@Example.com', 'h')")
    setup_database(target=at_0004, settings=s)
    backend = migrate_mod.yoyo_backend(at_0004)
    try:
        with backend.lock():
            mine = read_migrations(str(builtin_migrations_dir())).filter(lambda m: m.id == "0005.users-email-key")
            backend.rollback_migrations(mine)
    finally:
        backend.connection.close()
    assert _email_indexes(at_0004) == {"users_email_lower_key"}
    assert setup_database(target=at_0004, settings=s) == ["0005.users-email-key"]
    assert _email_indexes(at_0004) == {"users_email_key_key"}


def test_an_edited_python_migration_is_refused(at_0004: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from datalayer import MigrationError, migration_status, setup_database
    from datalayer import project as project_mod
    from datalayer._ledger import file_hashes
    from datalayer.testing import settings_for_tests

    s = settings_for_tests()
    setup_database(target=at_0004, settings=s)
    copy = tmp_path / "edited"
    shutil.copytree(project_mod.builtin_migrations_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert "0005.users-email-key" in file_hashes(copy) and not any(k.startswith("post-apply") for k in file_hashes(copy))
    path = copy / "0005.users-email-key.py"
    path.write_text(path.read_text() + "\n# an innocent-looking edit\n")
    monkeypatch.setattr(project_mod, "builtin_migrations_dir", lambda: copy)
    states = {st.id: st for st in migration_status(target=at_0004, settings=s)}
    assert states["0005.users-email-key"].changed
    with pytest.raises(MigrationError, match="0005.users-email-key changed since it was applied"):
        setup_database(target=at_0004, settings=s)


@pytest.mark.parametrize("other_spelling", ['"ann"@example.com', "(c)ann@example.com", "ann(c)@example.com",
                                            '""@example.com', "a\u034fnn@example.com", "ann\ufe0f@example.com"])
def test_other_spellings_of_a_mailbox_are_no_second_account(db: psycopg.Connection, other_spelling: str) -> None:
    # RFC 5322 quoting and comments, or an invisible character, would name ann's mailbox (or read as it).
    victim = user_repo.create(db, username="victim", email="Ann@Example.com", hashed_password="h")
    with pytest.raises(ValidationError) as e:
        user_repo.create(db, username="second", email=other_spelling, hashed_password="h")
    assert list(e.value.errors) == ["email"]
    with pytest.raises(ValidationError):
        user_repo.update(db, victim.id, email=other_spelling)
    rows = db.execute("SELECT username, email FROM users ORDER BY id").fetchall()
    assert rows == [("victim", "Ann@Example.com")], "nothing half-written"
