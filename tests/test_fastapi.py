"""datalayer.fastapi through HTTP (httpx, FastAPI's TestClient) against the real servers: the request's
connection and unit of work, a COMMIT that fails before the response, the error mapping, health routes,
and an event loop that keeps answering while slow queries run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException
from helpers import url_of, wait_idle
from tcpproxy import TcpProxy

import datalayer.fastapi as dlf
from datalayer import aio, data_analysis_repo, sql, transactions_async, user_repo, validate_user_data
from datalayer.config import DatabaseTarget, Secret, Settings
from datalayer.defaults import get_db, set_default_pool
from datalayer.errors import DataLayerError, IntegrityConflict, NotFound, ValidationError
from datalayer.fastapi import AsyncDb, AsyncTx, Db, Tx, add_exception_handlers, health_router
from datalayer.pool import DataLayerConnection, DataLayerPool, connection, open_pool
from datalayer.pool_async import AsyncDataLayerConnection
from datalayer.testing import settings_for_tests
from datalayer.transactions import current_transaction, in_transaction, on_commit

SECRET = "sk-live-7f3a9c1e55d04b2b"  # an API key: a parameter NotFound's message shows (not a known secret name)
PASSWORD = "Pw-in-the-dsn-91c7e"

QUERIES = """\
-- name: by_api_key :one
SELECT id FROM users WHERE username = :'api_key'

-- name: usernames :many
SELECT username FROM users

-- name: put_short :exec
INSERT INTO fa_short (v) VALUES (:'v')

-- name: broken :many
SELECT no_such_column FROM users WHERE username = :'api_key'
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def queries(tmp_path: Path) -> sql.QueryFile:
    path = tmp_path / "fa.sql"
    path.write_text(QUERIES)
    return sql.load(path)


def _deferred_table(db: DataLayerConnection) -> None:
    # Checked at COMMIT only: the statements succeed, the COMMIT fails.
    db.execute("CREATE TABLE fa_deferred (k int, CONSTRAINT fa_deferred_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)")


