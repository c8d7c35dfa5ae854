"""Servers these tests own, so that they may stop, kill or freeze them (never the shared ones)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from datalayer.config import DatabaseTarget, Settings
from datalayer.embedded import embedded_postgres_bin, start_embedded_postgres
from datalayer.migrate import setup_database


class PgCluster:
    """An embedded PostgreSQL cluster of the test's own, in a temporary directory.

    Started through datalayer's own embedded server (password auth, private socket); stopped and started
    again with the server's pg_ctl, as the user the server runs as.
    """

    def __init__(self, directory: Path) -> None:
        self.settings = Settings(home=directory)
        admin = start_embedded_postgres(self.settings)
        self.pgdata = directory.resolve() / "pgdata"
        with psycopg.connect(admin.conninfo(), autocommit=True) as c:
            c.execute("CREATE DATABASE app")
        self.target = DatabaseTarget(params={**admin.params, "dbname": "app"}, password=admin.password)
        setup_database(target=self.target, settings=Settings())

    def _pg_ctl(self, *args: str) -> None:
        owner = pwd.getpwuid(self.pgdata.stat().st_uid).pw_name
        cmd = [str(embedded_postgres_bin() / "pg_ctl"), "-D", str(self.pgdata), *args]
        if os.geteuid() == 0 and owner != "root":
            cmd = ["runuser", "-u", owner, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> float:
        """Start again; returns the monotonic time at which the server accepts connections."""
        start_embedded_postgres(self.settings)
        while True:
            try:
                psycopg.connect(self.target.conninfo(), connect_timeout=2).close()
                return time.monotonic()
            except psycopg.OperationalError:
                time.sleep(0.01)

    def connect(self) -> psycopg.Connection[object]:
        return psycopg.connect(self.target.conninfo(), autocommit=True)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    # Under DATALAYER_TEST_HOME, not pytest's tmp_path: see datalayer.testing.dl_home.
    base = Path(os.environ.get("DATALAYER_TEST_HOME") or "/tmp/datalayer-tests")
    c = PgCluster(Path(tempfile.mkdtemp(prefix=f"pg{os.getpid()}-", dir=base.mkdir(parents=True, exist_ok=True) or base)))
    try:
        yield c
    finally:
        c.close()
