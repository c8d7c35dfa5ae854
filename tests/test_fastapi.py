"""datalayer.fastapi through HTTP (httpx, FastAPI's TestClient) against the real servers: the request's
connection and unit of work, a COMMIT that fails before the response, the error mapping, health routes,
and an event loop that keeps answering while slow queries run."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from fastapi import FastAPI, HTTPException
from helpers import url_of, wait_idle

import datalayer.fastapi as dlf
from datalayer import aio, data_analysis_repo, sql, transactions_async, user_repo, validate_user_data
from datalayer.config import DatabaseTarget, Secret, Settings
from datalayer.defaults import set_default_pool
from datalayer.errors import IntegrityConflict, NotFound, ValidationError
from datalayer.fastapi import AsyncDb, AsyncTx, Db, Tx, add_exception_handlers, health_router
from datalayer.pool import DataLayerConnection, DataLayerPool, connection, open_pool
from datalayer.testing import settings_for_tests
from datalayer.transactions import current_transaction, in_transaction, on_commit

SECRET = "sk-live-7f3a9c1e55d04b2b"  # an API key: a parameter NotFound's message shows (not a known secret name)
PASSWORD = "Pw-in-the-dsn-91c7e"

QUERIES = """\
-- name: by_api_key :one
SELECT id FROM users WHERE username = :'api_key'

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
async def test_liveness_is_503_when_no_connection_comes(adl_pool: Any) -> None:
    pool = await _aio_pool(adl_pool.target, 0.3)
    previous = aio.set_default_pool(pool)
    app = FastAPI()
    app.include_router(health_router(live_path="/live"))
    try:
        async with _aclient(app) as client:
            async with aio.connection(pool):  # the only slot is taken
                r = await client.get("/live")
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            assert r.json() == {"status": "unavailable", "detail": "the database did not answer (PoolExhausted)"}
            assert (await client.get("/live")).status_code == 200
    finally:
        aio.set_default_pool(previous)
        await pool.close()


def test_health_routes_sync(dl_pool: DataLayerPool, dl_empty_target: DatabaseTarget) -> None:
    app = FastAPI()
    app.include_router(health_router(api="sync"))
    app.include_router(health_router(api="sync", live_path="/x/live", ready_path="/x/ready", target=dl_empty_target))
    with _client(app) as client:
        assert client.get("/health/live").json() == {"status": "ok"}
        assert client.get("/health/ready").json()["status"] == "healthy"
        r = client.get("/x/ready")  # a database nobody migrated: not ready
    assert r.status_code == 503
    assert r.json()["status"] == "unhealthy"
    assert "pending" in r.json()["checks"]["migrations"]["detail"]


def test_health_router_refuses_an_unknown_api() -> None:
    with pytest.raises(ValidationError) as caught:
        health_router(api="trio")  # type: ignore[arg-type]
    assert "api" in caught.value.errors


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