def _rows(db: DataLayerConnection, table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _aclient(app: FastAPI) -> httpx.AsyncClient:
    # An unhandled error becomes the 500 a server would send, instead of being raised into the test.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url="http://t")


class _Client:
    """httpx through the ASGI transport for sync tests (FastAPI's TestClient warns about httpx, and
    warnings are errors here): each request runs on an event loop of its own."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get(self, path: str) -> httpx.Response:
        return self._send("GET", path)

    def post(self, path: str) -> httpx.Response:
        return self._send("POST", path)

    def _send(self, method: str, path: str) -> httpx.Response:
        async def send() -> httpx.Response:
            async with _aclient(self.app) as client:
                return await client.request(method, path)

        return anyio.run(send)


def _client(app: FastAPI, *, handlers: bool = True) -> _Client:
    if handlers:
        add_exception_handlers(app)
    return _Client(app)


@pytest.fixture
def one_slot(dl_pool: DataLayerPool) -> Iterator[DataLayerPool]:
    """The default pool for the test: one connection at most, so a second checkout is PoolExhausted."""
    pool = open_pool(
        settings_for_tests(pool_size=1, pool_min_size=1, max_overflow=0, pool_timeout=5.0),
        target=dl_pool.target,
        wait=True,
    )
    previous = set_default_pool(pool)
    try:
        yield pool
    finally:
        set_default_pool(previous)
        pool.close()


async def _aio_pool(target: DatabaseTarget, pool_timeout: float) -> Any:
    return await aio.open_pool(
        settings_for_tests(pool_size=1, pool_min_size=1, max_overflow=0, pool_timeout=pool_timeout),
        target=target,
        wait=True,
    )


@pytest.fixture
async def aone_slot(adl_pool: Any) -> AsyncIterator[Any]:
    """``datalayer.aio``'s default pool for the test: one connection at most."""
    pool = await _aio_pool(adl_pool.target, 5.0)
    previous = aio.set_default_pool(pool)
    try:
        yield pool
    finally:
        aio.set_default_pool(previous)
        await pool.close()


def test_public_api() -> None:
    assert dlf.__all__ == sorted(dlf.__all__)
    for name in dlf.__all__:
        assert getattr(dlf, name) is not None, name


# -- sync handlers: Db and Tx --


def test_sync_db_and_tx_share_one_slot_and_commit(one_slot: DataLayerPool, db: DataLayerConnection) -> None:
    app = FastAPI()
    committed: list[int] = []

    @app.post("/users/{name}")
    def create(name: str, conn: Db, tx: Tx) -> dict[str, Any]:
        assert tx is conn  # one connection: the pool has a single slot, a second checkout would fail
        assert in_transaction(tx) and current_transaction() is tx
        user = user_repo.create(tx, username=name, email=f"{name}@example.com", hashed_password="h")
        on_commit(lambda: committed.append(user.id))  # no db: the request's unit of work is current
        assert user.id not in committed  # not yet: after the COMMIT
        return {"id": user.id}

    with _client(app) as client:
        r = client.post("/users/ann")
        assert r.status_code == 200, r.text
        assert committed == [r.json()["id"]]
        assert user_repo.get_by_id(db, r.json()["id"]) is not None
        for i in range(3):  # the slot came back each time
            assert client.post(f"/users/bob{i}").status_code == 200
    wait_idle(one_slot)


def test_sync_tx_rolls_back_when_the_handler_raises(dl_pool: DataLayerPool, db: DataLayerConnection) -> None:
    app = FastAPI()

    @app.post("/users/{name}")
    def create(name: str, tx: Tx) -> None:
        user_repo.create(tx, username=name, email=f"{name}@example.com", hashed_password="h")
        raise HTTPException(status_code=418, detail="changed my mind")

    with _client(app) as client:
        r = client.post("/users/ann")
    assert r.status_code == 418
    assert user_repo.get_by_username(db, "ann") is None


@pytest.mark.parametrize("handlers", [True, False])
def test_sync_failing_commit_is_never_a_200(dl_pool: DataLayerPool, db: DataLayerConnection, handlers: bool) -> None:
    _deferred_table(db)
    app = FastAPI()
    ran: list[bool] = []

    @app.post("/twice")
    def twice(tx: Tx) -> dict[str, str]:
        tx.execute("INSERT INTO fa_deferred VALUES (1), (1)")  # fine until COMMIT
        ran.append(True)
        return {"status": "saved"}

    with _client(app, handlers=handlers) as client:
        r = client.post("/twice")
    assert ran == [True]
    if handlers:
        assert r.status_code == 409, r.text
        assert r.json()["field"] == "k"
    else:
        assert r.status_code == 500
    assert "saved" not in r.text
    assert _rows(db, "fa_deferred") == 0


def test_sync_pool_exhausted_is_503_without_the_dsn(dl_pool: DataLayerPool) -> None:
    # A DSN with a password: the server's own (embedded), else one a trusting server ignores.
    password = dl_pool.target.password or Secret(PASSWORD)
    url = url_of(DatabaseTarget(params=dl_pool.target.params, password=password))
    target = Settings.from_env({"DATABASE_URL": url}).database
    assert isinstance(target, DatabaseTarget) and target.password == password
    p = target.params
    pool = open_pool(
        settings_for_tests(pool_size=1, pool_min_size=1, max_overflow=0, pool_timeout=0.3), target=target, wait=True
    )
    previous = set_default_pool(pool)
    app = FastAPI()

    @app.get("/read")
    def read(conn: Db) -> int:
        return 1

    try:
        with _client(app) as client, connection(pool):  # the only slot is taken
            r = client.get("/read")
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            for leak in (password.value, p["dbname"], "max_size", "POOL_TIMEOUT"):
                assert leak not in r.text
            assert client.get("/read").status_code == 503
        with _client(app) as client:  # slot free again
            assert client.get("/read").status_code == 200
    finally:
        set_default_pool(previous)
        pool.close()


# -- async handlers: AsyncDb and AsyncTx --


@pytest.mark.anyio
async def test_async_db_and_tx_share_one_slot_and_commit(aone_slot: Any, db: DataLayerConnection) -> None:
    app = FastAPI()
    committed: list[int] = []

    @app.post("/users/{name}")
    async def create(name: str, conn: AsyncDb, tx: AsyncTx) -> dict[str, Any]:
        assert tx is conn
        assert aio.in_transaction(tx) and transactions_async.current_transaction() is tx
        user = await aio.user_repo.create(tx, username=name, email=f"{name}@example.com", hashed_password="h")
        await aio.on_commit(lambda: committed.append(user.id))
        assert user.id not in committed
        return {"id": user.id}

    @app.get("/users/{user_id}")
    async def read(user_id: int, conn: AsyncDb) -> dict[str, Any]:
        user = await aio.user_repo.get_by_id(conn, user_id)
        return {"name": user.username if user else None}

    async with _aclient(app) as client:
        add_exception_handlers(app)
        r = await client.post("/users/ann")
        assert r.status_code == 200, r.text
        user_id = r.json()["id"]
        assert committed == [user_id]
        assert (await client.get(f"/users/{user_id}")).json() == {"name": "ann"}
        # Four at once on one slot: each request holds one connection, so they queue instead of failing.
        rs = await asyncio.gather(*(client.get(f"/users/{user_id}") for _ in range(4)))
        assert [x.status_code for x in rs] == [200] * 4
    assert user_repo.get_by_id(db, user_id) is not None


@pytest.mark.anyio
async def test_async_tx_rolls_back_when_the_handler_raises(adl_pool: Any, db: DataLayerConnection) -> None:
    app = FastAPI()
    rolled_back: list[bool] = []

    @app.post("/users/{name}")
    async def create(name: str, tx: AsyncTx) -> None:
        await aio.user_repo.create(tx, username=name, email=f"{name}@example.com", hashed_password="h")
        await aio.on_rollback(lambda: rolled_back.append(True))
        raise HTTPException(status_code=418, detail="changed my mind")

    async with _aclient(app) as client:
        r = await client.post("/users/ann")
    assert r.status_code == 418
    assert rolled_back == [True]
    assert user_repo.get_by_username(db, "ann") is None


@pytest.mark.anyio
@pytest.mark.parametrize("handlers", [True, False])
async def test_async_failing_commit_is_never_a_200(adl_pool: Any, db: DataLayerConnection, handlers: bool) -> None:
    _deferred_table(db)
    app = FastAPI()
    if handlers:
        add_exception_handlers(app)
    ran: list[bool] = []

    @app.post("/twice")
    async def twice(tx: AsyncTx) -> dict[str, str]:
        await tx.execute("INSERT INTO fa_deferred VALUES (1), (1)")
        ran.append(True)
        return {"status": "saved"}

    async with _aclient(app) as client:
        r = await client.post("/twice")
    assert ran == [True]
    assert r.status_code == (409 if handlers else 500), r.text
    assert "saved" not in r.text
    assert _rows(db, "fa_deferred") == 0


@pytest.mark.anyio
async def test_event_loop_answers_while_slow_queries_run(adl_pool: Any) -> None:
    app = FastAPI()
    started: list[float] = []
    ended: list[float] = []

    @app.get("/slow")
    async def slow(conn: AsyncDb) -> str:
        started.append(time.monotonic())
        await conn.execute("SELECT pg_sleep(0.2)")
        ended.append(time.monotonic())
        return "slept"

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    async with contextlib.AsyncExitStack() as warm:  # 8 open connections: none of the 8 waits for one
        for _ in range(8):
            await warm.enter_async_context(aio.connection())
    async with _aclient(app) as client:
        await client.get("/ping")  # the app's first request pays for its set-up
        slow_requests = [asyncio.create_task(client.get("/slow")) for _ in range(8)]
        waits = []
        while not all(t.done() for t in slow_requests):  # a ping due every 10 ms all along
            due = time.monotonic() + 0.01
            await asyncio.sleep(0.01)  # a blocked loop wakes late: that delay counts too
            assert (await client.get("/ping")).text == '"pong"'
            waits.append(time.monotonic() - due)
        done = await asyncio.gather(*slow_requests)
    assert [r.status_code for r in done] == [200] * 8
    assert max(waits) < 0.1, waits  # the bar is 20 ms; with a blocked loop a ping waited 1.4 s
    assert len(waits) >= 5, waits
    assert max(started) < min(ended)  # all 8 queries were in flight at once


# -- the error mapping --


def test_validation_error_is_422_with_the_field_errors(
    dl_pool: DataLayerPool, db: DataLayerConnection, queries: sql.QueryFile
) -> None:
    db.execute("CREATE TABLE fa_short (v varchar(3))")
    put_short = queries.bind("put_short")
    app = FastAPI()

    @app.post("/users")
    def create(conn: Db) -> None:
        user_repo.create(conn, username="a", email="a@example.com", hashed_password="h")

    @app.post("/signup")
    def signup() -> None:
        checked = validate_user_data({"username": "a", "email": "not an address", "admin": True})
        if not checked["valid"]:
            raise ValidationError(checked["errors"])

    @app.post("/short")
    def short(conn: Db) -> None:
        put_short.exec(conn, v=SECRET)  # refused by PostgreSQL, whose message may quote the value

    with _client(app) as client:
        r = client.post("/users")
        assert r.status_code == 422
        assert r.json()["detail"] == "invalid input"
        assert list(r.json()["errors"]) == ["username"]
        assert "3 to 50" in r.json()["errors"]["username"]
        r = client.post("/signup")
        assert r.status_code == 422
        assert set(r.json()["errors"]) == {"username", "email", "password", "admin"}
        r = client.post("/short")
    assert r.status_code == 422, r.text
    assert len(r.json()["errors"]) == 1
    assert SECRET not in r.text and "fa_short" not in r.text and "sql" not in r.text.lower()


def test_not_found_is_404_without_sql_or_parameters(
    dl_pool: DataLayerPool, db: DataLayerConnection, queries: sql.QueryFile
) -> None:
    by_api_key = queries.bind("by_api_key", int)
    with pytest.raises(NotFound) as caught:
        by_api_key.one(db, api_key=SECRET)
    assert SECRET in str(caught.value)  # the message names the parameters: the response must not
    app = FastAPI()

    @app.get("/keys/{key}")
    def read(key: str, conn: Db) -> int:
        return by_api_key.one(conn, api_key=key)

    with _client(app) as client:
        r = client.get(f"/keys/{SECRET}")
    assert r.status_code == 404
    assert r.json() == {"detail": "not found"}


def test_integrity_conflicts_are_409_naming_the_field(dl_pool: DataLayerPool, db: DataLayerConnection) -> None:
    user = user_repo.create(db, username="ann", email="ann@example.com", hashed_password="h")
    analysis = data_analysis_repo.create(db, user_id=user.id, name="churn", analysis_type="cohort", parameters={})
    app = FastAPI()

    @app.post("/users/{name}")
    def create(name: str, tx: Tx) -> None:
        user_repo.create(tx, username=name, email=f"{name}@example.org", hashed_password="h")

    @app.post("/analyses/{analysis_id}/complete")
    def complete(analysis_id: int, tx: Tx) -> None:
        data_analysis_repo.complete(tx, analysis_id, result={})

    with _client(app) as client:
        r = client.post("/users/ann")
        assert r.status_code == 409
        assert r.json() == {"detail": "username is already taken", "field": "username"}
        r = client.post(f"/analyses/{analysis.id}/complete")
    assert r.status_code == 409
    assert r.json() == {"detail": "status cannot change from pending to completed", "field": "status"}


def test_connection_lost_before_commit_is_503(dl_pool: DataLayerPool, db: DataLayerConnection) -> None:
    app = FastAPI()

    @app.post("/lost")
    def lost(tx: Tx) -> None:
        db.execute("SELECT pg_terminate_backend(%s)", [tx.info.backend_pid])  # the server drops it
        user_repo.create(tx, username="ann", email="ann@example.com", hashed_password="h")

    with _client(app) as client:
        r = client.post("/lost")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert "retry" in r.json()["detail"]
    assert user_repo.get_by_username(db, "ann") is None


def test_connection_lost_during_commit_is_500_saying_the_outcome_is_unknown(
    dl_pool: DataLayerPool, db: DataLayerConnection
) -> None:
    # A deferred trigger keeps the COMMIT busy; the server drops the connection meanwhile.
    db.execute("CREATE TABLE fa_slow_commit (k int)")
    db.execute(
        "CREATE FUNCTION fa_sleep() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$"
    )
    db.execute(
        "CREATE CONSTRAINT TRIGGER fa_slow AFTER INSERT ON fa_slow_commit DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION fa_sleep()"
    )
    killed: list[int] = []

    def kill_the_commit() -> None:
        with psycopg.connect(dl_pool.target.conninfo(), autocommit=True) as c:
            deadline = time.monotonic() + 20
            while not killed and time.monotonic() < deadline:
                rows = c.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'active' AND query = 'COMMIT'"
                ).fetchall()
                killed.extend(1 for _ in rows)
                time.sleep(0.02)

    app = FastAPI()

    @app.post("/save")
    def save(tx: Tx) -> dict[str, str]:
        tx.execute("INSERT INTO fa_slow_commit VALUES (1)")
        threading.Thread(target=kill_the_commit, daemon=True).start()
        return {"status": "saved"}

    with _client(app) as client:
        r = client.post("/save")
    assert killed == [1]
    assert r.status_code == 500, r.text
    assert r.json() == {
        "detail": "the outcome of the write is unknown: it may or may not have been saved; read it back before retrying"
    }


