"""``get_workflow_history`` through the Dapr Workflow SDK, unchanged.

Run by tests/integration/test_sidecar_history_stream.py in a process of its own::

    python sdk_history_dapr.py PORT

The same orchestration as sdk_history_durabletask.py; prints the history events the
client reads back (type, name, ids) and the answer for an unknown instance.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import dapr.ext.workflow as wf
import grpc

WAIT = 60


def greet(ctx: wf.WorkflowActivityContext, name: str) -> str:
    return f"hello {name}"


def child(ctx: wf.DaprWorkflowContext, n: int) -> Any:
    return n + 1
    yield


def main(ctx: wf.DaprWorkflowContext, name: str) -> Any:
    said = yield ctx.call_activity(greet, input=name)
    yield ctx.create_timer(timedelta(milliseconds=50))
    got = yield ctx.wait_for_external_event("go")
    sub = yield ctx.call_child_workflow(child, input=got, instance_id=f"{ctx.instance_id}-c")
    return [said, sub]


def scenario(port: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runtime = wf.WorkflowRuntime(host="127.0.0.1", port=port)
    runtime.register_workflow(main)
    runtime.register_workflow(child)
    runtime.register_activity(greet)
    runtime.start()
    c = wf.DaprWorkflowClient(host="127.0.0.1", port=port)
    try:
        iid = c.schedule_new_workflow(main, input="ada", instance_id="hist-1")
        c.wait_for_workflow_start(iid, timeout_in_seconds=WAIT)
        c.raise_workflow_event(iid, "go", data=41)
        state = c.wait_for_workflow_completion(iid, timeout_in_seconds=WAIT)
        assert state is not None
        out["status"] = state.runtime_status.name
        out["events"] = [
            [e.event_type.name, e.event_id, e.name, e.task_scheduled_id]
            for e in c.get_workflow_history(iid)
            if e.event_type.name not in ("WORKFLOW_STARTED", "WORKFLOW_COMPLETED")
        ]
        try:
            c.get_workflow_history("no-such-instance")
            out["unknown"] = "answered"
        except grpc.RpcError as err:
            out["unknown"] = err.code().name
    finally:
        runtime.shutdown()
        c.close()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(scenario(sys.argv[1]), sort_keys=True), flush=True)
