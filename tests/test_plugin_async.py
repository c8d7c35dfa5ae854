"""The pytest plugin's async fixtures (``adl_pool``, ``adb``, ``adl_cache``) on anyio's pytest plugin: used
directly here, and in a service project's own run (a pytest subprocess over a tmp project)."""

from __future__ import annotations

import os
import textwrap

import psycopg
import pytest

from datalayer import aio, user_repo
from datalayer.aio import AsyncConnection, AsyncDataLayerPool
from datalayer.cache.manager_async import AsyncCacheManager, get_cache_manager
from datalayer.pool import DataLayerConnection
from datalayer.testing import TestServer

pytest_plugins = ["pytester"]

PREFIX = f"asvc{os.getpid()}_test"


async def _dbname(conn: AsyncConnection) -> str:
    row = await (await conn.execute("SELECT current_database()")).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.anyio
async def test_adb_is_an_autocommit_connection_to_the_database_db_uses(
    adb: AsyncConnection, db: DataLayerConnection
) -> None:
    assert isinstance(adb, psycopg.AsyncConnection)
    assert adb.autocommit
    row = db.execute("SELECT current_database()").fetchone()
    assert row is not None
    assert await _dbname(adb) == row[0]
    assert row[0].startswith(f"datalayer_test_{os.getpid()}_")
    # Written by the sync API, read by the async one: one database, and nothing waits for a COMMIT.
    user = user_repo.create(db, username="ann", email="ann@example.com", hashed_password="x")
    assert await aio.user_repo.get_by_id(adb, user.id) == user


@pytest.mark.anyio
async def test_adl_pool_is_the_default_pool_of_datalayer_aio(adl_pool: AsyncDataLayerPool) -> None:
    assert await aio.default_pool() is adl_pool
    async with aio.connection() as conn:
        assert await _dbname(conn) == adl_pool.target.params["dbname"]
    # FastAPI's Depends(get_db) reaches it too.
    gen = aio.get_db()
    conn = await anext(gen)
    try:
        assert await _dbname(conn) == adl_pool.target.params["dbname"]
    finally:
        assert await anext(gen, None) is None  # as FastAPI ends it: the connection goes back


@pytest.mark.anyio
async def test_adl_cache_is_the_async_cache_of_the_test(adl_cache: AsyncCacheManager, adb: AsyncConnection) -> None:
    assert get_cache_manager() is adl_cache
    assert adl_cache.keys.prefix.startswith(f"datalayer_test_{os.getpid()}_")
    key = adl_cache.keys.user(1)
    assert await adl_cache.get(key) is None  # empty: a prefix of its own
    await adl_cache.set(key, {"name": "Ann"}, ttl=60)
    assert await adl_cache.get(key) == {"name": "Ann"}
    # Its table layer is this test's database: an invalidation inside a transaction waits for COMMIT.
    async with aio.transaction(adb) as tx:
        await adl_cache.invalidate_user_cache(1, db=tx)
        assert await adl_cache.get(key) == {"name": "Ann"}
    assert await adl_cache.get(key) is None


ASYNC_TESTS = """\
import pytest

from datalayer import aio, user_repo

pytestmark = pytest.mark.anyio
SEEN = {}


async def _dbname(conn):
    return (await (await conn.execute("SELECT current_database()")).fetchone())[0]


async def test_first(adb, adl_pool, db):
    SEEN["pool"] = adl_pool
    SEEN["first"] = await _dbname(adb)
    assert await aio.default_pool() is adl_pool
    await aio.user_repo.create(adb, username="ann", email="ann@example.com", hashed_password="x")
    assert user_repo.count(db) == 1
    print(f"FIRST={SEEN['first']}")


async def test_second_gets_a_fresh_clone(adb, adl_cache):
    assert await aio.user_repo.count(adb) == 0
    assert await _dbname(adb) != SEEN["first"]
    await adl_cache.set(adl_cache.keys.user(7), {"n": 1})
    assert await adl_cache.get(adl_cache.keys.user(7)) == {"n": 1}


def test_after_the_async_tests_nothing_is_left_installed():
    assert SEEN["pool"].closed
    assert aio.set_default_pool(None) is None
"""


def test_a_service_project_runs_async_tests_on_the_fixtures(
    pytester: pytest.Pytester, datalayer_server: TestServer
) -> None:
    root = pytester.path
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "asvc"
            version = "0"

            [tool.datalayer]
            builtin = true
            test_database_prefix = "{PREFIX}"

            [tool.pytest.ini_options]
            testpaths = ["tests"]
            filterwarnings = ["error"]
            """
        )
    )
    (root / "conftest.py").write_text('pytest_plugins = ["datalayer.testing"]\n')
    (root / "tests").mkdir()
    (root / "tests" / "test_async.py").write_text(ASYNC_TESTS)
    # The subprocess inherits this run's environment: TEST_DATABASE_URL, TEST_REDIS_URL, DATALAYER_TEST_HOME.
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([f"*FIRST={PREFIX}_*"])
    with psycopg.connect(datalayer_server.target_for("postgres").conninfo(), autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)).fetchall()
    assert rows == []