def test_other_errors_stay_internal(dl_pool: DataLayerPool, queries: sql.QueryFile) -> None:
    broken = queries.bind("broken", int)
    app = FastAPI()

    @app.get("/broken")
    def read(conn: Db) -> list[int]:
        return broken.many(conn, api_key=SECRET)

    with _client(app) as client:
        r = client.get("/broken")
    assert r.status_code == 500
    assert SECRET not in r.text and "no_such_column" not in r.text and "fa.sql" not in r.text


def test_error_response_leaves_unmapped_errors_alone() -> None:
    assert dlf.error_response(IntegrityConflict("x", constraint="c", field=None)) is not None
    from datalayer.errors import QueryError

    assert dlf.error_response(QueryError("boom", location="sql/x.sql:1 x")) is None


# -- health routes --


@pytest.mark.anyio
async def test_health_routes_async(adl_pool: Any) -> None:
    app = FastAPI()
    app.include_router(health_router())
    async with _aclient(app) as client:
        r = await client.get("/health/live")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        r = await client.get("/health/ready")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["status"] == "healthy"
    assert {"connect", "migrations", "indexes"} <= set(report["checks"])


@pytest.mark.anyio
async def test_liveness_is_200_when_the_pool_is_busy_and_503_when_it_cannot_connect(adl_pool: Any) -> None:
    app = FastAPI()
    app.include_router(health_router(live_path="/live"))
    busy = await _aio_pool(adl_pool.target, 0.3)
    previous = aio.set_default_pool(busy)
    try:
        async with _aclient(app) as client:
            async with aio.connection(busy):  # the only slot serves a request: busy, not dead
                r = await client.get("/live")
            assert (r.status_code, r.json()) == (200, {"status": "ok", "pool": "busy"})
            assert (await client.get("/live")).json() == {"status": "ok"}
    finally:
        aio.set_default_pool(previous)
        await busy.close()
    # A pool whose server went out of reach: every connection dropped, new ones refused.
    host, port = adl_pool.target.params.get("host", "127.0.0.1"), int(adl_pool.target.params.get("port", "5432"))
    proxy = TcpProxy(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port))
    via = DatabaseTarget(
        params={**adl_pool.target.params, "host": "127.0.0.1", "port": str(proxy.port)},
        password=adl_pool.target.password,
    )
    cut = await _aio_pool(via, 0.5)
    previous = aio.set_default_pool(cut)
    try:
        async with _aclient(app) as client:
            assert (await client.get("/live")).json() == {"status": "ok"}
            proxy.set_mode("drop")
            r = await client.get("/live")
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert r.json()["status"] == "unavailable"
    finally:
        aio.set_default_pool(previous)
        proxy.set_mode("pass")
        await cut.close()
        proxy.close()


