"""``get_orchestration_history`` through the ``durabletask`` SDK, unchanged.

Run by tests/integration/test_sidecar_history_stream.py in a process of its own::

    python sdk_history_durabletask.py HOST:PORT | inmemory

An orchestration with an activity, a timer, an event and a sub-orchestration runs to
the end; prints the kinds of the history events the client reads back (with the
payloads and names they carry), and the answer for an unknown instance.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import grpc
from durabletask import client, task, worker

WAIT = 60


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def child(ctx: task.OrchestrationContext, n: int) -> Any:
    return n + 1
    yield


def main(ctx: task.OrchestrationContext, name: str) -> Any:
    said = yield ctx.call_activity(greet, input=name)
    yield ctx.create_timer(timedelta(milliseconds=50))
    got = yield ctx.wait_for_external_event("go")
    sub = yield ctx.call_sub_orchestrator(child, input=got, instance_id=f"{ctx.instance_id}-c")
    return [said, sub]


KEPT = ("name", "input", "result", "task_scheduled_id", "timer_id", "instance_id")


def _summary(event: Any) -> list[Any]:
    """An event's kind and what it carries that does not depend on the backend."""
    fields = event.to_dict()
    out: list[Any] = [type(event).__name__]
    if type(event).__name__ in ("TaskScheduledEvent", "TimerCreatedEvent",
                                "SubOrchestrationInstanceCreatedEvent"):  # fmt: skip
        out.append(event.event_id)
    out += [[k, fields[k]] for k in KEPT if k in fields]
    return out


def scenario(address: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with worker.TaskHubGrpcWorker(host_address=address) as w:
        w.add_orchestrator(main)
        w.add_orchestrator(child)
        w.add_activity(greet)
        w.start()
        c = client.TaskHubGrpcClient(host_address=address)
        iid = c.schedule_new_orchestration(main, input="ada", instance_id="hist-1")
        c.wait_for_orchestration_start(iid, timeout=WAIT)
        c.raise_orchestration_event(iid, "go", data=41)
        state = c.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None
        out["status"] = state.runtime_status.name
        events = c.get_orchestration_history(iid)
        # orchestratorStarted/Completed framing differs between backends: kept apart
        out["events"] = [_summary(e) for e in events if type(e).__name__ not in (
            "OrchestratorStartedEvent", "OrchestratorCompletedEvent")]  # fmt: skip
        out["first"] = type(events[0]).__name__
        out["timestamps"] = all(e.timestamp.year >= 2020 for e in events)
        try:
            c.get_orchestration_history("no-such-instance")
            out["unknown"] = "answered"
        except grpc.RpcError as err:
            out["unknown"] = err.code().name
        w.stop()
    return out


if __name__ == "__main__":
    target = sys.argv[1]
    if target == "inmemory":
        from durabletask.testing import create_test_backend
        from sdk_durabletask import _free_port

        port = _free_port()
        backend = create_test_backend(port)
        try:
            result = scenario(f"localhost:{port}")
        finally:
            backend.stop()
    else:
        result = scenario(target)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
