"""datalayer.otel on OpenTelemetry's SDK with its in-memory exporters: a CLIENT span per query named by the
query, with the database semantic conventions' attributes and never a parameter value, nested under the
caller's span; metrics for query latency, the pool, the cache's layers and its breaker."""

from __future__ import annotations

import asyncio
import gc
import importlib
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from datalayer import ConfigError, IntegrityConflict, PoolExhausted, ValidationError, otel, sql
from datalayer.cache import CacheManager
from datalayer.config import RedisTarget
from datalayer.pool import DataLayerConnection, DataLayerPool, connection, open_pool
from datalayer.testing import fresh_cache, settings_for_tests

SECRET = "Zq7-unmistakable-parameter-value"

NOTES_SQL = """\
-- name: create_table :exec
CREATE TABLE onotes (id bigint PRIMARY KEY, title text NOT NULL UNIQUE)

-- name: add :exec
INSERT INTO onotes (id, title) VALUES (:id, :'title')

-- name: by_title :maybe
SELECT id, title FROM onotes WHERE title = :'title'

-- name: every :many
WITH n AS (SELECT id, title FROM onotes) SELECT id, title FROM n ORDER BY id
"""


@attrs.frozen
class ONote:
    id: int
    title: str


@attrs.define
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        found: list[Any] = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        found.extend(m.data.data_points)
        return found

    def instrument(self, **kwargs: Any) -> None:
        otel.instrument(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **kwargs)

    def breaker_states(self) -> dict[str, int]:
        gc.collect()  # the breakers of caches already dropped
        return {
            p.attributes["datalayer.cache.breaker.state"]: p.value for p in self.points("datalayer.cache.breaker.state")
        }

    def pool_points(self, name: str, pool_name: str) -> list[Any]:
        return [p for p in self.points(name) if p.attributes["db.client.connection.pool.name"] == pool_name]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    otel.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Telemetry(exporter, reader, tracer_provider, meter_provider)
    finally:
        otel.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()


@pytest.fixture
def notes(tmp_path: Path) -> sql.QueryFile:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "onotes"\n')
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "onotes.sql").write_text(NOTES_SQL)
    return sql.load(tmp_path / "sql" / "onotes.sql")


def _no_values(spans: list[ReadableSpan]) -> None:
    assert spans
    for span in spans:
        text = repr(span.name) + repr(dict(span.attributes or {})) + repr(span.status.description)
        text += repr([e.attributes for e in span.events])
        assert SECRET not in text, span.name


def test_a_span_per_query_named_by_it_with_semconv_attributes_and_no_values(
    notes: sql.QueryFile, db: DataLayerConnection, telemetry: Telemetry
) -> None:
    request = telemetry.tracer_provider.get_tracer("test")
    with request.start_as_current_span("GET /notes") as parent:
        notes.bind("create_table").exec(db)
        notes.bind("add").exec(db, id=1, title=SECRET)
        assert notes.bind("by_title", ONote).maybe(db, title=SECRET) == ONote(1, SECRET)
        assert notes.bind("every", ONote).many(db) == [ONote(1, SECRET)]
    spans = [s for s in telemetry.finished() if s.name != "GET /notes"]
    assert [s.name for s in spans] == ["onotes.create_table", "onotes.add", "onotes.by_title", "onotes.every"]
    _no_values(spans)

    by_title = spans[2]
    assert by_title.kind is SpanKind.CLIENT
    assert by_title.parent is not None and by_title.parent.span_id == parent.get_span_context().span_id
    assert by_title.context is not None and by_title.context.trace_id == parent.get_span_context().trace_id
    assert by_title.start_time is not None and by_title.end_time is not None
    parent_span: Any = parent
    assert parent_span.start_time <= by_title.start_time <= by_title.end_time <= parent_span.end_time
    assert dict(by_title.attributes or {}) == {
        "db.system.name": "postgresql",
        "db.query.summary": "onotes.by_title",
        "db.query.text": "SELECT id, title FROM onotes WHERE title = :'title'",
        "db.operation.name": "SELECT",
        "db.namespace": db.info.dbname,
        "server.address": db.info.host,
        "server.port": db.info.port,
        "code.file.path": "sql/onotes.sql",
        "code.line.number": 7,
        "db.response.returned_rows": 1,
    }
    assert by_title.status.status_code is StatusCode.UNSET
    attributes = [dict(s.attributes or {}) for s in spans]
    assert attributes[1]["db.operation.name"] == "INSERT" and "db.response.returned_rows" not in attributes[1]
    assert "db.operation.name" not in attributes[3]  # a WITH: no single operation to name
    assert attributes[3]["db.response.returned_rows"] == 1


