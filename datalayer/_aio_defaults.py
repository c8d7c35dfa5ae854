"""The async process defaults (``datalayer.aio``): the default async pool on the sync defaults' target.

The same settings (``Settings.from_env()``) and the same database as ``datalayer.defaults``: the
configured one, else the embedded one, started and migrated before its pool opens (in a worker
thread: the event loop keeps serving meanwhile). Hand-kept beside ``datalayer.defaults`` rather than
generated from one source: what a process default is differs between the two (a lock shared by
threads and a fork hook there; one pool per event loop, closed with it, here).

- An async pool belongs to the event loop it opened in, so the default pool opens lazily once per
  loop (and per process), and closes when that loop shuts down: ``asyncio.run`` (and anyio, uvicorn)
  cancel every task left before closing the loop, and a task of ours waits for exactly that to close
  the pool. It must: psycopg_pool's workers survive a cancellation met while they connect, and a
  pool left open would hang that shutdown. ``set_default_pool`` installs a pool of the caller's own
  (tests, dependency injection), which the caller closes.
- At exit, before the sync pools close and the embedded servers stop, a pool whose loop is still
  open but no longer running is closed on it.

>>> from datalayer.aio import connection, user_repo                      # doctest: +SKIP
>>> async with connection() as db:
...     user = await user_repo.get_by_id(db, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar, overload

import psycopg

from datalayer import defaults, transactions_async
from datalayer._acompat import ablocking
from datalayer._lease import lent
from datalayer._pooled_async import AsyncDataLayerConnection
from datalayer._read_your_writes import hold
from datalayer._replicas_async import replica_connection
from datalayer.config import DatabaseTarget, Settings
from datalayer.errors import ValidationError
from datalayer.pool_async import AsyncDataLayerPool
from datalayer.pool_async import connection as _pool_connection
from datalayer.pool_async import open_pool as _open_pool

__all__ = [
    "close_default_pool",
    "connection",
    "default_pool",
    "get_db",
    "open_pool",
    "set_default_pool",
    "transaction",
]

log = logging.getLogger("datalayer")
C = TypeVar("C", bound=psycopg.AsyncConnection[Any])

_Loop = asyncio.AbstractEventLoop

# The pool set_default_pool installed (any loop: the caller's), and the process it belongs to.
_installed: AsyncDataLayerPool | None = None
_installed_pid: int | None = None
# Pools opened lazily, one per event loop, each with the task that closes it when its loop shuts
# down; the pid they were opened in (a forked child opens its own).
_opened: dict[_Loop, tuple[AsyncDataLayerPool, asyncio.Task[None]]] = {}
_opened_pid: int | None = None
# One opener per loop at a time (dropped with the loop's pool).
_opening: dict[_Loop, asyncio.Lock] = {}
# A forked child keeps its parent's pools referenced, unused (see _forget_forked).
_forked_leftovers: list[object] = []


async def open_pool(
    settings: Settings | None = None,
    *,
    target: DatabaseTarget | None = None,
    name: str = "datalayer",
    wait: bool = False,
) -> AsyncDataLayerPool:
    """Open an async pool for ``settings`` (default: from the environment) on ``target`` (default: the
    configured database, else the embedded one).

    An embedded server is started and migrated first, in a worker thread; a configured server is never
    migrated. Otherwise as ``datalayer.pool_async.open_pool``: POOL_SIZE connections kept, up to
    MAX_OVERFLOW more under load, and a wrong password or host fails here with a clear message.
    """
    settings = settings or Settings.from_env()
    ready = await ablocking(defaults.ready_target, settings, target)
    return await _open_pool(settings, target=ready, name=name, wait=wait)


async def default_pool() -> AsyncDataLayerPool:
    """The default async pool: the one ``set_default_pool`` installed, else this event loop's, opened
    on first use from ``Settings.from_env()`` on the same database as ``datalayer.default_pool()``."""
    pid = os.getpid()
    if _installed is not None and _installed_pid == pid:
        return _installed
    loop = asyncio.get_running_loop()
    if _opened_pid == pid and (entry := _opened.get(loop)) is not None:
        return entry[0]
    lock = _opening.setdefault(loop, asyncio.Lock())
    async with lock:
        _forget_forked()
        entry = _opened.get(loop)
        if entry is None:
            # Filled before use: a connection still being made when the loop shuts down would be
            # cancelled mid-way, and psycopg_pool logs a warning for each.
            pool = await open_pool(wait=True)
            started = asyncio.Event()
            closer = loop.create_task(_close_at_shutdown(pool, started), name="datalayer-default-pool-closer")
            entry = _opened[loop] = (pool, closer)
            await started.wait()  # a task cancelled before its first step would never run its finally
        return entry[0]


def _forget_forked() -> None:
    global _opened_pid
    if _opened_pid != os.getpid():
        # A forked child: the parent's sockets are shared with us, and its loops are not ours. Keep
        # the parent's pools referenced (unused) rather than closing the parent's connections.
        _forked_leftovers.extend(_opened.values())
        _opened.clear()
        _opened_pid = os.getpid()


async def _close_at_shutdown(pool: AsyncDataLayerPool, started: asyncio.Event) -> None:
    """Wait until cancelled (the loop shutting down, ``close_default_pool``), then close ``pool``."""
    try:
        started.set()
        await asyncio.get_running_loop().create_future()
    finally:
        _forget(pool)
        await _close_quietly(pool)


def _forget(pool: AsyncDataLayerPool) -> None:
    for loop, (opened, _closer) in list(_opened.items()):
        if opened is pool:
            del _opened[loop]
            _opening.pop(loop, None)


async def _close_quietly(pool: AsyncDataLayerPool) -> None:
    # At loop shutdown psycopg_pool's workers are cancelled with us, and its close() stops at waiting
    # for them (a CancelledError) before it closes the idle connections: close those first.
    for _ in range(pool.get_stats().get("pool_available", 0)):
        try:
            conn = await pool.getconn(timeout=0.01)
        except Exception:
            break
        await conn.close()  # not given back: the pool would log each one it discards
    try:
        await pool.close()
    except (Exception, asyncio.CancelledError) as e:  # shutting down: nothing to report to
        log.debug("datalayer: closing the default async pool failed: %r", e)


def set_default_pool(pool: AsyncDataLayerPool | None) -> AsyncDataLayerPool | None:
    """Install ``pool`` as the default async pool (tests, dependency injection), or ``None`` to go back
    to the lazily opened ones; returns the previously installed one. The caller opened it (it serves
    the event loop it was opened in) and closes it."""
    global _installed, _installed_pid
    if pool is not None and not isinstance(pool, AsyncDataLayerPool):
        raise ValidationError({"pool": f"must be an AsyncDataLayerPool or None, got {type(pool).__name__}"})
    previous = _installed if _installed_pid == os.getpid() else None
    _installed = pool
    _installed_pid = os.getpid() if pool is not None else None
    return previous


async def close_default_pool() -> None:
    """Close the default async pool (the installed one, else this loop's); the next use opens a new one."""
    global _installed, _installed_pid
    if _installed is not None and _installed_pid == os.getpid():
        pool, _installed, _installed_pid = _installed, None, None
        await pool.close()
        return
    entry = _opened.get(asyncio.get_running_loop()) if _opened_pid == os.getpid() else None
    if entry is not None:
        entry[1].cancel()  # its task closes the pool and forgets it
        await asyncio.wait([entry[1]])


def _close_idle_loops() -> None:
    """At exit: close the pools whose loop is still open but no longer runs (loop.run_until_complete
    without asyncio.run's shutdown); a running or closed loop's pool cannot be closed from here."""
    if _opened_pid != os.getpid():
        return
    for loop, (_pool, closer) in list(_opened.items()):
        if not loop.is_closed() and not loop.is_running():
            closer.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait([closer]))


