"""FastAPI integration: request dependencies, exception handlers and health routes (extra ``[fastapi]``).

>>> from fastapi import FastAPI                                            # doctest: +SKIP
>>> from datalayer.aio import user_repo
>>> from datalayer.fastapi import AsyncDb, AsyncTx, add_exception_handlers, health_router
>>> app = FastAPI()
>>> add_exception_handlers(app)           # NotFound -> 404, IntegrityConflict -> 409, ...
>>> app.include_router(health_router())   # GET /health/live, GET /health/ready
>>> @app.get("/users/{user_id}")
... async def read_user(user_id: int, db: AsyncDb) -> dict[str, object]:
...     return {"name": (await user_repo.get_by_id(db, user_id)).username}
>>> @app.post("/users/{user_id}/deactivate")
... async def deactivate(user_id: int, db: AsyncTx) -> None:
...     await user_repo.update(db, user_id, is_active=False)    # COMMIT before the response is sent

``Db`` / ``AsyncDb`` lend one pooled connection (autocommit) for the handler; ``Tx`` / ``AsyncTx`` open a
unit of work on that same connection: COMMIT when the handler returns, ROLLBACK when it raises. One pool
slot per request, whichever of the two (or both) a handler and its sub-dependencies ask for. The sync
pair serves ``def`` handlers (``datalayer``'s default pool, ``datalayer.get_db``), the async pair ``async
def`` handlers (``datalayer.aio``'s default pool, ``datalayer.aio.get_db``).

All four are ``Depends(..., scope="function")`` (FastAPI 0.121 and later): the COMMIT runs when the handler
returns, before the response is sent, so a COMMIT that fails (a deferred constraint, a lost connection)
becomes an error response instead of a 200 for a write that never landed. The connection goes back to
the pool at the same moment: a ``StreamingResponse`` or a background task takes its own
(``async with datalayer.aio.connection() as db:``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Annotated, Literal, TypeVar

import anyio
import anyio.to_thread
import psycopg
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from datalayer import aio
from datalayer.config import DatabaseTarget, Settings
from datalayer.defaults import connection as _sync_connection
from datalayer.defaults import get_db
from datalayer.errors import (
    CommitUnknown,
    DataLayerError,
    IllegalTransition,
    IntegrityConflict,
    NotFound,
    PoolExhausted,
    TransientError,
    ValidationError,
)
from datalayer.health import HealthReport, check_database_health
from datalayer.pool import DataLayerConnection
from datalayer.pool_async import AsyncDataLayerConnection
from datalayer.project import Project
from datalayer.transactions import transaction as _sync_transaction
from datalayer.transactions_async import transaction as _async_transaction

__all__ = [
    "AsyncDb",
    "AsyncTx",
    "Db",
    "Tx",
    "add_exception_handlers",
    "error_response",
    "get_async_tx",
    "get_tx",
    "health_router",
]

log = logging.getLogger("datalayer.fastapi")
T = TypeVar("T")

# Seconds a client should wait before retrying a 503 (a busy pool, a serialization failure).
RETRY_AFTER = "1"


# -- dependencies --

Db = Annotated[DataLayerConnection, Depends(get_db, scope="function")]
"""A pooled connection of ``datalayer``'s default pool, in autocommit mode, for a ``def`` handler."""

AsyncDb = Annotated[AsyncDataLayerConnection, Depends(aio.get_db, scope="function")]
"""A pooled connection of ``datalayer.aio``'s default pool, in autocommit mode, for an ``async def`` handler."""


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
    # Exits get a limiter of their own (as FastAPI's do): with every worker thread taken by handlers
    # waiting for a pool slot, the COMMIT that frees one must not queue behind them.
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
"""The request's ``Db`` connection inside a transaction: COMMIT when a ``def`` handler returns, ROLLBACK
when it raises; a failing COMMIT is an error response, never a 200."""

AsyncTx = Annotated[AsyncDataLayerConnection, Depends(get_async_tx, scope="function")]
"""The request's ``AsyncDb`` connection inside a transaction: COMMIT when an ``async def`` handler
returns, ROLLBACK when it raises; a failing COMMIT is an error response, never a 200."""


# -- exception handlers --


