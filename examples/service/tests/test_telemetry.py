"""The service's telemetry: a span per query under OpenTelemetry's SDK (in-memory exporters), named by
the query, carrying no value a request sent; query latency, pool and cache metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from service.app import create_app
from service.telemetry import configured, observe_pool, stop_telemetry

from datalayer.aio import AsyncCacheManager, AsyncDataLayerPool

pytestmark = pytest.mark.anyio

SECRET = b"test-secret-of-at-least-32-bytes!!"  # for tests only
PASSWORD = "correct horse battery"  # noqa: S105 - a test user's
NAME = "zoe-unmistakable"  # a value the requests send: in no span


@pytest.fixture
def exporters() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader, TracerProvider, MeterProvider]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        yield spans, reader, tracer_provider, meter_provider
    finally:
        stop_telemetry()
        meter_provider.shutdown()
        tracer_provider.shutdown()


@pytest.fixture
async def client(
    adl_pool: AsyncDataLayerPool, adl_cache: AsyncCacheManager, exporters: tuple[Any, Any, Any, Any]
) -> AsyncIterator[httpx.AsyncClient]:
    _, _, tracer_provider, meter_provider = exporters
    app = create_app(secret=SECRET, tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert app.state.telemetry is True
    observe_pool(adl_pool)  # what the lifespan does with the default pool (ASGITransport runs no lifespan)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as c:
        yield c


def _metric(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]


async def test_each_query_is_a_span_named_by_it_without_the_values_sent(
    client: httpx.AsyncClient, exporters: tuple[InMemorySpanExporter, InMemoryMetricReader, Any, Any]
) -> None:
    spans, reader, _, _ = exporters
    r = await client.post("/users", json={"username": NAME, "email": f"{NAME}@example.com", "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = await client.post("/token", json={"username": NAME, "password": PASSWORD})
    token = r.json()["access_token"]
    assert (await client.get("/stats", headers={"Authorization": f"Bearer {token}"})).status_code == 200

    finished = spans.get_finished_spans()
    names = [s.name for s in finished]
    assert {"users.create", "users.get_by_username"} <= set(names), names
    for span in finished:
        attributes = dict(span.attributes or {})
        assert (attributes["db.system.name"], attributes["db.query.summary"]) == ("postgresql", span.name)
        assert str(attributes["code.file.path"]).endswith(".sql")
        assert "db.query.text" in attributes
        text = repr(attributes)
        assert not [value for value in (NAME, PASSWORD, token) if value in text], span.name

    durations = {p.attributes["db.query.summary"] for p in _metric(reader, "db.client.operation.duration")}
    assert {"users.create", "users.get_by_username"} <= durations
    lookups = {
        (p.attributes["datalayer.cache.layer"], p.attributes["datalayer.cache.result"])
        for p in _metric(reader, "datalayer.cache.lookups")
    }
    assert ("l1", "miss") in lookups  # /stats read through the cache
    states = {p.attributes["db.client.connection.state"] for p in _metric(reader, "db.client.connection.count")}
    assert states == {"idle", "used"}


def test_without_providers_or_otel_variables_it_stays_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    assert configured() is False
    assert create_app(secret=SECRET).state.telemetry is False
    monkeypatch.setenv("OTEL_SERVICE_NAME", "analyses")
    assert configured() is True
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert configured() is False
