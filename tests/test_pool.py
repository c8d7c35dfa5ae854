"""Connections, transactions with hooks and savepoints, and both get_db idioms."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import wait_idle

from datalayer import (
    ConfigError,
    Connection,
    DataLayerError,
    IntegrityConflict,
    PoolExhausted,
    TransientError,
    connection,
    get_db,
    on_commit,
    on_rollback,
    set_default_pool,
    transaction,
    user_repo,
)
from datalayer.config import DatabaseTarget
from datalayer.pool import DataLayerPool, open_pool
from datalayer.testing import settings_for_tests
from datalayer.transactions import current_transaction, in_transaction


def _user(db: Any, name: str | None = None) -> Any:
    name = name or f"u{uuid.uuid4().hex[:10]}"
    return user_repo.create(db, username=name, email=f"{name}@example.com", hashed_password="h")


def test_connection_is_autocommit_utc_and_named(dl_pool: DataLayerPool) -> None:
    with connection() as db:
        assert db.autocommit
        assert db.execute("SHOW TimeZone").fetchone() == ("UTC",)
        assert db.execute("SHOW application_name").fetchone() == ("datalayer",)
        _user(db, "auto")
    # committed by itself: visible from another connection
    with connection() as other:
        assert user_repo.get_by_username(other, "auto") is not None


def test_transaction_commits_and_runs_hooks_after(dl_pool: DataLayerPool) -> None:
    events: list[str] = []
    with connection() as db:
        with transaction(db):
            _user(db, "tx1")
            on_commit(lambda: events.append("committed"))
            on_rollback(lambda: events.append("rolled back"))
            assert events == []
            assert in_transaction(db) and current_transaction() is db
        assert events == ["committed"]
        assert not in_transaction(db) and current_transaction() is None
        assert user_repo.get_by_username(db, "tx1") is not None


def test_transaction_rolls_back_on_error(dl_pool: DataLayerPool) -> None:
    events: list[str] = []
    with connection() as db:
        with pytest.raises(RuntimeError), transaction(db):
            _user(db, "tx2")
            on_commit(lambda: events.append("committed"))
            on_rollback(lambda: events.append("rolled back"))
            raise RuntimeError("boom")
        assert events == ["rolled back"]
        assert user_repo.get_by_username(db, "tx2") is None


def test_nothing_half_written_on_integrity_error(dl_pool: DataLayerPool) -> None:
    with connection() as db:
        with pytest.raises(IntegrityConflict), transaction(db):
            _user(db, "first")
            _user(db, "first")
        assert user_repo.count(db) == 0


def test_a_caught_repository_error_is_never_committed_silently(dl_pool: DataLayerPool) -> None:
    """COMMIT of a transaction a caught error aborted is a ROLLBACK: the block raises, no commit hook runs."""
    from datalayer import QueryError

    events: list[str] = []
    with connection() as db:
        with pytest.raises(QueryError, match="caught inside the block") as e, transaction(db):
            _user(db, "kept")
            on_commit(lambda: events.append("committed"))
            on_rollback(lambda: events.append("rolled back"))
            with contextlib.suppress(IntegrityConflict):
                _user(db, "kept")
        assert e.value.sqlstate == "25P02"
        assert events == ["rolled back"] and user_repo.count(db) == 0
        with transaction(db):  # the savepoint idiom keeps the rest
            _user(db, "one")
            with contextlib.suppress(IntegrityConflict), transaction(db):
                _user(db, "one")
            _user(db, "two")
        assert user_repo.count(db) == 2


@pytest.mark.parametrize("then", ["statement", "commit"])
def test_a_session_ended_for_idling_in_a_transaction_is_transient(dl_pool: DataLayerPool, then: str) -> None:
    """IDLE_IN_TRANSACTION_TIMEOUT ends the session (25P03): nothing committed, safe to retry (a 503, not a 500)."""
    import time

    from datalayer import CommitUnknown, TransientError

    events: list[str] = []
    with connection() as db:
        with pytest.raises(TransientError) as e, transaction(db):
            db.execute("SET LOCAL idle_in_transaction_session_timeout = '100ms'")
            _user(db, "idler")
            on_rollback(lambda: events.append("rolled back"))
            time.sleep(0.5)
            if then == "statement":
                _user(db, "idler2")
        assert not isinstance(e.value, CommitUnknown)
        assert events == ["rolled back"]
    with connection() as db:
        assert user_repo.count(db) == 0


def test_savepoints_drop_their_hooks_on_rollback(dl_pool: DataLayerPool) -> None:
    events: list[str] = []
    with connection() as db, transaction(db):
        _user(db, "outer")
        with pytest.raises(ValueError), transaction(db):
            _user(db, "inner_lost")
            on_commit(lambda: events.append("inner-lost commit"))
            on_rollback(lambda: events.append("inner rollback"))
            raise ValueError
        with transaction(db):
            _user(db, "inner_kept")
            on_commit(lambda: events.append("inner-kept commit"))
        assert events == ["inner rollback"]
    assert events == ["inner rollback", "inner-kept commit"]
    with connection() as db:
        names = {u.username for u in user_repo.find(db).items}
    assert names == {"outer", "inner_kept"}


def test_released_savepoint_hooks_die_with_outer_rollback(dl_pool: DataLayerPool) -> None:
    events: list[str] = []
    with connection() as db, pytest.raises(KeyError), transaction(db):
        with transaction(db):
            on_commit(lambda: events.append("commit"))
            on_rollback(lambda: events.append("rollback"))
        raise KeyError
    assert events == ["rollback"]


def test_explicit_rollback(dl_pool: DataLayerPool) -> None:
    events: list[str] = []
    with connection() as db:
        with transaction(db):
            _user(db, "gone")
            on_rollback(lambda: events.append("rollback"))
            raise psycopg.Rollback
        assert events == ["rollback"]
        assert user_repo.get_by_username(db, "gone") is None


def test_on_commit_outside_transaction_runs_now() -> None:
    events: list[str] = []
    on_commit(lambda: events.append("now"))
    on_rollback(lambda: events.append("never"))
    assert events == ["now"]


def test_failing_hook_does_not_break_the_commit(dl_pool: DataLayerPool, caplog: pytest.LogCaptureFixture) -> None:
    def bad() -> None:
        raise RuntimeError("hook failed")

    with connection() as db:
        with transaction(db):
            _user(db, "kept")
            on_commit(bad)
        assert user_repo.get_by_username(db, "kept") is not None
    assert "hook" in caplog.text


def test_transaction_without_db_borrows_one(dl_pool: DataLayerPool) -> None:
    with transaction() as db:
        _user(db, "borrowed")
        assert in_transaction(db)
    with connection() as db:
        assert user_repo.get_by_username(db, "borrowed") is not None


def test_get_db_fastapi_style(dl_pool: DataLayerPool) -> None:
    # What FastAPI's Depends does with a generator dependency.
    gen = get_db()
    db = next(gen)
    _user(db, "fastapi")
    with pytest.raises(StopIteration):
        next(gen)
    wait_idle(dl_pool)
    # and with an exception thrown into it
    gen = get_db()
    db = next(gen)
    with pytest.raises(ValueError):
        gen.throw(ValueError("handler failed"))
    wait_idle(dl_pool)


def test_get_db_seed_idiom_keeps_connection_until_dropped(dl_pool: DataLayerPool) -> None:
    db = next(get_db())  # the generator is gone already
    assert not db.closed
    # nobody else gets this connection while we hold it
    with connection() as other:
        assert other is not db
        other_pid = other.info.backend_pid
    assert db.info.backend_pid != other_pid
    u = _user(db, "seed")
    assert user_repo.get_by_id(db, u.id) == u
    with transaction(db):
        _user(db, "seed2")
    del db
    gc.collect()
    wait_idle(dl_pool)


def test_get_db_seed_idiom_does_not_leak(dl_pool: DataLayerPool) -> None:
    for i in range(3 * dl_pool.max_size):
        db = next(get_db())
        _user(db, f"loop{i}")
        del db
    wait_idle(dl_pool)
    with connection() as db:
        assert user_repo.count(db) == 3 * dl_pool.max_size


def test_wrong_database_is_a_clear_config_error(datalayer_server: Any) -> None:
    bad = DatabaseTarget(params={**datalayer_server.target.params, "dbname": "no_such_db_xyz"})
    with pytest.raises(ConfigError, match="no_such_db_xyz.*check DATABASE_URL") as e:
        open_pool(settings_for_tests(), target=bad)
    assert e.value.variable == "DATABASE_URL"


def test_unreachable_server_is_transient_and_quick() -> None:
    target = DatabaseTarget(params={"host": "127.0.0.1", "port": "1", "dbname": "x", "user": "u"})
    t0 = time.monotonic()
    with pytest.raises(TransientError, match="cannot connect to postgresql://u@127.0.0.1:1/x"):
        open_pool(settings_for_tests(), target=target)
    assert time.monotonic() - t0 < 5


def test_every_error_is_a_datalayer_error(db: Any) -> None:
    with pytest.raises(DataLayerError):
        user_repo.create(db, username="x", email="y", hashed_password="z")


def test_a_returned_connection_is_lent_again_as_it_was_first_lent(dl_pool: DataLayerPool) -> None:
    # One connection, so the second caller gets exactly what the first left behind.
    pool = open_pool(settings_for_tests(pool_size=1, pool_min_size=1, max_overflow=0), target=dl_pool.target, wait=True)
    try:
        with connection(pool) as db:
            before = db.execute("SELECT current_user, current_setting('search_path'), "
                                "current_setting('statement_timeout')").fetchone()
            db.autocommit = False  # careless: switched off and returned
            db.read_only = True
        with connection(pool) as db:
            assert db.autocommit is True and db.read_only is None
            user = user_repo.create(db, username="kept", email="kept@example.com", hashed_password="h")
        with connection(pool) as db:  # the write was committed, not rolled back at the return
            assert user_repo.get_by_id(db, user.id) == user
            db.execute(f"CREATE ROLE dl_reset_probe_{os.getpid()} NOLOGIN")
        try:
            with connection(pool) as db:
                db.execute(f"SET ROLE dl_reset_probe_{os.getpid()}")
                db.execute("SET search_path = pg_temp, public")
                db.execute("SET statement_timeout = 0")
                db.execute("CREATE TEMP TABLE users (id int)")
                db.execute("SELECT pg_advisory_lock(4242)")
            with connection(pool) as db:
                after = db.execute("SELECT current_user, current_setting('search_path'), "
                                   "current_setting('statement_timeout')").fetchone()
                assert after == before
                assert user_repo.count(db) == 1  # the real table, not the caller's temporary one
                assert db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                  "AND pid = pg_backend_pid()").fetchone() == (0,)
        finally:
            with connection(pool) as db:
                db.execute(f"DROP ROLE dl_reset_probe_{os.getpid()}")
    finally:
        pool.close()


def _requests(pool: DataLayerPool, handler: Any, n: int = 8) -> list[BaseException | None]:
    """``n`` concurrent requests through FastAPI's generator-dependency protocol for ``Depends(get_db)``,
    each running ``handler(db)`` while all of them hold their connection."""
    barrier = threading.Barrier(n, timeout=30)
    outcome: list[BaseException | None] = [None] * n

    def request(i: int) -> None:
        gen = get_db()
        try:
            db = next(gen)
            barrier.wait()  # every request holds its connection now
            handler(db)
        except BaseException as e:
            outcome[i] = e
            gen.close()
            return
        with contextlib.suppress(StopIteration):
            next(gen)

    previous = set_default_pool(pool)
    try:
        threads = [threading.Thread(target=request, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        set_default_pool(previous)
    return outcome


def test_transaction_on_the_requests_connection_takes_no_second_slot(dl_pool: DataLayerPool) -> None:
    # POOL_SIZE=4 + MAX_OVERFLOW=4: 8 requests fit when each takes one slot, as the README's pattern does.
    pool = open_pool(settings_for_tests(pool_size=4, max_overflow=4, pool_timeout=2.0), target=dl_pool.target)
    pids: set[int] = set()
    try:

        def handler(db: Connection) -> None:
            with transaction(db) as tx:
                assert tx is db and in_transaction(db)
                _user(tx)
                with transaction(db):  # nested on the same connection: a savepoint, still one slot
                    pids.add(tx.info.backend_pid)

        assert _requests(pool, handler) == [None] * 8
        assert len(pids) == 8 and pool.get_stats()["pool_size"] <= 8
        with connection(pool) as db:
            assert user_repo.count(db) == 8
    finally:
        pool.close()


def test_transaction_without_the_requests_connection_takes_a_second_slot(dl_pool: DataLayerPool) -> None:
    # What the pattern above avoids: transaction() borrows another connection, and 8 requests need 16.
    pool = open_pool(settings_for_tests(pool_size=4, max_overflow=4, pool_timeout=1.0), target=dl_pool.target)
    try:

        def handler(db: Connection) -> None:
            with transaction() as tx:
                _user(tx)

        outcome = _requests(pool, handler)
        assert any(isinstance(e, PoolExhausted) for e in outcome), outcome
    finally:
        pool.close()


def test_a_lease_and_its_connection_are_one_transaction(dl_pool: DataLayerPool) -> None:
    db = next(get_db())
    conn = object.__getattribute__(db, "_dl_conn")  # the pooled connection the lease stands for
    events: list[str] = []
    with transaction(db):
        assert in_transaction(conn)
        with transaction(conn):  # a savepoint of the lease's transaction, not a second outermost one
            on_commit(lambda: events.append("committed"), conn)
        assert events == []  # waits for the outermost COMMIT
    assert events == ["committed"]
    del db, conn
    gc.collect()
    wait_idle(dl_pool)


def test_transaction_types_reach_the_caller(tmp_path: Path) -> None:
    source = tmp_path / "typed.py"
    source.write_text(
        "from datalayer import Connection, get_db, transaction\n"
        "def handler(db: Connection) -> None:\n"
        "    with transaction(db) as tx:\n"
        "        reveal_type(tx)\n"
        "    with transaction() as own:\n"
        "        reveal_type(own)\n"
        "    for lent in get_db():\n"
        "        reveal_type(lent)\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"),
         str(source)],
        cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=600, check=False,
    )
    revealed = re.findall(r'Revealed type is "([^"]+)"', r.stdout)
    assert revealed == ["datalayer._pooled.DataLayerConnection"] * 3, r.stdout + r.stderr
