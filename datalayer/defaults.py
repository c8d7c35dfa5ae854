"""The process defaults: which database (configured or embedded), the default pool, the exit order.

The only module that knows all of these. ``datalayer.pool`` only pools and ``datalayer.embedded``
only runs servers; what needs "the default" (``connection()``, ``get_db()``, ``transaction()``, the
log handler, the cache's table layer, the test plugin, the CLI, the tools' default target) asks here,
so all of them follow one target.

- The target is ``DATABASE_URL`` (or its parts) when set; else the embedded PostgreSQL, started on
  demand and migrated before its pool opens (a configured server is never migrated implicitly).
- The default pool opens lazily, in the process that first asks for a connection (a forked child gets
  its own), and ``set_default_pool`` replaces it (tests, dependency injection).
- At exit: flush what registered with ``on_exit`` (log handlers), close the cache and the pools, then
  stop the embedded servers no other process uses.

>>> from datalayer import connection, transaction, user_repo
>>> with connection() as db:                                           # doctest: +SKIP
...     user = user_repo.get_by_id(db, 1)
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar, overload

import psycopg

from datalayer import _default_target, embedded, transactions
from datalayer._lease import lend
from datalayer._read_your_writes import hold
from datalayer._replicas import replica_connection
from datalayer.config import DatabaseTarget, Settings
from datalayer.pool import DataLayerConnection, DataLayerPool
from datalayer.pool import connection as _pool_connection
from datalayer.pool import open_pool as _open_pool

__all__ = [
    "close_default_pool",
    "connection",
    "default_pool",
    "default_target",
    "get_db",
    "on_exit",
    "open_pool",
    "ready_target",
    "resolve_database",
    "set_default_pool",
    "transaction",
]

log = logging.getLogger("datalayer")
C = TypeVar("C", bound=psycopg.Connection[Any])

_default: DataLayerPool | None = None
_default_pid: int | None = None
_default_lock = threading.Lock()
_forked_leftovers: list[object] = []
# Run at exit before the pools close and the embedded servers stop (log handlers flush here).
_on_exit: list[Callable[[], object]] = []


def resolve_database(settings: Settings) -> DatabaseTarget:
    """The configured database, or the embedded one (started on demand) when nothing is configured."""
    if settings.database is not None:
        return settings.database
    return embedded.start_embedded_postgres(settings)


def default_target(settings: Settings | None = None) -> DatabaseTarget:
    """The database this process talks to: the open default pool's, else the one ``settings`` name
    (default: from the environment), else the embedded one."""
    pool = _default
    if pool is not None and _default_pid == os.getpid():
        return pool.target
    return resolve_database(settings or Settings.from_env())


def open_pool(
    settings: Settings | None = None,
    *,
    target: DatabaseTarget | None = None,
    name: str = "datalayer",
    wait: bool = False,
) -> DataLayerPool:
    """Open a pool for ``settings`` (default: from the environment) on ``target`` (default: the configured
    database, else the embedded one).

    An embedded server is migrated before the pool opens; a configured server never is. Otherwise as
    ``datalayer.pool.open_pool``: POOL_SIZE connections kept, up to MAX_OVERFLOW more under load, and a
    wrong password or host fails here with a clear message.
    """
    settings = settings or Settings.from_env()
    return _open_pool(settings, target=ready_target(settings, target), name=name, wait=wait)


def ready_target(settings: Settings, target: DatabaseTarget | None = None) -> DatabaseTarget:
    """The database a pool of the process defaults opens on, ready: ``target``, else the configured
    one, else the embedded one (started on demand). An embedded server is migrated first; a configured
    server never is. It blocks (server start, migrations): async code runs it in a worker thread.
    """
    target = target or resolve_database(settings)
    if target.embedded:
        # Layer 6 (tools) below this one: a module-level import would be fine, but keep import time short.
        from datalayer.migrate import setup_database

        setup_database(target=target, settings=settings)
    return target


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


def set_default_pool(pool: DataLayerPool | None) -> DataLayerPool | None:
    """Install ``pool`` as the default (tests, dependency injection); returns the previous one."""
    global _default, _default_pid
    with _default_lock:
        previous = _default
        _default = pool
        _default_pid = os.getpid() if pool is not None else None
        return previous


def close_default_pool() -> None:
    """Close the default pool (done at exit); the next use opens a new one."""
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


@contextmanager
def connection(
    pool: DataLayerPool | None = None, *, timeout: float | None = None, replica: bool = False
) -> Iterator[DataLayerConnection]:
    """Borrow a connection of ``pool`` (default: the default pool) in autocommit mode for the ``with`` block.

    ``replica=True``: a connection for reads, on a healthy replica of the pool's database
    (DATABASE_REPLICA_URLS) that has replayed this context's writes, else on the primary; it refuses
    writes and ``transaction()`` wherever it landed.

    >>> with connection() as db:                   # doctest: +SKIP
    ...     user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)
    >>> with connection(replica=True) as db:       # doctest: +SKIP
    ...     page = user_repo.find(db, limit=50)
    """
    hold()  # tasks and threads started inside share this context's read-your-writes mark
    opener = replica_connection if replica else _pool_connection
    with opener(pool or default_pool(), timeout=timeout) as conn:
        yield conn


def get_db() -> Iterator[DataLayerConnection]:
    """A generator lending one connection of the default pool: for FastAPI's ``Depends(get_db)`` and
    for ``next(get_db())``.

    With ``Depends``, the connection returns to the pool when the request ends; open the request's
    unit of work on it with ``transaction(db)`` (no second connection). With the seed's
    ``db = next(get_db())`` the generator is dropped at once; the connection stays yours until you drop
    the value you got (whatever else still names the same pooled connection), then its slot goes back
    to the pool (closed, and replaced by a fresh one).
    """
    # A generator function (not one returning lend(...)): FastAPI treats only those as yield dependencies.
    yield from lend(default_pool())


@overload
def transaction() -> AbstractContextManager[DataLayerConnection]: ...


@overload
def transaction(db: C) -> AbstractContextManager[C]: ...


def transaction(db: psycopg.Connection[Any] | None = None) -> AbstractContextManager[Any]:
    """Group statements into one unit of work: COMMIT at the end of the block, ROLLBACK on error.

    ``transaction(db)`` runs on the connection you hold (in a FastAPI handler, the request's
    ``Depends(get_db)`` connection: one pool slot per request) and yields it; inside another
    ``transaction(db)`` block it is a savepoint. ``transaction()`` borrows a connection of the default
    pool for the block.

    >>> @app.post("/users")                                             # doctest: +SKIP
    ... def create_user(body: NewUser, db: Connection = Depends(get_db)) -> User:
    ...     with transaction(db):
    ...         return user_repo.create(db, **body.model_dump())
    """
    if db is None:
        return _borrowed_transaction()
    return transactions.transaction(db)


@contextmanager
def _borrowed_transaction() -> Iterator[DataLayerConnection]:
    with connection() as conn, transactions.transaction(conn) as tx:
        yield tx


def on_exit(hook: Callable[[], object]) -> None:
    """Run ``hook`` at exit before the cache and the pools close and the embedded servers stop.

    atexit runs handlers in reverse registration order, so a handler registered before a server
    started would otherwise run after it stopped: the last log records would have nowhere to go.
    """
    _on_exit.append(hook)


def _at_exit() -> None:
    """The exit order: flush (``on_exit`` hooks, log handlers), close the cache and the pools, then stop
    the embedded servers.

    Registered when this module is imported (``import datalayer`` does it), so it runs after the exit
    hooks a service registers later, which may still use the database; a server start requested after
    it (a log handler's writer still connecting) is refused, since atexit ignores hooks registered
    while it runs.
    """
    for hook in reversed(_on_exit):
        try:
            hook()
        except Exception as e:  # exit must go on
            log.debug("datalayer: exit hook %r failed: %s", hook, e)
    cache = sys.modules.get("datalayer.cache.manager")  # never imported just to close it
    if cache is not None:
        with contextlib.suppress(Exception):
            cache.close_cache_manager()
    close_default_pool()
    embedded.stop_servers()


atexit.register(_at_exit)
_default_target.provide(default_target=default_target, resolve_database=resolve_database)