def test_health_routes_sync(dl_pool: DataLayerPool, dl_empty_target: DatabaseTarget) -> None:
    app = FastAPI()
    app.include_router(health_router(api="sync"))
    app.include_router(health_router(api="sync", live_path="/x/live", ready_path="/x/ready", target=dl_empty_target))
    app.include_router(
        health_router(api="sync", live_path="/y/live", ready_path="/y/ready", target=dl_empty_target, detail=True)
    )
    with _client(app) as client:
        assert client.get("/health/live").json() == {"status": "ok"}
        assert client.get("/health/ready").json()["status"] == "healthy"
        r = client.get("/x/ready")  # a database nobody migrated: not ready
        assert r.status_code == 503
        assert r.json()["status"] == "unhealthy"
        assert r.json()["checks"]["migrations"] == "failed"  # which ones: only in the detailed report
        assert "pending" not in r.text and ".sql" not in r.text
        r = client.get("/y/ready")
    assert r.status_code == 503
    assert "pending" in r.json()["checks"]["migrations"]["detail"]


def test_health_router_refuses_an_unknown_api() -> None:
    with pytest.raises(ValidationError) as caught:
        health_router(api="trio")  # type: ignore[arg-type]
    assert "api" in caught.value.errors


# -- what outlives the request, bursts, and misuse --


