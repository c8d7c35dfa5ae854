"""The machinery behind the pytest plugin (``datalayer.testing``): the test server, its settings, where
the tests' own servers live, and the session's PgBouncer (TEST_PGBOUNCER=1)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from datalayer._testing_pgbouncer import PgBouncer
from datalayer.config import DatabaseTarget, Settings
from datalayer.embedded import start_embedded_postgres
from datalayer.project import Project, find_project

__all__ = ["TestServer", "server_target", "session_bouncer", "settings_for_tests", "test_home"]

_counter = itertools.count(1)


class TestServer:
    """Where the test databases live: a target for the maintenance database, the project whose migrations
    build the template, and the template's name."""

    __test__ = False  # not a test class

    def __init__(self, target: DatabaseTarget, project: Project | None = None) -> None:
        self.target = target
        self.project = project if project is not None else find_project()
        self.template: str | None = None
        # TEST_PGBOUNCER=1: the pools go through it; migrations, clones and drops never do.
        self.bouncer: PgBouncer | None = None

    @property
    def prefix(self) -> str:
        """The start of every database name (and cache key prefix) of this run: the project's prefix."""
        return self.project.test_database_prefix

    def new_name(self, kind: str = "") -> str:
        """A database name of this run's own: ``<prefix>_<kind><pid>_<n>``."""
        return f"{self.prefix}_{kind}{os.getpid()}_{next(_counter)}"

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
        """``dbname`` on the server itself."""
        return DatabaseTarget(
            params={**self.target.params, "dbname": dbname}, password=self.target.password, embedded=False
        )

    def pool_target(self, dbname: str) -> DatabaseTarget:
        """Where a test's pool on ``dbname`` points: through the session's PgBouncer, if any."""
        return self.bouncer.target_for(dbname) if self.bouncer is not None else self.target_for(dbname)

    def pool_settings(self, dbname: str, **overrides: Any) -> Settings:
        """``settings_for_tests(**overrides)`` for a pool on ``dbname``; behind the session's PgBouncer
        with ``pooler="transaction"`` and the server itself as ``direct``."""
        if self.bouncer is not None:
            overrides = {"pooler": "transaction", "direct": self.target_for(dbname), **overrides}
        return settings_for_tests(**overrides)


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


def test_home() -> Path:
    """Where the tests' own embedded servers live: never the user's DATALAYER_HOME."""
    return Path(os.environ.get("DATALAYER_TEST_HOME") or Path(tempfile.gettempdir()) / "datalayer-tests")


def server_target() -> DatabaseTarget:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        target = Settings.from_env({"DATABASE_URL": url}).database
        assert target is not None
        return target
    embedded = start_embedded_postgres(Settings(home=test_home()))
    return DatabaseTarget(params={**embedded.params, "dbname": "postgres"}, password=embedded.password, embedded=True)


@contextmanager
def session_bouncer(server: TestServer) -> Iterator[None]:
    switch = os.environ.get("TEST_PGBOUNCER", "").strip().lower()
    if switch in ("", "0", "false", "no", "off"):
        yield
        return
    if switch not in ("1", "true", "yes", "on"):
        raise pytest.UsageError(f"TEST_PGBOUNCER must be 1 (run through a PgBouncer) or 0, got {switch!r}")
    test_home().mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer-", dir=test_home()))
    bouncer = PgBouncer(directory, server.target, session=settings_for_tests().session_settings())
    bouncer.start()
    server.bouncer = bouncer
    try:
        yield
    finally:
        server.bouncer = None
        bouncer.stop()
        shutil.rmtree(directory, ignore_errors=True)
