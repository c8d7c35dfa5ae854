"""The connection pool and the ways to borrow from it: ``connection()``, ``get_db()``.

The default pool opens lazily, in the process that first asks for a connection (a forked child gets
its own), and closes at exit. Connections are lent in autocommit mode: a single statement commits by
itself and reads pay no BEGIN/COMMIT round trip; ``transaction()`` groups statements.

>>> from datalayer import connection, user_repo
>>> with connection() as db:                     # doctest: +SKIP
...     user = user_repo.get_by_id(db, 1)
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from datalayer._connection import DataLayerConnection, alive_idle, network_params, reset_session, wait_limit
from datalayer._lease import Lease
from datalayer._translate import describe_error
from datalayer.config import DatabaseTarget, Settings
from datalayer.errors import ConfigError, PoolExhausted, TransientError

__all__ = [
    "DataLayerConnection",
    "DataLayerPool",
    "close_default_pool",
    "connect",
    "connection",
    "default_pool",
    "default_target",
    "get_db",
    "open_pool",
    "resolve_database",
    "set_default_pool",
]

log = logging.getLogger("datalayer")


class _ReconnectAttempt(AttemptWithBackoff):
    """psycopg_pool's reconnection backoff (1 s, doubling) capped at half a second.

    After a 10 s outage the default schedule's next attempt can be 5 s after the server is back; with
    the cap the pool serves again within about 0.5 s of the server accepting connections. Attempts
    are cheap while the server is down (the connection is refused at once).
    """

    INITIAL_DELAY = 0.1
    MAX_DELAY = 0.5

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.MAX_DELAY)


class DataLayerPool(ConnectionPool[DataLayerConnection]):
    """A psycopg_pool ConnectionPool that knows its settings and where it points."""

    def __init__(self, settings: Settings, target: DatabaseTarget, **kwargs: Any) -> None:
        self.settings = settings
        self.target = target
        self._last_purge = 0.0
        super().__init__(**kwargs)

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        # psycopg_pool creates the attempt on the first failure path: give it ours, with the capped delay.
        super()._add_connection(attempt or _ReconnectAttempt(timeout=self.reconnect_timeout), growing=growing)

    def schedule_purge(self) -> None:
        """Check every idle connection in the background (once a second at most).

        Called when a lent connection turns out dead: after a server restart every idle connection is
        dead too, and each would otherwise cost a caller one failed attempt.
        """
        now = time.monotonic()
        if now - self._last_purge < 1.0:
            return
        self._last_purge = now
        threading.Thread(target=self._purge, name="datalayer-pool-purge", daemon=True).start()

    def _purge(self) -> None:
        try:
            self.check()
        except Exception as e:  # the pool may be closing; nothing to purge then
            log.debug("datalayer: pool purge skipped: %s", e)


def resolve_database(settings: Settings) -> DatabaseTarget:
    """The configured database, or the embedded one (started on demand) when nothing is configured."""
    if settings.database is not None:
        return settings.database
    from datalayer.embedded import start_embedded_postgres

    return start_embedded_postgres(settings)


def connect_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection parameters every datalayer connection gets (beyond the target's)."""
    return {
        "autocommit": True,
        "application_name": settings.application_name,
        "options": settings.session_options(),
        "connect_timeout": str(settings.connect_timeout),
        **network_params(settings),
    }


def _configure(settings: Settings) -> Callable[[DataLayerConnection], None]:
    limit, cancel = wait_limit(settings), float(settings.connect_timeout)

    def configure(conn: DataLayerConnection) -> None:
        conn._dl_wait_limit = limit
        conn._dl_cancel_timeout = cancel

    return configure


def open_pool(
    settings: Settings | None = None,
    *,
    target: DatabaseTarget | None = None,
    name: str = "datalayer",
    wait: bool = False,
) -> DataLayerPool:
    """Open a pool for ``settings`` (default: from the environment).

    POOL_SIZE connections are kept (POOL_MIN_SIZE of them opened eagerly), up to MAX_OVERFLOW more under
    load; POOL_TIMEOUT bounds the wait for one and POOL_RECYCLE their lifetime. An embedded server is
    migrated before the pool opens; a configured server never is. The first connection is made
    right away, so that a wrong password or host fails here with a clear message.
    """
    settings = settings or Settings.from_env()
    target = target or resolve_database(settings)
    if target.embedded:
        from datalayer.migrate import setup_database

        setup_database(target=target, settings=settings)
    _probe(settings, target)
    pool = DataLayerPool(
        settings,
        target,
        conninfo=target.conninfo(),
        kwargs=connect_kwargs(settings),
        connection_class=DataLayerConnection,
        configure=_configure(settings),
        reset=reset_session,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
        max_lifetime=settings.pool_recycle,
        name=name,
        open=False,
    )
    pool.open(wait=wait, timeout=settings.pool_timeout)
    return pool


# libpq reports these at connect time without a SQLSTATE: they are settings to fix, not outages to wait out.
_CONFIG_FAILURES = (
    "password authentication failed",
    "no password supplied",
    "does not exist",  # role or database
    "pg_hba.conf",
    "certificate",
    "ssl",
    "authentication method requirement",  # require_auth (e.g. the default !password) refused the server
    "channel binding",  # channel_binding=require against a server that cannot (no TLS, trust, md5)
    "gssapi encryption required",  # gssencmode=require without Kerberos credentials or server support
    "protocol version",  # min_protocol_version above what the server speaks
    "requirepeer",  # the socket's owner is not the user requirepeer names
)


