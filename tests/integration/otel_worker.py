"""The process that ``test_otel_crash.py`` kills: a chain of activities on a ``file://``
store, its spans written to a file as they end.

Usage: ``python otel_worker.py STORE_DIR SPANS_FILE TRACEPARENT N_STEPS [HOLD_AT]``

It starts ``chain-1`` under the caller's span ``TRACEPARENT`` (unless a previous
incarnation did), prints ``STEP n`` as each activity runs, and ``DONE result`` once the
run ends. With ``HOLD_AT``, step ``HOLD_AT`` prints and then never returns, so the run
cannot get past it in this process, however fast it is, before the test kills it.
Every span is appended to ``SPANS_FILE`` as one JSON line in one write, so whole lines
survive a SIGKILL.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import anyio
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import durable
from durable import ActivityContext, Registry, WorkflowContext


class FileExporter(SpanExporter):
    """Appends each span as a JSON line: name, ids, parent, attributes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            line = json.dumps({
                "name": span.name,
                "trace_id": f"{span.context.trace_id:032x}",
                "span_id": f"{span.context.span_id:016x}",
                "parent": f"{span.parent.span_id:016x}" if span.parent else None,
                "attributes": dict(span.attributes or {}),
                "pid": os.getpid(),
            })  # fmt: skip
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS


def build_registry(hold_at: int | None) -> Registry:
    registry = Registry()

    @registry.activity
    async def step(ctx: ActivityContext, n: int) -> int:
        print(f"STEP {n}", flush=True)
        if n == hold_at:
            await anyio.sleep_forever()
        return n + 1

    @registry.workflow
    async def chain(ctx: WorkflowContext, steps: int) -> int:
        total = 0
        for n in range(steps):
            total += await ctx.call_activity(step, n)
        return total

    return registry


async def run(
    store_dir: str, spans_file: str, traceparent: str, steps: int, hold_at: int | None
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(spans_file)))
    async with durable.Runtime(
        build_registry(hold_at), store=f"file://{store_dir}", tracer_provider=provider
    ) as runtime:
        caller = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
        token = otel_context.attach(caller)
        try:
            handle = await runtime.start("chain", steps, instance_id="chain-1")
            print("STARTED", flush=True)
        except durable.InstanceExistsError:
            handle = runtime.client.get_handle("chain-1")
        finally:
            otel_context.detach(token)
        print(f"DONE {await handle}", flush=True)


if __name__ == "__main__":
    store_dir, spans_file, traceparent, steps = sys.argv[1:5]
    hold_at = int(sys.argv[5]) if len(sys.argv) > 5 else None
    anyio.run(run, store_dir, spans_file, traceparent, int(steps), hold_at)
