"""The ``durabletask`` SDK with OpenTelemetry on, against a sidecar (run by
``test_otel_sidecar.py`` in a process of its own).

Usage: ``python sdk_otel.py HOST:PORT``

Under a span ``caller`` it schedules ``pair`` (two activities), waits for it to complete,
and prints ``RESULT`` with the caller's ids and the spans the SDK recorded.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from durabletask import client, task, worker
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def pair(ctx: task.OrchestrationContext, name: str) -> Any:
    first = yield ctx.call_activity(greet, input=name)
    second = yield ctx.call_activity(greet, input=first)
    return second


def main(address: str) -> dict[str, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    with worker.TaskHubGrpcWorker(host_address=address) as w:
        w.add_orchestrator(pair)
        w.add_activity(greet)
        w.start()
        c = client.TaskHubGrpcClient(host_address=address)
        with trace.get_tracer("test").start_as_current_span("caller") as caller:
            iid = c.schedule_new_orchestration(pair, input="ada", instance_id="traced-1")
        state = c.wait_for_orchestration_completion(iid, timeout=30)
        w.stop()
    assert state is not None
    ids = caller.get_span_context()
    return {
        "output": json.loads(state.serialized_output or "null"),
        "trace_id": f"{ids.trace_id:032x}",
        "span_id": f"{ids.span_id:016x}",
        "spans": [
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": f"{span.context.trace_id:032x}",
                "span_id": f"{span.context.span_id:016x}",
                "parent": f"{span.parent.span_id:016x}" if span.parent else None,
            }
            for span in exporter.get_finished_spans()
        ],
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])), flush=True)
