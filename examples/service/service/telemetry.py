"""OpenTelemetry for the service: datalayer's spans (one per query) and metrics (query latency, the pool,
the cache), when OpenTelemetry is installed (``pip install 'sqlfirst-datalayer[otel]'``) and either the
app is given providers (tests) or the process was configured by OTEL_* variables, e.g. run under
``opentelemetry-instrument`` (opentelemetry-distro) with ``OTEL_SERVICE_NAME=analyses``."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

__all__ = ["configured", "observe_pool", "start_telemetry", "stop_telemetry"]

# Variables that say an OpenTelemetry SDK is set up for this process (the global providers are real).
_CONFIGURING = ("OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER")


def configured() -> bool:
    """OpenTelemetry is installed, not disabled, and an OTEL_* variable configures it."""
    if importlib.util.find_spec("opentelemetry") is None:
        return False
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(name) for name in _CONFIGURING)


def start_telemetry(*, tracer_provider: Any = None, meter_provider: Any = None) -> bool:
    """Instrument datalayer with the given providers, else with OpenTelemetry's global ones when
    ``configured()``; False (and nothing done) when telemetry is off."""
    if tracer_provider is None and meter_provider is None and not configured():
        return False
    from datalayer import otel

    otel.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return True


def observe_pool(pool: Any) -> None:
    """Report ``pool``'s connections too (after ``start_telemetry``)."""
    from datalayer import otel

    otel.observe_pool(pool)


def stop_telemetry() -> None:
    from datalayer import otel

    otel.uninstrument()
