"""One tracer hook: every statement a bound query sends, every cache lookup, every breaker change.

A tracer is a plain callable taking one event (sqlite-utils' ``Database(tracer=...)`` is the model)::

    from datalayer import tracing

    with tracing.tracer(print):              # for the block (process-wide: every thread's queries)
        user_repo.get_by_id(db, 42)
    # QueryEvent(users.get_by_id sql/users.sql:15 select 0.21 ms rows=1)

    remove = tracing.add_tracer(my_hook)     # until remove() is called

Tracers are process-wide: one installed in a block sees the events of every thread and task while it is
installed, not only those of the block. Events carry what was run, never the values it was run with: a
query event holds the query as written in its ``.sql`` file (``:name`` placeholders), its place, timing,
row count and the class of the error. A tracer is called in the thread (or task) that ran the query, once
its result is made (rows fetched and made into records) or the call has failed or was cancelled: it must
be quick and must not block. What a tracer runs itself (a query, a cache lookup) is not traced, so a
tracer may use the database, even the caller's connection. An OpenTelemetry span built from the event
(``datalayer.otel``) gets its start time from the event and its parent from the caller's current context.
A tracer that raises is logged once (its own traceback only, never chained to the caller's error, whose
message may hold values) and never breaks the query. With no tracer installed the cost is one test of an
empty tuple.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import attrs

from datalayer.errors import ValidationError

if TYPE_CHECKING:
    from datalayer._sql import Query

__all__ = [
    "BreakerEvent",
    "CacheEvent",
    "Event",
    "QueryEvent",
    "Tracer",
    "add_tracer",
    "tracer",
]

log = logging.getLogger("datalayer")

BREAKER_STATES = ("closed", "half-open", "open")


@attrs.frozen(repr=False)
class QueryEvent:
    """One call of a bound query (a read retried on a fresh connection counts once)."""

    query: Query
    """The query as loaded: ``name``, ``qualname``, ``file``, ``line``, ``cardinality``, ``text``."""
    start: int
    """When it was sent, in ns since the epoch (``time.time_ns()``)."""
    duration: float
    """Seconds until its result was made (rows fetched and made into records; the whole COPY for
    ``:copy``) or the call failed."""
    rowcount: int
    """Rows returned or affected (rows sent for ``:copy``); -1 when it failed."""
    error: type[BaseException] | None = None
    """The class of the error the call raised (the error itself may hold values), or None. A call
    cancelled while it ran has ``asyncio.CancelledError`` (``KeyboardInterrupt`` in a sync caller);
    ``NotFound`` is an answer (no row), not a failure."""
    sqlstate: str | None = None
    """The server's SQLSTATE of a failure, when it answered with one."""
    database: str = ""
    """The database name of the connection that answered (the primary's, for a replica read retried there)."""
    host: str = ""
    """That server's host name or address (a directory for a unix socket)."""
    port: int | None = None

    def __repr__(self) -> str:
        q = self.query
        outcome = f"rows={self.rowcount}" if self.error is None else f"error={self.error.__name__}"
        return f"QueryEvent({q.qualname} {q.file}:{q.line} {q.statement} {self.duration * 1000:.2f} ms {outcome})"


@attrs.frozen
class CacheEvent:
    """One look into a cache layer: ``layer`` is ``l1``, ``redis`` or ``table``."""

    layer: Literal["l1", "redis", "table"]
    operation: Literal["get", "load"]
    """``get`` (``cache.get`` and what reads through it) or ``load`` (``get_or_load``)."""
    hit: bool


@attrs.frozen
class BreakerEvent:
    """The Redis layer's circuit breaker changed state (``closed``, ``open``, ``half-open``)."""

    state: str
    previous: str
    sequence: int
    """The breaker's count of changes, taken with the change: threads report changes in any order,
    so order one breaker's events by it (the latest is the current state)."""


Event: TypeAlias = QueryEvent | CacheEvent | BreakerEvent
Tracer: TypeAlias = Callable[[Event], object]


class _Entry:
    """An installed tracer: its own identity (the same function installed twice is two entries), and
    whether its failure (or its returning an awaitable) was logged: once per installation."""

    __slots__ = ("failed", "fn", "warned")

    def __init__(self, fn: Tracer) -> None:
        self.fn = fn
        self.failed = False
        self.warned = False


# Replaced whole under the lock, never mutated: the hot paths test it without a lock.
_tracers: tuple[_Entry, ...] = ()
_lock = threading.Lock()
# Set while tracers run: what a tracer does itself is not traced (no recursion, no events about events),
# as OpenTelemetry's instrumentations suppress themselves.
_in_tracer: ContextVar[bool] = ContextVar("datalayer_in_tracer", default=False)


