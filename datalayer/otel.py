"""OpenTelemetry spans and metrics from datalayer's tracer hook (``pip install 'sqlfirst-datalayer[otel]'``).

::

    from datalayer import otel

    otel.instrument()                        # the global tracer and meter providers
    otel.observe_pool(await aio.default_pool())

Every statement a bound query sends becomes a CLIENT span named by the query (``users.get_by_id``, its
``db.query.summary``) under the caller's current span, with OpenTelemetry's database attributes:
``db.system.name``, ``db.namespace``, ``db.query.text`` (the query as written in its ``.sql`` file, with
its ``:name`` placeholders: never the values), ``db.operation.name``, ``code.file.path`` and
``code.line.number`` (the ``.sql`` file and line), ``server.address``/``server.port``,
``db.response.returned_rows``, and on failure ``error.type`` and ``db.response.status_code`` (the
SQLSTATE). Metrics: ``db.client.operation.duration`` per query; for each observed pool
``db.client.connection.count`` (idle / used), ``db.client.connection.max``,
``db.client.connection.pending_requests`` and ``db.client.connection.timeouts`` (``pool.name`` is the
pool's name, suffixed ``#2``… when two observed pools share one; ``used`` counts every connection not
idle in the pool: lent out, or being opened or checked); the cache's ``datalayer.cache.lookups`` (per
layer, hit or miss) and ``datalayer.cache.breaker.state`` (how many of the process's caches have their
Redis breaker in each state, read at collection).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from datalayer import tracing
from datalayer.errors import ConfigError, ValidationError

try:
    from opentelemetry import metrics, trace
except ImportError:
    raise ConfigError(
        "datalayer.otel needs OpenTelemetry: pip install 'sqlfirst-datalayer[otel]' (or '.[otel]' from a checkout)"
    ) from None
from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = ["instrument", "observe_pool", "uninstrument"]

SYSTEM = "postgresql"
# OpenTelemetry's advice for db.client.operation.duration (seconds).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
# Statements whose first keyword is the one operation they perform (a WITH can end in any of them).
_OPERATIONS = frozenset({"select", "insert", "update", "delete", "merge", "copy", "call", "values", "table"})
_ROW_RETURNING = frozenset({"one", "maybe", "many", "scalar"})


class _Instrumentation:
    """What ``instrument()`` installed: the tracer hook, the instruments it feeds, the observed pools."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        # pool -> its db.client.connection.pool.name (held weakly: a pool dropped is no longer reported)
        self.pools: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self.tracer = trace.get_tracer("datalayer", tracer_provider=tracer_provider)
        meter = metrics.get_meter("datalayer", meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.lookups = meter.create_counter(
            "datalayer.cache.lookups", unit="{lookup}", description="Cache lookups, per layer, hit or miss."
        )
        # The observable instruments' callbacks are module functions reading the current instrument():
        # the SDK hands back an instrument already created on this meter with its first callbacks,
        # so callbacks bound to one instrument() would go quiet when it is replaced.
        meter.create_observable_up_down_counter(
            "db.client.connection.count",
            [_observe_connections],
            unit="{connection}",
            description="The number of connections that are currently in state described by the state attribute.",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.max",
            [_observe_stat("pool_max")],
            unit="{connection}",
            description="The maximum number of open connections allowed.",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests",
            [_observe_stat("requests_waiting")],
            unit="{request}",
            description="The number of current pending requests for an open connection.",
        )
        meter.create_observable_counter(
            "db.client.connection.timeouts",
            # psycopg_pool counts a request that timed out (or found the queue full) as an error.
            [_observe_stat("requests_errors")],
            unit="{timeout}",
            description="The number of connection timeouts that occurred trying to obtain a connection from the pool.",
        )
        meter.create_observable_gauge(
            "datalayer.cache.breaker.state",
            [_observe_breakers],
            unit="{breaker}",
            description="How many of the process's Redis circuit breakers are in each state (one per cache).",
        )
        self.remove = tracing.add_tracer(self)

    def __call__(self, event: tracing.Event) -> None:
        if isinstance(event, tracing.QueryEvent):
            self._query(event)
        elif isinstance(event, tracing.CacheEvent):
            result = "hit" if event.hit else "miss"
            self.lookups.add(
                1,
                {
                    "datalayer.cache.layer": event.layer,
                    "datalayer.cache.operation": event.operation,
                    "datalayer.cache.result": result,
                },
            )

    def _query(self, event: tracing.QueryEvent) -> None:
        q = event.query
        common: dict[str, Any] = {"db.system.name": SYSTEM, "db.query.summary": q.qualname}
        if q.statement in _OPERATIONS:
            common["db.operation.name"] = q.statement.upper()
        if event.database:
            common["db.namespace"] = event.database
        if event.host:
            common["server.address"] = event.host
        if event.port is not None:
            common["server.port"] = event.port
        if event.error is not None:
            common["error.type"] = f"{event.error.__module__}.{event.error.__qualname__}"
            if event.sqlstate:
                common["db.response.status_code"] = event.sqlstate
        span_attributes = {**common, "db.query.text": q.text, "code.file.path": q.file, "code.line.number": q.line}
        if event.error is None and q.cardinality in _ROW_RETURNING:
            span_attributes["db.response.returned_rows"] = event.rowcount
        # Built after the fact, from the event's own clock: the parent is the caller's current span,
        # which is still current here (the same thread, or the same task after its await).
        span = self.tracer.start_span(
            q.qualname, kind=trace.SpanKind.CLIENT, attributes=span_attributes, start_time=event.start
        )
        if event.error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR))  # no description: messages may hold values
        span.end(end_time=event.start + int(event.duration * 1e9))
        self.duration.record(event.duration, common)

    def observe(self, pool: Any) -> None:
        """Report ``pool`` under its name, suffixed ``#2``, ``#3``… when an observed pool has it already."""
        if pool in self.pools:
            return
        taken = set(self.pools.values())
        label, n = pool.name, 1
        while label in taken:
            n += 1
            label = f"{pool.name}#{n}"
        self.pools[pool] = label


