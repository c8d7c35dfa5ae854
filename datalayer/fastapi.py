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
pair serves ``def`` handlers (``datalayer``'s default pool), the async pair ``async def`` handlers
(``datalayer.aio``'s default pool); the wrong one, or the plain ``Depends(get_db)`` beside them, is
refused at the route's first request with a 500 naming the handler and the dependency to use.

All four are ``Depends(..., scope="function")`` (FastAPI 0.121 and later): the COMMIT runs when the handler
returns, before the response is sent, so a COMMIT that fails (a deferred constraint, a lost connection)
becomes an error response instead of a 200 for a write that never landed. The connection goes back to
the pool at the same moment and what the handler got refuses further use: a ``StreamingResponse`` or a
background task takes its own (``async with datalayer.aio.connection() as db:``). The sync pair waits
for its connection outside the worker threads ``def`` handlers run on, so a burst of requests queues
for the pool instead of starving the requests that hold its connections.
"""

from __future__ import annotations

import logging
import re

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from datalayer._fastapi_deps import (
    AsyncDb,
    AsyncTx,
    Db,
    Tx,
    get_async_db,
    get_async_tx,
    get_sync_db,
    get_tx,
)
from datalayer._fastapi_health import RETRY_AFTER, health_router
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

__all__ = [
    "AsyncDb",
    "AsyncTx",
    "Db",
    "Tx",
    "add_exception_handlers",
    "error_response",
    "get_async_db",
    "get_async_tx",
    "get_sync_db",
    "get_tx",
    "health_router",
]

log = logging.getLogger("datalayer.fastapi")

# Where a message names the query that carried a value (the execution layer's backstop for text
# PostgreSQL cannot store): for the log, not for the client.
_LOCATION = re.compile(r"\s*\(sent to [^\n]*\)\s*$")


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
            errors = {field: _LOCATION.sub("", message) for field, message in exc.errors.items()}
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