def connect(settings: Settings, target: DatabaseTarget, **overrides: Any) -> DataLayerConnection:
    """One connection outside any pool, with the pool's parameters and deadline (for checks and tools).

    Every wait on it gives up after STATEMENT_TIMEOUT + CONNECT_TIMEOUT, as a pooled one does. A
    failure to connect is a ConfigError (a setting to fix) or a TransientError (try again later).
    """
    try:
        conn = DataLayerConnection.connect(target.conninfo(), **{**connect_kwargs(settings), **overrides})
    except psycopg.OperationalError as e:
        reason = describe_error(e)
        msg = f"cannot connect to {target.display}: {reason}"
        text = str(e).lower()
        if any(m in text for m in _CONFIG_FAILURES) or e.sqlstate in ("28P01", "28000", "3D000"):
            raise ConfigError(
                f"{msg}; check DATABASE_URL (user, password, database name, TLS and authentication parameters)",
                variable="DATABASE_URL",
            ) from None
        raise TransientError(f"{msg}; is the server running and reachable?", sqlstate=e.sqlstate) from None
    _configure(settings)(conn)
    return conn


def _probe(settings: Settings, target: DatabaseTarget) -> None:
    connect(settings, target).close()


_default: DataLayerPool | None = None
_default_pid: int | None = None
_default_lock = threading.Lock()
_forked_leftovers: list[object] = []


def default_pool() -> DataLayerPool:
    """The process-wide pool, opened on first use from ``Settings.from_env()``."""
    global _default, _default_pid
    pool = _default
    if pool is not None and _default_pid == os.getpid():
        return pool
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            _default = open_pool()
            _default_pid = os.getpid()
        return _default


def default_target(settings: Settings) -> DatabaseTarget:
    """The database this process talks to: the open default pool's, else the one ``settings`` name."""
    pool = _default
    if pool is not None and _default_pid == os.getpid():
        return pool.target
    return resolve_database(settings)


def set_default_pool(pool: DataLayerPool | None) -> DataLayerPool | None:
    """Install ``pool`` as the default (tests, dependency injection); returns the previous one."""
    global _default, _default_pid
    with _default_lock:
        previous = _default
        _default = pool
        _default_pid = os.getpid() if pool is not None else None
        return previous


def close_default_pool() -> None:
    """Close the default pool (registered at exit); the next use opens a new one."""
    global _default
    with _default_lock:
        pool, _default = _default, None
    if pool is not None and _default_pid == os.getpid():
        pool.close()


def _after_fork_in_child() -> None:
    global _default, _default_pid
    if _default is not None:
        # The parent's sockets are shared with us: closing them here would break the parent's
        # connections, and so would letting them be garbage-collected. Keep them, unused.
        _forked_leftovers.append(_default)
    _default, _default_pid = None, None


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_default_pool)


def checkout(pool: DataLayerPool, timeout: float | None = None) -> DataLayerConnection:
    """Borrow a live connection; PoolExhausted when none is free within ``timeout`` (POOL_TIMEOUT)."""
    wait = pool.timeout if timeout is None else timeout
    deadline = time.monotonic() + wait
    while True:
        remaining = deadline - time.monotonic()
        try:
            conn = pool.getconn(max(remaining, 0.001))
        except PoolTimeout:
            raise _exhausted(pool, wait) from None
        if alive_idle(conn):
            return conn
        conn.close()
        pool.putconn(conn)
        pool.schedule_purge()


def give_back(pool: DataLayerPool, conn: DataLayerConnection) -> None:
    """Return a borrowed connection (the pool rolls back anything left open)."""
    pool.putconn(conn)


def _exhausted(pool: DataLayerPool, waited: float) -> PoolExhausted:
    stats = pool.get_stats()
    size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
    in_use = max(size - available, 0)
    if size < pool.max_size and stats.get("connections_errors", 0):
        return PoolExhausted(
            f"no database connection within {waited:g} s: the pool could not open new connections to "
            f"{pool.target.display} (max_size {pool.max_size}, {in_use} in use); is the server up?"
        )
    return PoolExhausted(
        f"no database connection free within {waited:g} s (POOL_TIMEOUT): pool {pool.name!r} has "
        f"max_size {pool.max_size} (POOL_SIZE {pool.settings.pool_size} + MAX_OVERFLOW "
        f"{pool.settings.max_overflow}), {in_use} in use; release connections sooner or raise the limits"
    )


@contextmanager
def connection(pool: DataLayerPool | None = None, *, timeout: float | None = None) -> Iterator[DataLayerConnection]:
    """Borrow a pooled connection in autocommit mode for the ``with`` block.

    >>> with connection() as db:                   # doctest: +SKIP
    ...     user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)
    """
    pool = pool or default_pool()
    conn = checkout(pool, timeout)
    try:
        yield conn
    finally:
        give_back(pool, conn)


def get_db() -> Iterator[DataLayerConnection]:
    """A generator lending one connection: for FastAPI's ``Depends(get_db)`` and for ``next(get_db())``.

    With ``Depends``, the connection returns to the pool when the request ends. With the seed's
    ``db = next(get_db())`` the generator is dropped at once; the connection stays yours until you drop
    the value you got (whatever else still names the same pooled connection), then its slot goes back
    to the pool (closed, and replaced by a fresh one).
    """
    pool = default_pool()
    lease = Lease(checkout(pool), pool)
    try:
        yield cast(DataLayerConnection, lease)
    except GeneratorExit:
        raise  # next(get_db()): the lease's finalizer returns the slot when the caller drops it
    except BaseException:
        _end(pool, lease)
        raise
    else:
        _end(pool, lease)


def _end(pool: DataLayerPool, lease: Lease) -> None:
    conn = lease.release()
    if conn is not None:
        give_back(pool, conn)
