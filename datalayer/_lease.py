"""The leases ``get_db()`` hands out: stand-ins for a pooled connection that refuse use once the loan
is over, so a connection lent for one request never serves code that outlives it.

The pool lends the same connection objects again and again: a handle kept past its loan (a
``BackgroundTask`` or a ``StreamingResponse`` given the request's ``db``, a variable left from a
``with`` block) would run inside whatever the next borrower does with the connection (its
transaction, its rollback). A lease is a new object per loan and stops forwarding when the loan ends.

- ``Lease`` (sync, ``datalayer.get_db()``): ``db = next(get_db())`` (the seed's idiom) drops the
  generator at once, so the loan must outlive it: the lease's finalizer, not the connection's, returns
  the slot when the caller drops the lease.
- ``AsyncLease`` (``datalayer.aio.get_db()``, ``datalayer.fastapi``'s ``AsyncDb``): an async
  generator is not resumed by ``next()``, so the loan ends with the generator (the request).

Hand-kept rather than generated from one source: what ends a loan differs between the two.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar, cast

from datalayer import pool_async
from datalayer._pooled import DataLayerConnection
from datalayer._pooled_async import AsyncDataLayerConnection
from datalayer.errors import DataLayerError
from datalayer.pool import DataLayerPool, checkout, give_back
from datalayer.pool_async import AsyncDataLayerPool

__all__ = ["AsyncLease", "Lease", "lend", "lent"]

log = logging.getLogger("datalayer")

_returns: queue.SimpleQueue[tuple[DataLayerConnection, DataLayerPool]] = queue.SimpleQueue()
_worker: threading.Thread | None = None
_worker_lock = threading.Lock()


def _return_dropped() -> None:
    while True:
        conn, pool = _returns.get()
        try:
            # Closed rather than reused: the caller may have left it in any state.
            conn.close()
            pool.putconn(conn)
        except Exception as e:
            log.debug("datalayer: returning a dropped get_db() connection failed: %s", e)


def _start_worker() -> None:
    global _worker
    with _worker_lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_return_dropped, name="datalayer-leases", daemon=True)
            _worker.start()


class _StandIn:
    """Behaves as the connection it stands for (attributes, ``isinstance``) until the loan ends; then
    every use raises ``gone``, a DataLayerError naming the remedy, and ``closed`` is True."""

    __slots__ = ("__weakref__", "_dl_conn", "_dl_type")
    gone: ClassVar[str]

    def __init__(self, conn: Any) -> None:
        object.__setattr__(self, "_dl_conn", conn)
        # Kept after the loan: isinstance() still holds, so the execution layer's type check lets a
        # late call through to the clear error below instead of "must be a psycopg connection".
        object.__setattr__(self, "_dl_type", type(conn))

    def _target(self) -> Any:
        conn = self._dl_conn
        if conn is None:
            raise DataLayerError(self.gone)
        return conn

    def __getattr__(self, name: str) -> Any:
        if name == "closed" and self._dl_conn is None:
            return True  # for code that checks before use (the error comes on use)
        return getattr(self._target(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target(), name, value)

    @property  # type: ignore[misc]
    def __class__(self) -> type[Any]:  # isinstance(lease, psycopg.Connection) holds, as for the connection
        return cast(type[Any], self._dl_type)

    def __repr__(self) -> str:
        state = "ended" if self._dl_conn is None else repr(self._dl_conn)
        return f"<get_db lease of {state}>"


class Lease(_StandIn):
    """One loan of a pooled connection: behaves as the connection, and gives its slot back when dropped.

    A finalizer may run at any point in any thread (even inside the pool's own lock): it only queues
    the connection (``SimpleQueue.put`` is reentrant) and a worker thread returns it.
    """

    __slots__ = ("_dl_finalizer",)
    gone = (
        "this db connection went back to the pool when its loan ended (the request of Db, Tx or "
        "Depends(get_db); a with block): a BackgroundTask or a StreamingResponse runs after that. Take "
        "a connection of its own there: `with datalayer.connection() as db:`"
    )

    def __init__(self, conn: DataLayerConnection, pool: DataLayerPool) -> None:
        _start_worker()
        super().__init__(conn)
        fin = weakref.finalize(self, _returns.put, (conn, pool))
        fin.atexit = False
        object.__setattr__(self, "_dl_finalizer", fin)

    def release(self) -> DataLayerConnection | None:
        """End the loan now (the caller returns the connection); None when it was already ended."""
        conn: DataLayerConnection | None = self._dl_conn
        if conn is None or not self._dl_finalizer.detach():
            return None
        object.__setattr__(self, "_dl_conn", None)
        return conn

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        """``with next(get_db()) as db:`` ends the loan at the end of the block (the connection is closed)."""
        if self._dl_conn is not None:
            self._dl_finalizer()  # queues the connection for return, once
            object.__setattr__(self, "_dl_conn", None)


class AsyncLease(_StandIn):
    """One loan of a pooled async connection, ended by whoever lent it (``lent``)."""

    __slots__ = ()
    gone = (
        "this db connection went back to the pool when the handler returned (AsyncDb, AsyncTx, "
        "Depends(datalayer.aio.get_db)): a BackgroundTask or a StreamingResponse runs after that. Take a "
        "connection of its own there: `async with datalayer.aio.connection() as db:`"
    )

    def __init__(self, conn: AsyncDataLayerConnection) -> None:
        super().__init__(conn)

    def release(self) -> AsyncDataLayerConnection | None:
        """End the loan now (the caller returns the connection); None when it was already ended."""
        conn: AsyncDataLayerConnection | None = self._dl_conn
        object.__setattr__(self, "_dl_conn", None)
        return conn


def lend(pool: DataLayerPool) -> Iterator[DataLayerConnection]:
    """A generator lending one connection of ``pool``: the body of ``datalayer.get_db()``.

    Used with FastAPI's ``Depends``, the connection returns to the pool when the request ends. With
    ``db = next(...)`` the generator is dropped at once; the connection stays yours until you drop
    the value you got (whatever else still names the same pooled connection), then its slot goes back
    to the pool (closed, and replaced by a fresh one).
    """
    lease = Lease(checkout(pool), pool)
    try:
        yield cast(DataLayerConnection, lease)
    except GeneratorExit:
        raise  # next(get_db()): the lease's finalizer returns the slot when the caller drops it
    except BaseException:
        end(pool, lease)
        raise
    else:
        end(pool, lease)


def end(pool: DataLayerPool, lease: Lease) -> None:
    """End ``lease`` and give its connection back to ``pool`` (nothing when it was already ended)."""
    conn = lease.release()
    if conn is not None:
        give_back(pool, conn)


@asynccontextmanager
async def lent(pool: AsyncDataLayerPool) -> AsyncIterator[AsyncDataLayerConnection]:
    """One connection of the async ``pool`` for the block, as an ``AsyncLease`` that refuses use after it.

    A generator abandoned inside the block (``await anext(get_db())``, then dropped) gives the
    connection back closed: the caller may still hold a cursor of it.
    """
    lease = AsyncLease(await pool_async.checkout(pool))
    try:
        yield cast(AsyncDataLayerConnection, lease)
    except GeneratorExit:
        conn = lease.release()
        if conn is not None:
            await conn.close()
            await pool_async.give_back(pool, conn)
        raise
    finally:
        conn = lease.release()
        if conn is not None:
            await pool_async.give_back(pool, conn)