defaults.on_exit(_close_idle_loops)


@asynccontextmanager
async def connection(
    pool: AsyncDataLayerPool | None = None, *, timeout: float | None = None, replica: bool = False
) -> AsyncIterator[AsyncDataLayerConnection]:
    """Borrow a connection of ``pool`` (default: the default async pool) in autocommit mode for the
    ``async with`` block.

    ``replica=True``: a connection for reads, on a healthy replica of the pool's database
    (DATABASE_REPLICA_URLS) that has replayed this task's writes, else on the primary; it refuses
    writes and ``transaction()`` wherever it landed.

    >>> async with connection() as db:             # doctest: +SKIP
    ...     await user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)
    >>> async with connection(replica=True) as db:  # doctest: +SKIP
    ...     page = await user_repo.find(db, limit=50)
    """
    hold()  # tasks and threads started inside share this task's read-your-writes mark
    opener = replica_connection if replica else _pool_connection
    async with opener(pool or await default_pool(), timeout=timeout) as conn:
        yield conn


async def get_db() -> AsyncIterator[AsyncDataLayerConnection]:
    """An async generator lending one connection of the default async pool, for FastAPI's
    ``Depends(get_db)``: the connection returns to the pool when the request ends.

    What you get behaves as the connection (also for ``isinstance``) and refuses use once it went back
    (a ``BackgroundTask`` or a ``StreamingResponse`` given it takes ``async with connection() as db:``
    instead). Open the request's unit of work on it with ``transaction(db)`` (no second connection).
    Outside ``Depends`` use ``async with connection() as db:``; a generator abandoned after ``anext``
    gives its connection back closed, and what the caller holds refuses use.
    """
    async with lent(await default_pool()) as conn:
        yield conn


@overload
def transaction() -> AbstractAsyncContextManager[AsyncDataLayerConnection]: ...


@overload
def transaction(db: C) -> AbstractAsyncContextManager[C]: ...


def transaction(db: psycopg.AsyncConnection[Any] | None = None) -> AbstractAsyncContextManager[Any]:
    """Group statements into one unit of work: COMMIT at the end of the block, ROLLBACK on error.

    ``transaction(db)`` runs on the connection you hold (in a FastAPI handler, the request's
    ``Depends(get_db)`` connection: one pool slot per request) and yields it; inside another
    ``transaction(db)`` block it is a savepoint. ``transaction()`` borrows a connection of the default
    async pool for the block.

    >>> @app.post("/users")                                             # doctest: +SKIP
    ... async def create_user(body: NewUser, db: AsyncConnection = Depends(get_db)) -> User:
    ...     async with transaction(db):
    ...         return await user_repo.create(db, **body.model_dump())
    """
    if db is None:
        return _borrowed_transaction()
    return transactions_async.transaction(db)


@asynccontextmanager
async def _borrowed_transaction() -> AsyncIterator[AsyncDataLayerConnection]:
    async with connection() as conn, transactions_async.transaction(conn) as tx:
        yield tx
