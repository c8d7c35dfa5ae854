"""The lease ``get_db()`` hands out: a stand-in for a pooled connection whose slot comes back when the
lease itself is dropped.

Sync only, and hand-kept: ``db = next(get_db())`` (the seed's idiom) drops the generator at once, so
the loan must outlive it. ``datalayer.aio.get_db()`` needs no lease: an async generator is not
resumed by ``next()``, and under FastAPI's ``Depends`` both end with the request.

The pool lends the same connection objects again and again, so the connection's own reference count
says nothing about the caller that holds it now (a variable left from an earlier ``with
connection() as x:`` keeps it alive for good). A lease is a new object per loan: its finalizer, not
the connection's, returns the slot.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Iterator
from typing import Any, cast

from datalayer._pooled import DataLayerConnection
from datalayer.errors import DataLayerError
from datalayer.pool import DataLayerPool, checkout, give_back

__all__ = ["Lease", "lend"]

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


class Lease:
    """One loan of a pooled connection: behaves as the connection, and gives its slot back when dropped.

    A finalizer may run at any point in any thread (even inside the pool's own lock): it only queues
    the connection (``SimpleQueue.put`` is reentrant) and a worker thread returns it.
    """

    __slots__ = ("__weakref__", "_dl_conn", "_dl_finalizer")

    def __init__(self, conn: DataLayerConnection, pool: DataLayerPool) -> None:
        _start_worker()
        object.__setattr__(self, "_dl_conn", conn)
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

    def _target(self) -> DataLayerConnection:
        conn: DataLayerConnection | None = self._dl_conn
        if conn is None:
            raise DataLayerError(
                "this get_db() connection went back to the pool when its loan ended (request, with block); "
                "take a new one (with connection() or get_db())"
            )
        return conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target(), name, value)

    @property  # type: ignore[misc]
    def __class__(self) -> type[Any]:  # isinstance(lease, psycopg.Connection) holds, as for the connection
        conn = self._dl_conn
        return type(conn) if conn is not None else type(self)

    def __repr__(self) -> str:
        return f"<get_db lease of {self._dl_conn!r}>"


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
        _end(pool, lease)
        raise
    else:
        _end(pool, lease)


def _end(pool: DataLayerPool, lease: Lease) -> None:
    conn = lease.release()
    if conn is not None:
        give_back(pool, conn)
