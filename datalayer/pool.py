# Generated from datalayer/pool_async.py by tools/async_to_sync.py: edit that file, then run the tool.
"""The connection pool, and only the pool: settings and a target in, a pool out, connections lent from it.

One source for both APIs: ``datalayer.pool`` (``DataLayerPool``, sync) is generated from this file,
``datalayer.pool_async`` (``AsyncDataLayerPool``) is ``datalayer.aio``'s. It never starts a server, runs
a migration or picks a default: the process defaults (``datalayer.defaults``, ``datalayer.aio``) do
that (the default pool, the embedded server, migrate-on-open) and lend from here. Connections are lent
in autocommit mode: a single statement commits by itself and reads pay no BEGIN/COMMIT round trip;
``transaction(db)`` groups statements.

>>> pool = open_pool(settings, target=settings.database)     # doctest: +SKIP
>>> with connection(pool) as db:
...     user = user_repo.get_by_id(db, 1)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from datalayer._acompat import Job, spawn
from datalayer._liveness import alive_idle, network_params, wait_limit
from datalayer._pooled import DataLayerConnection, reset_session, transaction_settings
from datalayer._translate import describe_error
from datalayer.config import DatabaseTarget, Settings
from datalayer.errors import ConfigError, PoolExhausted, TransientError, ValidationError

__all__ = [
    "DataLayerConnection",
    "DataLayerPool",
    "checkout",
    "connect",
    "connect_kwargs",
    "connection",
    "give_back",
    "open_pool",
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
    """A psycopg_pool pool that knows its settings and where it points."""

    def __init__(self, settings: Settings, target: DatabaseTarget, **kwargs: Any) -> None:
        self.settings = settings
        self.target = target
        self._last_purge = 0.0
        # The replicas connection(replica=True) reads from (datalayer._replicas_async), closed with the pool.
        self.replicas: Any = None
        super().__init__(**kwargs)

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool, and the replicas' pools opened for it."""
        replicas, self.replicas = self.replicas, None
        try:
            if replicas is not None:
                replicas.close()
        finally:
            super().close(timeout)

    def putconn(self, conn: DataLayerConnection) -> None:
        """Return ``conn``, reset as it was lent (autocommit, and the session if the caller changed it).

        The reset runs here, in the caller: psycopg_pool hands a connection with a ``reset=`` callback to
        a worker and the next borrower waits for that handoff (measured: most of a checkout's cost under
        threads). psycopg_pool still rolls back and closes what it must.
        """
        try:
            if not conn.closed:
                status = conn.pgconn.transaction_status
                if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                    conn.rollback()
                if status != TransactionStatus.ACTIVE:  # psycopg_pool closes a connection still busy
                    reset_session(conn)
        except psycopg.Error as e:
            log.warning("datalayer: resetting a returned connection failed, closing it: %s", e)
            conn.close()
        except BaseException:
            # Cancelled (a timeout, a client gone) or interrupted mid-reset: the session is in an unknown
            # state, so it is closed; the slot still goes back (the pool replaces the connection).
            conn.close()
            raise
        finally:
            super().putconn(conn)

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
        spawn(self._purge, name="datalayer-pool-purge")

    def _purge(self) -> None:
        try:
            self.check()
        except Exception as e:  # the pool may be closing; nothing to purge then
            log.debug("datalayer: pool purge skipped: %s", e)


