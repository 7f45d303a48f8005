"""Telemetry: OpenTelemetry spans and metrics of a runtime, a no-op without the
``durable[otel]`` extra (the ``opentelemetry-api``).

``_ids`` derives a run's trace ids from its log (pure); ``_trace`` records spans,
``_metrics`` the instruments and the timed store, ``_observer`` is what the engine calls,
``_prometheus`` serves the metrics for Prometheus to scrape.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ._ids import format_traceparent, parse_traceparent, run_trace
from ._observer import Observer

if TYPE_CHECKING:
    from durable._clock import Clock

__all__ = [
    "Observer",
    "current_trace_context",
    "format_traceparent",
    "make_observer",
    "parse_traceparent",
    "run_trace",
]


@functools.cache
def _have_otel() -> bool:
    try:
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


def make_observer(
    clock: Clock,
    telemetry: bool | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Observer | None:
    """The runtime's observer: spans and metrics on the given providers, or else on the
    global ones if an SDK is configured there by now; None when ``telemetry`` is False,
    OpenTelemetry is not installed, or neither has anywhere to go (no cost at all)."""
    if telemetry is False or not _have_otel():
        return None
    from opentelemetry import metrics, trace

    from ._metrics import metrics_for  # OpenTelemetry loads only here
    from ._trace import Tracing

    if tracer_provider is None and not _configured(trace.get_tracer_provider()):
        tracing = None
    else:
        tracing = Tracing(tracer_provider)
    if meter_provider is None and not _configured(metrics.get_meter_provider()):
        measures = None
    else:
        measures = metrics_for(meter_provider)
    if tracing is None and measures is None:
        return None
    return Observer(clock, tracing, measures)


def _configured(provider: object) -> bool:
    """Whether a global provider records anything: not the API's placeholder (a proxy
    until an SDK is set) nor its no-op."""
    return type(provider).__name__ not in {
        "ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider",
    }  # fmt: skip


def current_trace_context() -> tuple[str, str]:
    """The W3C ``(traceparent, tracestate)`` of the caller's current span; empty when
    there is none or OpenTelemetry is not installed."""
    if not _have_otel():
        return "", ""
    from ._trace import current_trace_context as current

    return current()
