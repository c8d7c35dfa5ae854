"""A PgBouncer the tests own (Debian's ``pgbouncer``), in transaction pooling mode in front of a test server.

``datalayer.testing`` starts one for the session when TEST_PGBOUNCER=1; ``tests/test_pgbouncer.py``
starts its own. It listens on a loopback port checked free first, keeps its config, log and auth file in a
directory of its own, forwards every database name (``[databases] * = host=… port=…``) to the server and
is stopped by its pid. The session settings a pooled client cannot send (PgBouncer refuses ``options``)
reach each server connection through ``connect_query``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from datalayer._testing_redis import _die_with_parent, _free_port
from datalayer.config import DatabaseTarget

__all__ = ["INSTALL_HINT", "PgBouncer", "pgbouncer_binary"]

INSTALL_HINT = "install PgBouncer (Debian: apt-get install pgbouncer)"
# PgBouncer refuses to run as root; as root it is told to switch to the owner of the server's socket
# directory (the embedded server's is private to its user), else to Debian's package user.
_RUN_AS = ("postgres", "nobody")


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable (PATH, then Debian's /usr/sbin), or None when it is not installed."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


def _quote(value: str) -> str:
    # PgBouncer's connection strings quote a value in single quotes, a quote inside it doubled.
    return "'" + value.replace("'", "''") + "'"


class PgBouncer:
    """A pgbouncer process of the tests' own (pool_mode=transaction) in front of ``server``.

    ``session``: settings each server connection gets on connect (``connect_query``), e.g.
    ``Settings.session_settings()``. ``ignore_startup_parameters``: PgBouncer's setting of that name
    (empty: it refuses ``options``, as a stock configuration does). Clients log in without a password
    as the server target's user or one of ``users`` (name to the password the bouncer logs in to the
    server with).
    """

    __test__ = False

    def __init__(
        self,
        directory: Path,
        server: DatabaseTarget,
        *,
        session: Mapping[str, str] | None = None,
        ignore_startup_parameters: str = "",
        pool_size: int = 20,
        users: Mapping[str, str] | None = None,
    ) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError(f"pgbouncer is not installed; {INSTALL_HINT}")
        self.binary = binary
        self.directory = directory
        self.server = server
        self.session = dict(session or {})
        self.ignore_startup_parameters = ignore_startup_parameters
        self.pool_size = pool_size
        self.user = server.params.get("user", "postgres")
        self.users = {self.user: server.password.value if server.password else "", **(users or {})}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def target_for(self, dbname: str, user: str | None = None) -> DatabaseTarget:
        """``dbname`` on the server, through this bouncer, as ``user`` (default: the server target's)."""
        params = {"host": "127.0.0.1", "port": str(self.port), "dbname": dbname, "user": user or self.user}
        return DatabaseTarget(params=params)

    def _config(self) -> str:
        p = self.server.params
        entry = f"host={p.get('host', 'localhost')} port={p.get('port', '5432')}"
        if self.session:
            query = "; ".join(f"SET {k} = {_quote(v)}" for k, v in self.session.items())
            entry += f" connect_query={_quote(query)}"
        lines = [
            "[databases]",
            f"* = {entry}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.directory / 'users.txt'}",
            "pool_mode = transaction",
            f"default_pool_size = {self.pool_size}",
            "max_client_conn = 1000",
            f"admin_users = {self.user}",
            f"logfile = {self.directory / 'pgbouncer.log'}",
            f"ignore_startup_parameters = {self.ignore_startup_parameters}",
        ]
        if os.geteuid() == 0:
            lines.append(f"user = {_run_as(self.server)}")
        return "\n".join(lines) + "\n"

    def _write_files(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Trust on loopback for the tests' own clients; the server login uses the password given here.
        users = self.directory / "users.txt"
        users.write_text("".join(f"{_quote_user(u)} {_quote_user(pw)}\n" for u, pw in self.users.items()))
        users.chmod(0o600)
        config = self.directory / "pgbouncer.ini"
        config.write_text(self._config())
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_run_as(self.server))
            for path in (self.directory, users, config):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        return config

    def start(self) -> None:
        """Start on a free loopback port (another one if that port was taken meanwhile)."""
        for _ in range(3):
            self.port = _free_port()
            config = self._write_files()
            with (self.directory / "stderr.log").open("ab") as err:
                self.proc = subprocess.Popen(  # noqa: S603 - our own binary and config
                    [self.binary, str(config)],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - async-signal-safe: one prctl call
                )
            if self._wait_listening():
                return
            self.stop()
        log = self.directory / "pgbouncer.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"pgbouncer did not start (config {config}); its log ends:\n{tail}")

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run a command on PgBouncer's admin console (``SHOW POOLS``, ``RECONNECT db``…); its rows."""
        conninfo = self.target_for("pgbouncer").conninfo()
        with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None, row_factory=dict_row) as conn:
            cur = conn.execute(command)
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        """Stop the process by its pid (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(10)
            self.proc = None


def _quote_user(value: str) -> str:
    # auth_file: "name" "password", a double quote inside doubled.
    return '"' + value.replace('"', '""') + '"'


def _run_as(server: DatabaseTarget) -> str:
    host = server.params.get("host", "")
    if host.startswith("/"):
        with contextlib.suppress(OSError, KeyError):
            owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
            if owner != "root":
                return owner
    for name in _RUN_AS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("pgbouncer refuses to run as root and no 'postgres' or 'nobody' user exists to run it as")