def connect_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection parameters every datalayer connection gets (beyond the target's).

    Behind a transaction pooler (DATABASE_POOLER=transaction) no ``options`` (PgBouncer refuses it, or
    drops it silently with ``ignore_startup_parameters``: the sessions get their settings from
    ``ALTER ROLE … SET`` or the pooler's ``connect_query``, and each transaction from ``SET LOCAL``) and no
    server-side prepared statements (the next transaction may run on another server connection).
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "application_name": settings.application_name,
        "connect_timeout": str(settings.connect_timeout),
        **network_params(settings),
    }
    if settings.pooler == "none":
        kwargs["options"] = settings.session_options()
    else:
        kwargs["prepare_threshold"] = None
    return kwargs


def _configure(settings: Settings) -> Job[DataLayerConnection, None]:
    limit, cancel = wait_limit(settings), float(settings.connect_timeout)
    begin = transaction_settings(settings)

    def configure(conn: DataLayerConnection) -> None:
        conn._dl_wait_limit = limit
        conn._dl_cancel_timeout = cancel
        conn._dl_begin = begin

    return configure


def open_pool(
    settings: Settings | None = None,
    *,
    target: DatabaseTarget | None = None,
    name: str = "datalayer",
    wait: bool = False,
) -> DataLayerPool:
    """Open a pool on ``target`` (default: the database ``settings`` configure) with ``settings``
    (default: from the environment).

    POOL_SIZE connections are kept (POOL_MIN_SIZE of them opened eagerly), up to MAX_OVERFLOW more under
    load; POOL_TIMEOUT bounds the wait for one and POOL_RECYCLE their lifetime. The first connection is
    made right away, so that a wrong password or host fails here with a clear message. Nothing is
    started or migrated: ``datalayer.open_pool`` (``datalayer.defaults``) also falls back to the
    embedded server and migrates it.
    """
    settings = settings or Settings.from_env()
    if target is None:
        target = settings.database
    if target is None:
        raise ConfigError(
            "no database is configured for this pool; set DATABASE_URL, pass target=, or use "
            "datalayer.open_pool() (which falls back to the embedded PostgreSQL)",
            variable="DATABASE_URL",
        )
    _probe(settings, target)
    pool = DataLayerPool(
        settings,
        target,
        conninfo=target.conninfo(),
        kwargs=connect_kwargs(settings),
        connection_class=DataLayerConnection,
        configure=_configure(settings),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
        max_lifetime=settings.pool_recycle,
        name=name,
        open=False,
    )
    try:
        pool.open(wait=wait, timeout=settings.pool_timeout)
    except PoolTimeout:  # wait=True: the first POOL_MIN_SIZE connections did not all open in time
        pool.close()
        raise TransientError(
            f"the pool could not open its first {settings.pool_min_size} connections (POOL_MIN_SIZE) to "
            f"{target.display} within {settings.pool_timeout:g} s (POOL_TIMEOUT); is the server refusing "
            "connections (max_connections)? lower POOL_MIN_SIZE or try again later"
        ) from None
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
        if "unsupported startup parameter" in text:
            raise ConfigError(
                f"{msg}; behind PgBouncer in transaction mode? set DATABASE_POOLER=transaction",
                variable="DATABASE_POOLER",
            ) from None
        if any(m in text for m in _CONFIG_FAILURES) or e.sqlstate in ("28P01", "28000", "3D000"):
            raise ConfigError(
                f"{msg}; check DATABASE_URL (user, password, database name, TLS and authentication parameters)",
                variable="DATABASE_URL",
            ) from None
        raise TransientError(f"{msg}; is the server running and reachable?", sqlstate=e.sqlstate) from None
    _configure(settings)(conn)
    return conn


def _probe(settings: Settings, target: DatabaseTarget) -> None:
    conn = connect(settings, target)
    try:
        if settings.pooler != "none" and (drift := session_drift(conn, settings)):
            log.warning(
                "datalayer: reads outside transactions through the pooler at %s run with %s instead of the "
                "settings; give the role the settings (`datalayer roles create`, or ALTER ROLE <user> IN "
                "DATABASE <db> SET ...) or set them in PgBouncer's connect_query",
                target.display,
                ", ".join(drift),
            )
    finally:
        conn.close()


def session_drift(conn: psycopg.Connection[Any], settings: Settings) -> list[str]:
    """The session settings that ``conn``'s session (outside a transaction) holds with another value than
    ``settings``, as ``name=value (want value)``; each wanted value as the server spells it."""
    names, wanted = list(settings.session_settings()), list(settings.session_settings().values())
    have = (conn.execute("SELECT current_setting(k) FROM unnest(%s::text[]) k", (names,))).fetchall()
    # set_config(..., true) in a statement of its own lasts only for that statement: it spells the value
    want = (
        conn.execute("SELECT set_config(k, v, true) FROM unnest(%s::text[], %s::text[]) t(k, v)", (names, wanted))
    ).fetchall()
    return [f"{n}={h[0]} (want {w[0]})" for n, h, w in zip(names, have, want, strict=True) if h[0] != w[0]]


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
def connection(pool: DataLayerPool, *, timeout: float | None = None) -> Iterator[DataLayerConnection]:
    """Borrow a connection of ``pool`` in autocommit mode for the ``with`` block.

    ``datalayer.connection()`` (``datalayer.aio.connection()``) does the same on the default pool.

    >>> with connection(pool) as db:               # doctest: +SKIP
    ...     user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)
    """
    if not isinstance(pool, DataLayerPool):
        wanted = DataLayerPool.__name__
        raise ValidationError({"pool": f"must be a {wanted} (open_pool()), got {type(pool).__name__}"})
    conn = checkout(pool, timeout)
    try:
        yield conn
    finally:
        give_back(pool, conn)