@pytest.mark.anyio
async def test_a_background_task_cannot_use_the_request_db(
    aone_slot: Any, db: DataLayerConnection, queries: sql.QueryFile
) -> None:
    # One slot: the request after /a gets the very connection /a's background task was handed.
    db.execute("CREATE TABLE fa_bg (who text)")
    usernames = queries.bind("usernames", str)
    app = FastAPI()
    a_returned, b_in_tx, late_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    late: list[BaseException | None] = []

    async def write_later(conn: Any) -> None:
        await asyncio.wait_for(b_in_tx.wait(), 10)
        for attempt in (
            lambda: conn.execute("INSERT INTO fa_bg VALUES ('late')"),
            lambda: aio.user_repo.count(conn),
            lambda: usernames.amany(conn),
        ):
            try:
                await attempt()
                late.append(None)
            except Exception as e:
                late.append(e)
        late_done.set()

    @app.post("/a")
    async def a(conn: AsyncDb, tasks: BackgroundTasks) -> str:
        assert isinstance(conn, psycopg.AsyncConnection)
        assert await usernames.amany(conn) == []  # the lease serves the handler
        tasks.add_task(write_later, conn)
        a_returned.set()
        return "queued"

    @app.post("/b")
    async def b(tx: AsyncTx) -> str:
        b_in_tx.set()
        await asyncio.wait_for(late_done.wait(), 10)
        await tx.execute("INSERT INTO fa_bg VALUES ('b')")
        return "saved"

    async with _aclient(app) as client:
        first = asyncio.create_task(client.post("/a"))
        await asyncio.wait_for(a_returned.wait(), 10)
        rb = await client.post("/b")
        ra = await first
    assert (ra.status_code, rb.status_code) == (200, 200), (ra.text, rb.text)
    assert len(late) == 3 and all(isinstance(e, DataLayerError) for e in late), late
    for e in late:
        assert "db connection went back to the pool" in str(e)
        assert "async with datalayer.aio.connection() as db:" in str(e)
    rows = db.execute("SELECT who FROM fa_bg").fetchall()
    assert rows == [("b",)]  # b's unit of work holds b's write only


