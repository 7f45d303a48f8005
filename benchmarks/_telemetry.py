"""The ``telemetry`` scenario: ``sequential`` K steps with OpenTelemetry on and off.

Variants, each on a fresh store in a fresh event loop, alternating which goes first:

- ``off``: ``Runtime(telemetry=False)``, no observer at all;
- ``api``: the default with the ``opentelemetry-api`` installed and no SDK configured
  (the global no-op providers);
- ``sdk``: the OpenTelemetry SDK with an in-memory span exporter (simple processor) and
  an in-memory metric reader, collected once at the end.

The issue's bar: ``sdk/off`` >= 0.8x in steps/s on ``memory://``.

(No ``from __future__ import annotations`` here: the registry reads the payload types
from the annotations, so they must resolve at runtime.)
"""

from typing import Any

import anyio

from durable.store import ObjectStore

from ._scenarios import _sequential_once
from ._suite import Column, fresh_store, scenario

_VARIANTS = ("off", "api", "sdk")
_RATIOS = ("sdk/off", "api/off")
_order = [0]


def _options(variant: str) -> tuple[dict[str, Any], Any]:
    """The runtime's options for ``variant``, and the exporter to check afterwards."""
    if variant == "off":
        return {"telemetry": False}, None
    if variant == "api":
        return {}, None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    return {"tracer_provider": tracer_provider, "meter_provider": meter_provider}, (spans, reader)


async def _once(store: ObjectStore, k: int, variant: str) -> dict[str, float]:
    options, exported = _options(variant)
    figures = await _sequential_once(store, k, options)
    if exported is not None:
        spans, reader = exported
        count = len(spans.get_finished_spans())
        if count < 2 * k:  # a turn and an attempt per step, and the run's span
            raise RuntimeError(f"telemetry run recorded {count} spans for K={k}")
        reader.get_metrics_data()
        figures["spans"] = float(count)
    return figures


@scenario(
    "telemetry",
    description="sequential K steps with OpenTelemetry off, API only (no-op), and the SDK "
    "with in-memory span and metric exporters",
    size_name="K",
    sizes=(1_000,),
    quick_sizes=(1_000,),
    stores=("memory", "file"),
    variant_name="telemetry",
    variants=_VARIANTS,
    ratios=_RATIOS,
    columns=(
        Column("total_s", "total s", ".3f"),
        Column("steps_per_s", "steps/s", ",.0f"),
        Column("first10_median_gap_s", "first10% p50 µs", ",.1f", 1e6),
        Column("last10_median_gap_s", "last10% p50 µs", ",.1f", 1e6),
    ),
    notes=(
        "off = Runtime(telemetry=False); api = the default with opentelemetry-api installed "
        "and no SDK configured; sdk = TracerProvider + SimpleSpanProcessor + "
        "InMemorySpanExporter, MeterProvider + InMemoryMetricReader (a turn span, an "
        "attempt span and the metrics per step, the store's requests timed)",
        "each run measures every variant on fresh stores, rotating which goes first; the "
        "ratios are the medians of the per-run ratios (the issue's bar: sdk/off >= 0.8x "
        "steps/s on memory)",
    ),
)
def telemetry(store_kind: str, k: int) -> dict[str, float]:
    labels = list(_VARIANTS)
    shift = _order[0] % len(labels)
    labels = labels[shift:] + labels[:shift]
    _order[0] += 1
    runs: dict[str, dict[str, float]] = {}
    for label in labels:
        with fresh_store(store_kind) as store:
            runs[label] = anyio.run(_once, store, k, label)
    figures: dict[str, float] = {}
    for label, run in runs.items():
        figures.update({f"{label}.{key}": value for key, value in run.items()})
    for ratio in _RATIOS:
        top, bottom = ratio.split("/")
        for key, value in runs[top].items():
            if key in runs[bottom] and runs[bottom][key]:
                figures[f"{ratio}.{key}"] = value / runs[bottom][key]
    return figures
