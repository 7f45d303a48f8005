"""The ``telemetry`` scenario: ``sequential`` K steps with OpenTelemetry on and off.

Variants, each on a fresh store in a fresh event loop, alternating which goes first:

- ``off``: ``Runtime(telemetry=False)``, no observer at all;
- ``api``: the default with the ``opentelemetry-api`` installed and no SDK configured
  (the global no-op providers);
- ``sdk``: the OpenTelemetry SDK with an in-memory span exporter (simple processor) and
  an in-memory metric reader, collected once at the end;
- ``sdk-calls``: no runtime, only the SDK calls the runtime makes per step, K times, on
  the same providers (a ``turn`` span, an ``activity`` span made current and given its
  status, and the turn, attempt and store request histograms): what the SDK itself
  costs per step, whoever calls it;
- ``bound``: ``off`` plus ``sdk-calls``, the fastest any instrumentation that makes
  those calls could run (``sdk/bound``: how close the runtime's own is to it).

The issue's bar: ``sdk/off`` >= 0.8x in steps/s on ``memory://``. ``bound/off`` shows
whether the SDK's own calls leave room for it at all.

(No ``from __future__ import annotations`` here: the registry reads the payload types
from the annotations, so they must resolve at runtime.)
"""

from time import perf_counter
from typing import Any

import anyio

from durable.store import ObjectStore

from ._figures import sequential_figures
from ._scenarios import _sequential_once
from ._suite import Column, fresh_store, scenario

_MEASURED = ("off", "api", "sdk", "sdk-calls")
_VARIANTS = (*_MEASURED, "bound")
_RATIOS = ("sdk/off", "api/off", "bound/off", "sdk/bound")
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


def _sdk_calls(k: int) -> dict[str, float]:
    """The SDK calls of ``k`` steps alone, as the runtime makes them (the same names,
    attributes, explicit times, parent context and instruments), timed per step."""
    from opentelemetry import context, trace

    options, (spans, reader) = _options("sdk")
    tracer = options["tracer_provider"].get_tracer("durable")
    meter = options["meter_provider"].get_meter("durable")
    turn_duration = meter.create_histogram("durable.turn.duration", unit="s")
    activity_duration = meter.create_histogram("durable.activity.duration", unit="s")
    store_duration = meter.create_histogram("durable.store.request.duration", unit="s")
    run = trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(1))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(run), context.Context())
    workflow, activity = {"workflow": "bench_sequential"}, {"activity": "bench_step"}
    operation = {"operation": "put_if_absent"}  # a step's one store request, its log write
    stamps: list[float] = []
    start, end = 1_000_000_000, 1_000_020_000  # explicit times, as from the Clock
    started = perf_counter()
    for seq in range(k):
        stamps.append(perf_counter())
        turn = tracer.start_span(
            "turn", parent, start_time=start,
            attributes={"durable.instance_id": "i", "durable.seq": seq,
                        "durable.status": "RUNNING"},
        )  # fmt: skip
        turn.end(end)
        turn_duration.record(2e-5, workflow)
        store_duration.record(2e-6, operation)
        attempt = tracer.start_span(
            "activity bench_step", parent, start_time=start,
            attributes={"durable.instance_id": "i", "durable.attempt": 1},
        )  # fmt: skip
        context.detach(context.attach(trace.set_span_in_context(attempt)))
        attempt.set_attribute("durable.status", "completed")
        attempt.end(end)
        activity_duration.record(2e-5, activity)
    ended = perf_counter()
    if len(spans.get_finished_spans()) != 2 * k:
        raise RuntimeError("the SDK calls recorded the wrong number of spans")
    reader.get_metrics_data()
    return sequential_figures(stamps, started, ended, k)


def _bound(off: dict[str, float], calls: dict[str, float], k: int) -> dict[str, float]:
    """``off``'s run with the SDK's calls' time added to it, per step and in total."""
    bound = {key: off[key] + calls[key] for key in off if key != "steps_per_s" and key in calls}
    bound["steps_per_s"] = k / bound["total_s"]
    return bound


@scenario(
    "telemetry",
    description="sequential K steps with OpenTelemetry off, API only (no-op), and the SDK "
    "with in-memory span and metric exporters; the SDK's own calls of K steps alone",
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
        "sdk-calls = no runtime: the SDK calls the runtime makes per step (2 spans, one made "
        "current, 3 histogram records), K times on the same providers; bound = off + "
        "sdk-calls, the best any instrumentation making those calls can do",
        "each run measures every variant on fresh stores, rotating which goes first; the "
        "ratios are the medians of the per-run ratios (the issue's bar: sdk/off >= 0.8x "
        "steps/s on memory; bound/off says what the SDK's own calls leave possible)",
    ),
)
def telemetry(store_kind: str, k: int) -> dict[str, float]:
    labels = list(_MEASURED)
    shift = _order[0] % len(labels)
    labels = labels[shift:] + labels[:shift]
    _order[0] += 1
    runs: dict[str, dict[str, float]] = {}
    for label in labels:
        if label == "sdk-calls":
            runs[label] = _sdk_calls(k)
            continue
        with fresh_store(store_kind) as store:
            runs[label] = anyio.run(_once, store, k, label)
    runs["bound"] = _bound(runs["off"], runs["sdk-calls"], k)
    figures: dict[str, float] = {}
    for label, run in runs.items():
        figures.update({f"{label}.{key}": value for key, value in run.items()})
    for ratio in _RATIOS:
        top, bottom = ratio.split("/")
        for key, value in runs[top].items():
            if key in runs[bottom] and runs[bottom][key]:
                figures[f"{ratio}.{key}"] = value / runs[bottom][key]
    return figures