def error_response(exc: DataLayerError) -> JSONResponse | None:
    """The response ``add_exception_handlers`` gives for ``exc``, or None for an error it leaves alone.

    Bodies are built from the exception's fields, never from its message: a message may name a query,
    its parameters or a server, which are for the log, not for the client.
    """
    if isinstance(exc, ValidationError):
        if isinstance(exc.__cause__, psycopg.Error):
            # Refused by PostgreSQL (a value out of range, too long): its message may quote the value.
            errors = {field: "is not a valid value" for field in exc.errors}
        else:
            errors = dict(exc.errors)
        return JSONResponse({"detail": "invalid input", "errors": errors}, status_code=422)
    if isinstance(exc, NotFound):
        return JSONResponse({"detail": "not found"}, status_code=404)
    if isinstance(exc, IntegrityConflict):
        return JSONResponse({"detail": _conflict_detail(exc), "field": exc.field}, status_code=409)
    if isinstance(exc, TransientError):
        busy = isinstance(exc, PoolExhausted)
        detail = "the service is busy" if busy else "the database could not complete the request"
        return JSONResponse(
            {"detail": f"{detail}; retry shortly"}, status_code=503, headers={"Retry-After": RETRY_AFTER}
        )
    if isinstance(exc, CommitUnknown):
        return JSONResponse(
            {
                "detail": "the outcome of the write is unknown: it may or may not have been saved; "
                "read it back before retrying"
            },
            status_code=500,
        )
    return None


def _conflict_detail(exc: IntegrityConflict) -> str:
    if isinstance(exc, IllegalTransition):
        return f"status cannot change from {exc.current} to {exc.target}"
    subject = exc.field or "the input"
    cause = exc.__cause__
    if isinstance(cause, psycopg.errors.UniqueViolation):
        return f"{subject} is already taken"
    if isinstance(cause, psycopg.errors.ForeignKeyViolation):
        if "still referenced" in (cause.diag.message_detail or ""):
            return "the row is still referenced by other rows"
        return f"{subject} refers to something that does not exist"
    if isinstance(cause, psycopg.errors.NotNullViolation):
        return f"{subject} is required"
    return f"{subject} conflicts with the stored data"


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    response = error_response(exc) if isinstance(exc, DataLayerError) else None
    if response is None:  # not ours: registered only for the classes error_response maps
        raise exc
    if response.status_code >= 500:
        level = logging.WARNING if response.status_code == 503 else logging.ERROR
        log.log(level, "%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
    return response


def add_exception_handlers(app: FastAPI) -> None:
    """Map datalayer's errors to responses: ``ValidationError`` -> 422 with the field errors, ``NotFound``
    -> 404, ``IntegrityConflict`` -> 409 naming the field, ``TransientError`` and ``PoolExhausted`` -> 503
    with ``Retry-After``, ``CommitUnknown`` -> 500 saying the outcome is unknown.

    Other errors (``QueryError``, ...) are bugs: FastAPI's default 500 answers them. No body carries a
    message, SQL, a parameter or a server address; the 5xx are logged (logger ``datalayer.fastapi``).
    """
    for cls in (ValidationError, NotFound, IntegrityConflict, TransientError, CommitUnknown):
        app.add_exception_handler(cls, _handle)


# -- health routes --


def health_router(
    *,
    api: Literal["async", "sync"] = "async",
    live_path: str = "/health/live",
    ready_path: str = "/health/ready",
    settings: Settings | None = None,
    target: DatabaseTarget | None = None,
    project: Project | None = None,
    timeout: int = 5,
) -> APIRouter:
    """Two GET routes: liveness (``SELECT 1`` on a pooled connection: one round trip) and readiness (the
    full ``check_database_health`` report).

    ``api`` names the default pool liveness borrows from: ``datalayer.aio``'s (``"async"``) or
    ``datalayer``'s (``"sync"``), the one the service uses. Both answer 200 when well and 503 when not;
    readiness checks ``target`` (default: that pool's database) with ``settings`` and ``project``
    (see ``check_database_health``).
    """
    if api not in ("async", "sync"):
        raise ValidationError({"api": 'must be "async" or "sync"'})
    router = APIRouter(tags=["health"])

    @router.get(live_path)
    async def live() -> JSONResponse:
        try:
            if api == "async":
                async with aio.connection() as adb:
                    await adb.execute("SELECT 1")
            else:
                await anyio.to_thread.run_sync(_sync_select_one)
        except (DataLayerError, psycopg.Error) as e:
            log.warning("liveness check failed: %s", e)
            return JSONResponse(
                {"status": "unavailable", "detail": f"the database did not answer ({type(e).__name__})"},
                status_code=503,
                headers={"Retry-After": RETRY_AFTER},
            )
        return JSONResponse({"status": "ok"})

    @router.get(ready_path)
    async def ready() -> JSONResponse:
        where = target
        if where is None:
            where = (await aio.default_pool()).target if api == "async" else None
        report: HealthReport = await anyio.to_thread.run_sync(
            lambda: check_database_health(settings=settings, target=where, project=project, timeout=timeout)
        )
        return JSONResponse(dict(report), status_code=200 if report["status"] == "healthy" else 503)

    return router


def _sync_select_one() -> None:
    with _sync_connection() as db:
        db.execute("SELECT 1")