@pytest.mark.anyio
async def test_a_burst_of_sync_requests_all_get_a_connection(dl_pool: DataLayerPool, anyio_backend: str) -> None:
    # 200 at once on 4 connections: each request queues for the pool, none for a worker thread.
    pool = open_pool(
        settings_for_tests(pool_size=4, pool_min_size=4, max_overflow=0, pool_timeout=5.0),
        target=dl_pool.target,
        wait=True,
    )
    previous = set_default_pool(pool)
    app = FastAPI()
    add_exception_handlers(app)

    @app.get("/users/{i}")
    def read(i: int, conn: Db) -> int:
        return user_repo.count(conn)

    @app.post("/users/{i}")
    def create(i: int, tx: Tx) -> int:
        return user_repo.create(tx, username=f"burst{i}", email=f"b{i}@example.com", hashed_password="h").id

    try:
        async with _aclient(app) as client:
            rs = await asyncio.gather(
                *(client.get(f"/users/{i}") if i % 2 else client.post(f"/users/{i}") for i in range(200))
            )
        codes = [r.status_code for r in rs]
        assert codes == [200] * 200, {c: codes.count(c) for c in set(codes)}
        with connection(pool) as conn:
            assert user_repo.count(conn) == 100
        wait_idle(pool)
    finally:
        set_default_pool(previous)
        pool.close()


