"""The dependency functions behind ``datalayer.fastapi``'s ``Db``, ``Tx``, ``AsyncDb`` and ``AsyncTx``.

Each lends one pooled connection per request as a lease (``datalayer._lease``): it behaves as the
connection for the handler and refuses use once the handler returned, so a ``BackgroundTask`` or a
``StreamingResponse`` handed the request's ``db`` gets a clear error instead of running inside the
next request's transaction on the same connection.

The sync pair waits for its connection without holding one of the threads ``def`` handlers run on.
FastAPI runs a sync yield dependency (``Depends(get_db)``) in its worker-thread pool (anyio's 40
threads); under a burst every thread blocks in the pool's checkout while the requests that hold the
connections wait for a thread to run their handler, and most requests end with PoolExhausted. Here the
waits happen in threads of a limiter of their own, so connection holders always find a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Annotated, TypeVar, cast

import anyio
import anyio.to_thread
from fastapi import Depends, Request

from datalayer import aio, pool
from datalayer._fastapi_checks import Flavours, check_route
from datalayer._lease import Lease, lent
from datalayer.defaults import default_pool
from datalayer.errors import PoolExhausted
from datalayer.pool import DataLayerConnection, DataLayerPool
from datalayer.pool_async import AsyncDataLayerConnection
from datalayer.transactions import transaction as _sync_transaction
from datalayer.transactions_async import transaction as _async_transaction

__all__ = [
    "AsyncDb",
    "AsyncTx",
    "Db",
    "Tx",
    "get_async_db",
    "get_async_tx",
    "get_sync_db",
    "get_tx",
    "per_loop",
]

T = TypeVar("T")

# Threads that may wait in the sync pool's checkout at once (per event loop). More requests queue
# here, without a thread. A checkout that finds a free connection takes microseconds, so a few
# threads hand connections out as fast as requests give them back.
CHECKOUT_THREADS = 16
_limiters: weakref.WeakKeyDictionary[object, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()

# FastAPI passes a Request to the dependencies of HTTP routes only: a websocket route gets this.
NO_REQUEST = cast(Request, None)


class _Other:
    """Stands for an event loop that is not asyncio's (trio): one key for all of them."""


_OTHER = _Other()


def per_loop(store: weakref.WeakKeyDictionary[object, T], make: Callable[[], T]) -> T:
    """The value ``store`` holds for the running event loop, made on first use: anyio's locks and
    limiters belong to the loop they first wait on (a process may run several, as tests do)."""
    try:
        loop: object = asyncio.get_running_loop()
    except RuntimeError:
        loop = _OTHER
    value = store.get(loop)
    if value is None:
        value = store[loop] = make()
    return value


def _limiter() -> anyio.CapacityLimiter:
    return per_loop(_limiters, lambda: anyio.CapacityLimiter(CHECKOUT_THREADS))


def _blocking_checkout(started: float, timeout: float | None) -> tuple[DataLayerPool, DataLayerConnection]:
    target = default_pool()  # here: opening it on first use blocks (an embedded server may start)
    wait = target.timeout if timeout is None else timeout
    remaining = wait - (time.monotonic() - started)  # the time spent queueing for a thread counts
    try:
        return target, pool.checkout(target, max(remaining, 0.001))
    except PoolExhausted:
        if remaining >= wait:
            raise
        # The message would name the short remainder; the request waited the whole POOL_TIMEOUT
        # (the pool's own wording, from its module).
        raise pool._exhausted(target, wait) from None


async def _sync_checkout(timeout: float | None = None) -> tuple[DataLayerPool, DataLayerConnection]:
    """A connection of ``datalayer``'s default pool, waited for (``timeout``, default POOL_TIMEOUT, from
    now) in a thread of our own limiter, never one of the handlers'."""
    # anyio shields a running worker thread from cancellation and returns its result: the caller
    # owns the connection from here (a pending cancellation is delivered at its next await).
    return await anyio.to_thread.run_sync(_blocking_checkout, time.monotonic(), timeout, limiter=_limiter())