_installed: _Instrumentation | None = None
_lock = threading.Lock()


def _pool_stats() -> Iterator[tuple[dict[str, Any], dict[str, int]]]:
    current = _installed
    if current is None:
        return
    for pool, label in list(current.pools.items()):
        if not pool.closed:
            yield {"db.client.connection.pool.name": label}, pool.get_stats()


def _observe_connections(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for where, stats in _pool_stats():
        # psycopg_pool's pool_size counts every connection it manages: idle in the pool (pool_available),
        # lent out, and being opened or checked. "used" is all but the idle ones: psycopg_pool has no
        # separate count of those being opened (while a pool fills, they show as used).
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        yield metrics.Observation(idle, {**where, "db.client.connection.state": "idle"})
        yield metrics.Observation(max(size - idle, 0), {**where, "db.client.connection.state": "used"})


def _observe_stat(name: str) -> Any:
    def observe(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return [metrics.Observation(stats.get(name, 0), where) for where, stats in _pool_stats()]

    return observe


def _observe_breakers(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    if _installed is None:
        return []
    # Read now, from the breakers themselves: right whenever instrument() was called and whatever
    # order their changes were reported in.
    return [
        metrics.Observation(count, {"datalayer.cache.breaker.state": state})
        for state, count in tracing.breaker_states().items()
    ]


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None, pools: Iterable[Any] = ()) -> None:
    """Turn datalayer's tracer events into OpenTelemetry spans and metrics, replacing an earlier
    ``instrument()`` (its observed pools with it); the providers default to OpenTelemetry's global ones.
    ``pools`` (datalayer's or any psycopg_pool pools) are observed for the connection metrics; add more
    with ``observe_pool``. The metrics read at collection time report what the latest ``instrument()``
    observes, to each meter provider datalayer's instruments were created on."""
    global _installed
    pools = list(pools)
    for i, pool in enumerate(pools):
        _check_pool(pool, f"pools[{i}]")
    with _lock:
        if _installed is not None:
            _installed.remove()
        _installed = _Instrumentation(tracer_provider, meter_provider)
        for pool in pools:
            _installed.observe(pool)


def observe_pool(pool: Any) -> None:
    """Report ``pool``'s connection metrics too, as ``db.client.connection.pool.name`` = its name (with
    ``#2``, ``#3``… when an observed pool has that name already). Held weakly: a pool dropped or closed
    is no longer reported."""
    _check_pool(pool, "pool")
    with _lock:
        if _installed is None:
            raise ValidationError({"pool": "nothing to report it to: call datalayer.otel.instrument() first"})
        _installed.observe(pool)


def uninstrument() -> None:
    """Stop: no more spans; the metrics' callbacks report nothing. Harmless when not instrumented. A
    span of a query already being reported in another thread may still end after it returns."""
    global _installed
    with _lock:
        if _installed is not None:
            _installed.remove()
            _installed = None


def _check_pool(pool: object, name: str) -> None:
    if not isinstance(pool, ConnectionPool | AsyncConnectionPool):
        raise ValidationError(
            {name: f"must be a connection pool (datalayer's or psycopg_pool's), got {type(pool).__name__}"}
        )
