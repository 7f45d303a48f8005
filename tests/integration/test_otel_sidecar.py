"""A trace through the sidecar with the ``durabletask`` SDK (issue 17): the sidecar
takes the W3C ``parentTraceContext`` the SDK's client sends, records the run's spans in
that trace, and hands trace context back in its work items."""

from __future__ import annotations

import sys
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the dev extra's opentelemetry-sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_sidecar_sdks import HERE, run_sdk

from durable.grpc import Sidecar

pytestmark = pytest.mark.anyio


async def test_a_durabletask_client_trace_runs_through_the_sidecar() -> None:
    """The SDK client starts ``pair`` under its span ``caller``: the sidecar's workflow
    span is in the caller's trace, under the span the SDK sent; the SDK's worker spans
    (its activities, handed our attempt spans' context) are in the same trace."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Sidecar("memory://", port=0, tracer_provider=provider) as sidecar:
        result = await run_sdk(sys.executable, str(HERE / "sdk_otel.py"),
                               f"127.0.0.1:{sidecar.port}")  # fmt: skip
    assert result["output"] == "hello hello ada"
    ours = list(exporter.get_finished_spans())
    trace_id = int(result["trace_id"], 16)
    assert ours, "the sidecar recorded no span"
    assert {span.context.trace_id for span in ours} == {trace_id}
    (workflow,) = [span for span in ours if span.name == "workflow pair"]
    sdk_spans: list[dict[str, Any]] = result["spans"]
    (sent,) = [span["span_id"] for span in sdk_spans if span["kind"] == "PRODUCER"]
    assert workflow.parent is not None
    assert f"{workflow.parent.span_id:016x}" == sent  # the context the client sent
    # the SDK's orchestration span was handed the same context back in the work item
    assert {span["parent"] for span in sdk_spans if span["name"] == "orchestration:pair"} == {sent}
    attempts = {f"{span.context.span_id:016x}" for span in ours if span.name == "activity greet"}
    assert len(attempts) == 2
    assert {span["trace_id"] for span in sdk_spans} == {result["trace_id"]}
    sdk_activities = [span for span in sdk_spans if "greet" in span["name"]
                      and span["kind"] == "SERVER"]  # fmt: skip
    assert sdk_activities, sdk_spans
    assert {span["parent"] for span in sdk_activities} <= attempts


@pytest.mark.parametrize("dialect", ["dapr", "ms"])
async def test_a_remote_client_and_worker_trace_through_the_sidecar(dialect: str) -> None:
    """durable's own RemoteClient sends its caller's span as ``parentTraceContext``; the
    run's spans, recorded by the sidecar, join that trace under that span."""
    from durable import ActivityContext, Registry, WorkflowContext
    from durable.grpc import RemoteClient, RemoteWorker

    registry = Registry()

    @registry.activity
    async def shout(ctx: ActivityContext, text: str) -> str:
        return text.upper()

    @registry.workflow
    async def loud(ctx: WorkflowContext, text: str) -> str:
        return await ctx.call_activity(shout, text)

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caller_tracer = provider.get_tracer("test")
    async with Sidecar("memory://", port=0, tracer_provider=provider) as sidecar:
        target = f"127.0.0.1:{sidecar.port}"
        async with (
            RemoteWorker(registry, target, dialect=dialect),
            RemoteClient(target, dialect=dialect, registry=registry, poll_interval=0.02) as rc,
        ):
            with caller_tracer.start_as_current_span("caller") as caller:
                handle = await rc.start(loud, "hi", instance_id=f"loud-{dialect}")
            assert await handle.result(timeout=30) == "HI"
            await sidecar.runtime.wait_idle()
    ids = caller.get_span_context()
    (workflow,) = [s for s in exporter.get_finished_spans() if s.name == "workflow loud"]
    assert workflow.context.trace_id == ids.trace_id
    assert workflow.parent is not None
    assert workflow.parent.span_id == ids.span_id