def test_plain_get_db_beside_tx_is_refused(dl_pool: DataLayerPool, caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    ran: list[bool] = []

    @app.post("/mixed")
    def mixed(tx: Tx, conn: DataLayerConnection = Depends(get_db)) -> None:
        ran.append(True)

    with _client(app) as client, caplog.at_level(logging.ERROR, "datalayer.fastapi"):
        r = client.post("/mixed")
    assert r.status_code == 500
    assert ran == []
    assert "Internal Server Error" in r.text and "get_db" not in r.text
    message = caplog.text
    assert "POST /mixed asks for Tx and for Depends(datalayer.get_db)" in message
    assert "Use Db (AsyncDb) for the connection and Tx (AsyncTx)" in message
    wait_idle(dl_pool)


@pytest.mark.anyio
async def test_plain_aio_get_db_beside_async_tx_is_refused(adl_pool: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()

    async def audited(conn: AsyncDataLayerConnection = Depends(aio.get_db)) -> None:
        pass

    @app.post("/mixed", dependencies=[Depends(audited)])
    async def mixed(tx: AsyncTx) -> None:
        pass

    with caplog.at_level(logging.ERROR, "datalayer.fastapi"):
        async with _aclient(app) as client:
            r = await client.post("/mixed")
    assert r.status_code == 500
    assert "POST /mixed asks for AsyncTx and for Depends(datalayer.aio.get_db)" in caplog.text


@pytest.mark.anyio
async def test_a_sync_connection_in_an_async_handler_is_refused_before_it_blocks(
    adl_pool: Any, dl_pool: DataLayerPool, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    add_exception_handlers(app)
    ran: list[bool] = []

    @app.get("/slow")
    async def sleepy_handler(conn: Db) -> None:
        ran.append(True)
        conn.execute("SELECT pg_sleep(2)")  # would stall the event loop for 2 s

    @app.get("/tx")
    async def sleepy_tx(tx: Tx) -> None:
        ran.append(True)

    with caplog.at_level(logging.ERROR, "datalayer.fastapi"):
        async with _aclient(app) as client:
            r = await client.get("/slow")
            r_tx = await client.get("/tx")
    assert (r.status_code, r_tx.status_code) == (500, 500)
    assert ran == []
    assert "Db" not in r.text
    assert ".sleepy_handler (" in caplog.text and "is an `async def` but asks for Db" in caplog.text
    assert "Annotate it with AsyncDb" in caplog.text
    assert ".sleepy_tx (" in caplog.text and "Annotate it with AsyncTx" in caplog.text
    wait_idle(dl_pool)


def test_an_async_connection_in_a_sync_handler_is_a_500_not_a_422(
    dl_pool: DataLayerPool, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()

    async def current_user(conn: AsyncDb) -> int:  # an async dependency: the right flavour
        return await aio.user_repo.count(conn)

    @app.get("/count")
    def count(conn: AsyncDb) -> int:
        return user_repo.count(conn)  # type: ignore[arg-type]

    @app.get("/me")
    def me(users: int = Depends(current_user)) -> int:  # a def handler over it: fine
        return users

    with _client(app) as client, caplog.at_level(logging.ERROR, "datalayer.fastapi"):
        r = client.get("/count")
        assert r.status_code == 500, r.text
        assert "psycopg" not in r.text and "db" not in r.text
        assert ".count (" in caplog.text and "is a plain `def` but asks for AsyncDb" in caplog.text
        assert "Annotate it with Db" in caplog.text
        assert client.get("/me").json() == 0


@pytest.mark.anyio
async def test_readiness_runs_one_check_at_a_time_and_says_only_ok_or_failed(adl_pool: Any) -> None:
    app = FastAPI()
    app.include_router(health_router())
    dbname = adl_pool.target.params["dbname"]
    seen: set[int] = set()
    most = 0
    stop = threading.Event()

    def watch() -> None:  # the health check's own backends on this test's database
        nonlocal most
        with psycopg.connect(adl_pool.target.conninfo(), autocommit=True) as c:
            while not stop.is_set():
                pids = [
                    row[0]
                    for row in c.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'datalayer-health'",
                        [dbname],
                    )
                ]
                seen.update(pids)
                most = max(most, len(pids))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        async with _aclient(app) as client:
            rs = await asyncio.gather(*(client.get("/health/ready") for _ in range(30)))
    finally:
        stop.set()
        watcher.join(10)
    assert [r.status_code for r in rs] == [200] * 30
    assert most <= 1 and len(seen) <= 1, (most, seen)
    body = rs[0].json()
    assert body["status"] == "healthy"
    assert set(body["checks"].values()) == {"ok"} and "migrations" in body["checks"]
    for leak in ("PostgreSQL", "applied", str(adl_pool.target.params.get("port", "5432")), ".sql"):
        assert leak not in rs[0].text
    app.include_router(health_router(live_path="/full/live", ready_path="/full/ready", detail=True))
    async with _aclient(app) as client:
        full = (await client.get("/full/ready")).json()
    assert full["checks"]["connect"]["detail"].startswith("PostgreSQL")


def test_a_422_names_the_field_but_not_where_the_value_was_sent(
    dl_pool: DataLayerPool, db: DataLayerConnection, queries: sql.QueryFile
) -> None:
    db.execute("CREATE TABLE fa_short (v varchar(3))")
    put_short = queries.bind("put_short")
    app = FastAPI()

    @app.post("/short")
    def short(conn: Db) -> None:
        put_short.exec(conn, v="a\x00b")  # text PostgreSQL cannot store: the execution layer's backstop

    with pytest.raises(ValidationError, match="sent to"):
        put_short.exec(db, v="a\x00b")  # the message names the query: the response must not
    with _client(app) as client:
        r = client.post("/short")
    assert r.status_code == 422, r.text
    message = r.json()["errors"]["v"]
    assert message and "sent to" not in message and "fa.sql" not in r.text and "put_short" not in r.text


# -- the README's example --


def _readme_example() -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("### FastAPI: `datalayer.fastapi`", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.anyio
async def test_readme_example_runs(adl_pool: Any) -> None:
    namespace: dict[str, Any] = {"__name__": "service"}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    app = namespace["app"]
    async with _aclient(app) as client:
        r = await client.post("/users", json={"username": "ann", "email": "ann@example.com", "password": "s3cret-pass"})
        assert r.status_code == 201, r.text
        user_id = r.json()["id"]
        r = await client.get(f"/users/{user_id}")
        assert r.json() == {"username": "ann", "email": "ann@example.com"}
        assert (await client.get(f"/users/{user_id + 1}")).status_code == 404
        r = await client.post("/users", json={"username": "ann", "email": "ann@example.org", "password": "s3cret-pass"})
        assert (r.status_code, r.json()["field"]) == (409, "username")
        r = await client.post("/users", json={"username": "a", "email": "a@example.org", "password": "s3cret-pass"})
        assert (r.status_code, list(r.json()["errors"])) == (422, ["username"])
        assert (await client.get("/health/live")).json() == {"status": "ok"}
        assert (await client.get("/health/ready")).json()["status"] == "healthy"