def test_a_failed_query_is_an_error_span_without_the_message(
    notes: sql.QueryFile, db: DataLayerConnection, telemetry: Telemetry
) -> None:
    notes.bind("create_table").exec(db)
    notes.bind("add").exec(db, id=1, title=SECRET)
    with pytest.raises(IntegrityConflict):
        notes.bind("add").exec(db, id=2, title=SECRET)
    failed = telemetry.finished()[-1]
    assert failed.name == "onotes.add" and failed.status.status_code is StatusCode.ERROR
    assert failed.status.description is None and failed.events == ()
    attributes = dict(failed.attributes or {})
    assert attributes["error.type"] == "datalayer.errors.IntegrityConflict"
    assert attributes["db.response.status_code"] == "23505"
    _no_values(telemetry.finished())
    (ok, bad) = sorted(
        (
            p
            for p in telemetry.points("db.client.operation.duration")
            if p.attributes["db.query.summary"] == "onotes.add"
        ),
        key=lambda p: "error.type" in p.attributes,
    )
    assert ok.count == 1 and bad.count == 1 and bad.attributes["error.type"] == "datalayer.errors.IntegrityConflict"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_async_query_spans_nest_under_the_awaiting_task_span(
    notes: sql.QueryFile, adb: Any, telemetry: Telemetry
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    await notes.bind("create_table").aexec(adb)
    await notes.bind("add").aexec(adb, id=1, title="a")

    async def handler(name: str) -> int:
        with tracer.start_as_current_span(name) as span:
            await asyncio.sleep(0.01)  # the other task runs its query meanwhile
            assert await notes.bind("every", ONote).amany(adb) == [ONote(1, "a")]
            return span.get_span_context().span_id

    ids = await asyncio.gather(handler("first"), handler("second"))
    queries = [s for s in telemetry.finished() if s.name == "onotes.every"]
    assert len(queries) == 2
    assert sorted(s.parent.span_id for s in queries if s.parent) == sorted(ids)


def test_query_latency_per_query_name(notes: sql.QueryFile, db: DataLayerConnection, telemetry: Telemetry) -> None:
    notes.bind("create_table").exec(db)
    for i in range(3):
        notes.bind("add").exec(db, id=i, title=f"t{i}")
    notes.bind("every", ONote).many(db)
    points = {p.attributes["db.query.summary"]: p for p in telemetry.points("db.client.operation.duration")}
    assert points["onotes.add"].count == 3 and points["onotes.every"].count == 1
    assert points["onotes.add"].sum > 0
    assert points["onotes.add"].attributes["db.system.name"] == "postgresql"
    assert "db.query.text" not in points["onotes.add"].attributes  # high cardinality: spans only
    assert list(points["onotes.add"].explicit_bounds) == list(otel.DURATION_BUCKETS)


def test_pool_metrics(datalayer_server: Any, dl_pool: DataLayerPool, telemetry: Telemetry) -> None:
    settings = settings_for_tests(pool_size=1, pool_min_size=1, max_overflow=0, pool_timeout=0.2)
    pool = open_pool(settings, target=dl_pool.target, name="otel-test")
    try:
        otel.observe_pool(pool)
        with connection(pool):
            with pytest.raises(PoolExhausted), connection(pool):
                pass
            by_state = {
                p.attributes["db.client.connection.state"]: p.value
                for p in telemetry.points("db.client.connection.count")
                if p.attributes["db.client.connection.pool.name"] == "otel-test"
            }
            assert by_state == {"idle": 0, "used": 1}
        (timeouts,) = [
            p
            for p in telemetry.points("db.client.connection.timeouts")
            if p.attributes["db.client.connection.pool.name"] == "otel-test"
        ]
        assert timeouts.value >= 1
        (most,) = [
            p
            for p in telemetry.points("db.client.connection.max")
            if p.attributes["db.client.connection.pool.name"] == "otel-test"
        ]
        assert most.value == 1
        (pending,) = [
            p
            for p in telemetry.points("db.client.connection.pending_requests")
            if p.attributes["db.client.connection.pool.name"] == "otel-test"
        ]
        assert pending.value == 0
    finally:
        pool.close()
    assert not [
        p
        for p in telemetry.points("db.client.connection.count")
        if p.attributes["db.client.connection.pool.name"] == "otel-test"
    ]  # a closed pool is no longer reported


def test_observe_pool_refuses_what_is_not_a_pool(telemetry: Telemetry) -> None:
    with pytest.raises(ValidationError, match="pool"):
        otel.observe_pool("postgresql://")
    with pytest.raises(ValidationError, match=r"pools\[0\]"):
        otel.instrument(pools=[object()])


def _refused_redis() -> RedisTarget:
    with socket.socket() as s:  # a port nothing listens on: Redis refuses at once
        s.bind(("127.0.0.1", 0))
        return RedisTarget(url=f"redis://127.0.0.1:{s.getsockname()[1]}/0")


def test_cache_lookups_and_breaker_state(dl_cache: CacheManager, dl_pool: DataLayerPool, telemetry: Telemetry) -> None:
    key = dl_cache.keys.user(SECRET)
    dl_cache.set(key, {"v": 1}, ttl=60)
    dl_cache.get(key)  # L1 misses, Redis hits
    dl_cache.get(key)  # L1 hits
    counts = {
        (p.attributes["datalayer.cache.layer"], p.attributes["datalayer.cache.result"]): p.value
        for p in telemetry.points("datalayer.cache.lookups")
    }
    assert counts == {("l1", "miss"): 1, ("redis", "hit"): 1, ("l1", "hit"): 1}
    before = telemetry.breaker_states()
    assert set(before) == {"closed", "half-open", "open"} and before["closed"] >= 1  # dl_cache's, at least

    with fresh_cache(_refused_redis(), breaker_cooldown=60) as down:
        down.get(down.keys.user(1))
        after = telemetry.breaker_states()
    assert after == {**before, "open": before["open"] + 1}  # one more cache, its breaker open


def test_the_breaker_gauge_reads_the_breakers_whenever_instrumented(telemetry: Telemetry) -> None:
    before = telemetry.breaker_states()
    otel.uninstrument()
    with fresh_cache(_refused_redis(), breaker_cooldown=60) as down:
        down.get(down.keys.user(1))  # its breaker opens while nothing is instrumented
        telemetry.instrument()
        after = telemetry.breaker_states()
    assert after == {**before, "open": before["open"] + 1}


def test_instrument_again_keeps_the_observed_metrics(
    dl_cache: CacheManager, dl_pool: DataLayerPool, telemetry: Telemetry
) -> None:
    def observed() -> tuple[int, int]:
        return len(telemetry.pool_points("db.client.connection.max", dl_pool.name)), len(telemetry.breaker_states())

    telemetry.instrument(pools=[dl_pool])
    assert observed() == (1, 3)
    telemetry.instrument(pools=[dl_pool])  # replacing it, on the same providers
    assert observed() == (1, 3)
    otel.uninstrument()
    assert observed() == (0, 0)
    telemetry.instrument()
    otel.observe_pool(dl_pool)
    assert observed() == (1, 3)


def test_pools_of_one_name_are_reported_apart(
    datalayer_server: Any, dl_pool: DataLayerPool, telemetry: Telemetry
) -> None:
    settings = settings_for_tests(pool_size=1, pool_min_size=1, max_overflow=0)
    first = open_pool(settings, target=dl_pool.target, name="twin")
    second = open_pool(settings, target=dl_pool.target, name="twin")
    try:
        otel.observe_pool(first)
        otel.observe_pool(second)
        otel.observe_pool(first)  # again: still itself
        with connection(second):
            by = {
                (p.attributes["db.client.connection.pool.name"], p.attributes["db.client.connection.state"]): p.value
                for p in telemetry.points("db.client.connection.count")
                if p.attributes["db.client.connection.pool.name"].startswith("twin")
            }
    finally:
        first.close()
        second.close()
    assert by == {("twin", "idle"): 1, ("twin", "used"): 0, ("twin#2", "idle"): 0, ("twin#2", "used"): 1}


def test_uninstrument_stops_the_spans(
    notes: sql.QueryFile, db: DataLayerConnection, dl_pool: DataLayerPool, telemetry: Telemetry
) -> None:
    notes.bind("create_table").exec(db)
    otel.uninstrument()
    otel.uninstrument()  # twice: harmless
    notes.bind("add").exec(db, id=1, title="a")
    assert [s.name for s in telemetry.finished()] == ["onotes.create_table"]
    with pytest.raises(ValidationError, match="instrument"):
        otel.observe_pool(dl_pool)


def test_without_the_extra_the_import_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "datalayer.otel")
    with pytest.raises(ConfigError, match=r"pip install 'sqlfirst-datalayer\[otel\]'"):
        importlib.import_module("datalayer.otel")
