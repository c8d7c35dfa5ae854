"""``health_router()``: liveness and readiness routes for a public FastAPI app.

- Liveness is one round trip (``SELECT 1``) when a connection comes within a second. When none does,
  a pool busy serving requests is alive (a Kubernetes liveness probe must not restart pods for being
  under load); one that fails to connect is not: psycopg_pool counts failed connection attempts, and
  a count that grew while we waited, or a pool with room to grow that could not (the rule
  ``PoolExhausted``'s message follows), means the server is out of reach.
- Readiness opens a connection of its own (``check_database_health``): one check at a time per event
  loop, its report reused for ``READY_TTL`` seconds, so a burst of probes (or of anonymous callers)
  costs one server backend. Its body says ok/failed per check; the full report (server version,
  host and port in a connection error, migration names and SQL file locations) only with
  ``detail=True``, for a route that is not public.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any, Literal

import anyio
import anyio.to_thread
import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from datalayer import aio, pool, pool_async
from datalayer._fastapi_deps import per_loop
from datalayer.config import DatabaseTarget, Settings
from datalayer.defaults import default_pool
from datalayer.errors import DataLayerError, PoolExhausted, ValidationError
from datalayer.health import HealthReport, check_database_health
from datalayer.project import Project

__all__ = ["LIVE_WAIT", "READY_TTL", "health_router"]

log = logging.getLogger("datalayer.fastapi")

# The longest liveness waits for a pooled connection (capped by POOL_TIMEOUT).
LIVE_WAIT = 1.0
# How long a readiness report is reused.
READY_TTL = 1.0
RETRY_AFTER = "1"


def health_router(
    *,
    api: Literal["async", "sync"] = "async",
    live_path: str = "/health/live",
    ready_path: str = "/health/ready",
    settings: Settings | None = None,
    target: DatabaseTarget | None = None,
    project: Project | None = None,
    timeout: int = 5,
    detail: bool = False,
) -> APIRouter:
    """Two GET routes: liveness (``SELECT 1`` on a pooled connection: one round trip; a pool busy with
    requests counts as alive) and readiness (``check_database_health``, at most one at a time, reused
    for a second).

    ``api`` names the default pool liveness borrows from: ``datalayer.aio``'s (``"async"``) or
    ``datalayer``'s (``"sync"``): pass the one the service uses (``"sync"`` for ``def`` handlers with
    ``Db``/``Tx``), or liveness opens a second pool. Both answer 200 when well and 503 when not;
    readiness checks ``target`` (default: that pool's database) with ``settings`` and ``project``. Its
    body is ``{"status": ..., "checks": {name: "ok" | "failed"}}``; ``detail=True`` gives the full
    report instead (versions, hosts, migration names: not for a public route).
    """
    if api not in ("async", "sync"):
        raise ValidationError({"api": 'must be "async" or "sync"'})
    router = APIRouter(tags=["health"])
    readiness = _Readiness(api, settings, target, project, timeout)

    @router.get(live_path)
    async def live() -> JSONResponse:
        try:
            if api == "async":
                busy = await _async_live()
            else:
                busy = await anyio.to_thread.run_sync(_sync_live, limiter=anyio.CapacityLimiter(1))
        except (DataLayerError, psycopg.Error) as e:
            log.warning("liveness check failed: %s", e)
            return JSONResponse(
                {"status": "unavailable", "detail": f"the database did not answer ({type(e).__name__})"},
                status_code=503,
                headers={"Retry-After": RETRY_AFTER},
            )
        return JSONResponse({"status": "ok", "pool": "busy"} if busy else {"status": "ok"})

    @router.get(ready_path)
    async def ready() -> JSONResponse:
        report = await readiness.report()
        code = 200 if report["status"] == "healthy" else 503
        if detail:
            return JSONResponse(dict(report), status_code=code)
        checks = {name: "ok" if check["ok"] else "failed" for name, check in report["checks"].items()}
        return JSONResponse({"status": report["status"], "checks": checks}, status_code=code)

    return router


def _errors(target: Any) -> int:
    return int(target.get_stats().get("connections_errors", 0))


def _cannot_connect(target: Any, errors_before: int) -> bool:
    stats = target.get_stats()
    if int(stats.get("connections_errors", 0)) > errors_before:
        return True  # an attempt failed while we waited
    return int(stats.get("pool_size", 0)) < target.max_size and errors_before > 0


async def _async_live() -> bool:
    """True when the pool is busy (no connection came, none failed to open); raises when it is down."""
    target = await aio.default_pool()
    before = _errors(target)
    try:
        conn = await pool_async.checkout(target, min(target.timeout, LIVE_WAIT))
    except PoolExhausted:
        if _cannot_connect(target, before):
            raise
        return True
    try:
        # psycopg's own execute: SELECT 1 changes nothing in the session, so no reset round trip on return.
        await psycopg.AsyncConnection.execute(conn, "SELECT 1")
    finally:
        await pool_async.give_back(target, conn)
    return False


def _sync_live() -> bool:
    """``_async_live`` for ``datalayer``'s default pool (in a thread of its own)."""
    target = default_pool()
    before = _errors(target)
    try:
        conn = pool.checkout(target, min(target.timeout, LIVE_WAIT))
    except PoolExhausted:
        if _cannot_connect(target, before):
            raise
        return True
    try:
        psycopg.Connection.execute(conn, "SELECT 1")
    finally:
        pool.give_back(target, conn)
    return False


class _Readiness:
    """One ``check_database_health`` at a time per event loop; its report reused for READY_TTL s."""

    def __init__(
        self,
        api: str,
        settings: Settings | None,
        target: DatabaseTarget | None,
        project: Project | None,
        timeout: int,
    ) -> None:
        self.api, self.settings, self.target, self.project, self.timeout = api, settings, target, project, timeout
        self._locks: weakref.WeakKeyDictionary[object, anyio.Lock] = weakref.WeakKeyDictionary()
        self._last: tuple[float, HealthReport] | None = None

    def _fresh(self) -> HealthReport | None:
        last = self._last
        return last[1] if last is not None and time.monotonic() - last[0] < READY_TTL else None

    async def report(self) -> HealthReport:
        if (cached := self._fresh()) is not None:
            return cached
        async with per_loop(self._locks, anyio.Lock):
            if (cached := self._fresh()) is not None:
                return cached  # checked while we waited
            where = self.target
            if where is None and self.api == "async":
                where = (await aio.default_pool()).target
            report = await anyio.to_thread.run_sync(self._check, where, limiter=anyio.CapacityLimiter(1))
            self._last = (time.monotonic(), report)
            return report

    def _check(self, where: DatabaseTarget | None) -> HealthReport:
        return check_database_health(settings=self.settings, target=where, project=self.project, timeout=self.timeout)