def _is_coroutine_function(fn: object) -> bool:
    # An object whose class has ``async def __call__`` is one too (a lambda returning a coroutine is
    # caught when called: emit closes what it returns).
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def add_tracer(fn: Tracer) -> Callable[[], None]:
    """Install ``fn`` for the whole process (every thread and task); returns the function that removes it
    (calling it twice is harmless). Calls of ``fn`` already started in other threads may finish after
    ``remove()`` returns; no call starts after."""
    global _tracers
    if not callable(fn) or _is_coroutine_function(fn):
        what = "a coroutine function" if callable(fn) else type(fn).__name__
        raise ValidationError({"fn": f"must be a plain callable taking one event (it runs in the caller), got {what}"})
    entry = _Entry(fn)
    with _lock:
        _tracers = (*_tracers, entry)

    def remove() -> None:
        global _tracers
        with _lock:
            _tracers = tuple(t for t in _tracers if t is not entry)

    return remove


@contextmanager
def tracer(fn: Tracer) -> Iterator[Tracer]:
    """``with tracer(fn):`` — ``fn`` is installed for the block, process-wide: it sees the events of
    every thread and task while the block runs, not only the block's own."""
    remove = add_tracer(fn)
    try:
        yield fn
    finally:
        remove()


# The emitting side, for datalayer's runners and cache (not in __all__).


def in_tracer() -> bool:
    """True inside a tracer: what it runs is not traced."""
    return _in_tracer.get()


def emit(event: Event) -> None:
    """Hand ``event`` to every tracer; one that raises is logged (once) and skipped.

    The one rule: nothing logged here may carry the caller's error (its message can hold values), so
    a tracer's error is logged outside any ``except`` block, as its own traceback without its chain.
    """
    if _in_tracer.get():
        return
    token = _in_tracer.set(True)
    try:
        for entry in _tracers:
            failure: Exception | None
            try:
                returned = entry.fn(event)
            except Exception as e:
                returned, failure = None, e
            else:
                failure = None
            if failure is not None:
                if not entry.failed:
                    entry.failed = True
                    _log_failure(entry, failure)
                failure = None  # the traceback holds frames: not kept past here
            elif returned is not None and inspect.isawaitable(returned):
                _refuse_awaitable(entry, returned)
    finally:
        _in_tracer.reset(token)


def _log_failure(entry: _Entry, failure: Exception) -> None:
    own = "".join(traceback.format_exception(failure, chain=False)).rstrip()
    log.error("datalayer: tracer %r raised (the query went on; later errors not logged):\n%s", entry.fn, own)


def _refuse_awaitable(entry: _Entry, returned: object) -> None:
    close = getattr(returned, "close", None)
    if callable(close):
        close()  # never awaited: closed, so no "never awaited" warning either
    if not entry.warned:
        entry.warned = True
        log.error(
            "datalayer: tracer %r returned an awaitable, which is never run: tracers must be plain functions "
            "(hand the event to a queue or call_soon_threadsafe for async work)",
            entry.fn,
        )


def cache_lookup(layer: Literal["l1", "redis", "table"], hit: bool, refresh: bool = False) -> None:
    """Emit a CacheEvent (callers test ``_tracers`` first: this builds an event)."""
    emit(CacheEvent(layer, "load" if refresh else "get", hit))


def breaker_changed(state: str, previous: str, sequence: int) -> None:
    if _tracers and state != previous:
        emit(BreakerEvent(state, previous, sequence))


# The process's live breakers, so their states can be read when observed (datalayer.otel's gauge).
_breakers: weakref.WeakSet[Any] = weakref.WeakSet()


def breaker_created(breaker: Any) -> None:
    with _lock:
        _breakers.add(breaker)


def breaker_states() -> dict[str, int]:
    """How many of the process's live breakers are in each state, read now."""
    with _lock:
        live = list(_breakers)
    counts = dict.fromkeys(BREAKER_STATES, 0)
    for breaker in live:
        counts[breaker.state] = counts.get(breaker.state, 0) + 1
    return counts


class Mark:
    """Where and when a traced call started, the server that answered and its row count; ``done``
    emits its QueryEvent."""

    __slots__ = ("database", "host", "port", "rows", "start", "t0")

    def __init__(self, db: Any) -> None:
        self.answered_by(db)
        self.rows = -1
        self.start = time.time_ns()
        self.t0 = time.perf_counter()

    def answered_by(self, db: Any) -> None:
        """The connection the statement runs on (again, for a read retried on another connection)."""
        try:  # the connection's own facts (libpq's, no round trip); a dead one has none to give
            info = db.info
            self.database, self.host, self.port = info.dbname, info.host, info.port
        except Exception:
            self.database, self.host, self.port = "", "", None

    def done(self, query: Query, error: BaseException | None = None) -> None:
        """Emit the event; call it outside any ``except`` block (see ``emit``)."""
        duration = time.perf_counter() - self.t0
        sqlstate = None
        if error is not None:
            # A translated error keeps the server's error as its cause.
            cause = error if getattr(error, "sqlstate", None) else error.__cause__
            sqlstate = getattr(cause, "sqlstate", None)
        emit(
            QueryEvent(
                query=query,
                start=self.start,
                duration=duration,
                rowcount=-1 if error is not None else self.rows,
                error=None if error is None else type(error),
                sqlstate=sqlstate if isinstance(sqlstate, str) else None,
                database=self.database,
                host=self.host,
                port=self.port,
            )
        )