async def _sync_give_back(target: DataLayerPool, conn: DataLayerConnection) -> None:
    """Return ``conn`` (a rollback or session reset may be a round trip) in a thread of its own limiter,
    shielded: with every limited thread waiting for a connection, the one that frees a slot must not
    queue behind them, nor be cut short by a disconnecting client."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(pool.give_back, target, conn, limiter=anyio.CapacityLimiter(1))


async def get_sync_db(request: Request = NO_REQUEST) -> AsyncIterator[DataLayerConnection]:
    """The dependency behind ``Db``: one connection of ``datalayer``'s default pool for a ``def``
    handler (autocommit), given back when the handler returns; it refuses use after that."""
    check_route(request, FLAVOURS)
    target, conn = await _sync_checkout()
    lease = Lease(conn, target)
    try:
        yield cast(DataLayerConnection, lease)
    finally:
        conn_back = lease.release()
        if conn_back is not None:
            await _sync_give_back(target, conn_back)


async def get_async_db(request: Request = NO_REQUEST) -> AsyncIterator[AsyncDataLayerConnection]:
    """The dependency behind ``AsyncDb``: one connection of ``datalayer.aio``'s default pool for an
    ``async def`` handler (autocommit), given back when the handler returns; it refuses use after that."""
    check_route(request, FLAVOURS)
    async with lent(await aio.default_pool()) as db:
        yield db


# Public as datalayer.fastapi's; documented there.
Db = Annotated[DataLayerConnection, Depends(get_sync_db, scope="function")]
AsyncDb = Annotated[AsyncDataLayerConnection, Depends(get_async_db, scope="function")]


@asynccontextmanager
async def _in_worker_threads(cm: AbstractContextManager[T]) -> AsyncIterator[T]:
    """Enter and exit a blocking context manager in worker threads, never on the event loop.

    FastAPI's own wrapper for sync yield dependencies enters and exits in two threads, each in a fresh
    copy of the request's context: ``transaction()`` could not reset the context variable it set on
    entry (the current transaction), and the handler, which runs in a third copy, would not see it. So
    both halves run in one context of their own, and what the entry set there is mirrored into the
    request's context for the handler (``current_transaction()``, ``on_commit(hook)``, the cache's
    commit-tied invalidation).
    """
    ctx = contextvars.copy_context()
    value = await anyio.to_thread.run_sync(ctx.run, cm.__enter__)
    missing = object()
    tokens = [var.set(val) for var, val in ctx.items() if var.get(missing) is not val]
    # Exits get a limiter of their own (as FastAPI's do): with every worker thread taken by handlers,
    # the COMMIT that frees a connection must not queue behind them.
    exit_limiter = anyio.CapacityLimiter(1)
    try:
        try:
            yield value
        except BaseException as e:
            with anyio.CancelScope(shield=True):  # a disconnecting client must not cut a ROLLBACK short
                suppressed = await anyio.to_thread.run_sync(
                    ctx.run, cm.__exit__, type(e), e, e.__traceback__, limiter=exit_limiter
                )
            if not suppressed:
                raise
        else:
            with anyio.CancelScope(shield=True):  # nor a COMMIT
                await anyio.to_thread.run_sync(ctx.run, cm.__exit__, None, None, None, limiter=exit_limiter)
    finally:
        for token in reversed(tokens):
            # The request's context ends with the request anyway; a reset refused there changes nothing.
            with contextlib.suppress(ValueError):
                token.var.reset(token)


async def get_tx(db: Db) -> AsyncIterator[DataLayerConnection]:
    """The unit of work behind ``Tx``: ``transaction(db)`` on the request's ``Db`` connection, committed
    when the handler returns (before the response is sent) and rolled back when it raises."""
    # An async generator over worker threads, not a sync one: see _in_worker_threads.
    async with _in_worker_threads(_sync_transaction(db)) as tx:
        yield tx


async def get_async_tx(db: AsyncDb) -> AsyncIterator[AsyncDataLayerConnection]:
    """The unit of work behind ``AsyncTx``: ``datalayer.aio.transaction(db)`` on the request's ``AsyncDb``
    connection, committed when the handler returns (before the response is sent), rolled back when it raises."""
    cm = _async_transaction(db)
    tx = await cm.__aenter__()
    try:
        yield tx
    except BaseException as e:
        with anyio.CancelScope(shield=True):  # a disconnecting client must not cut a ROLLBACK short
            if not await cm.__aexit__(type(e), e, e.__traceback__):
                raise
    else:
        with anyio.CancelScope(shield=True):  # nor a COMMIT
            await cm.__aexit__(None, None, None)


Tx = Annotated[DataLayerConnection, Depends(get_tx, scope="function")]
AsyncTx = Annotated[AsyncDataLayerConnection, Depends(get_async_tx, scope="function")]

FLAVOURS = Flavours(
    sync={get_sync_db: "Db", get_tx: "Tx"},
    async_={get_async_db: "AsyncDb", get_async_tx: "AsyncTx"},
)
