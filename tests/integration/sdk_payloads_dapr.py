"""Payloads through the Dapr Workflow SDK (``dapr.ext.workflow``), unchanged.

Run by tests/integration/test_sidecar_payloads.py in a process of its own::

    python sdk_payloads_dapr.py PORT

Dapr's ``set_custom_status`` sends a string as it is (``"foobaz"``, not JSON), which
made the sidecar write a turn record it could never read again. For each text: it is
the custom status, and (JSON-encoded by the SDK) the input, an activity's input and
result, a child workflow's input and output, an event's data, the output and a
terminate output. Prints what the client read back, per text.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import dapr.ext.workflow as wf
from sdk_texts import TEXTS

WAIT = 60


def echo(ctx: wf.WorkflowActivityContext, text: str) -> str:
    return text


def child(ctx: wf.DaprWorkflowContext, text: str) -> Any:
    return text
    yield


def main(ctx: wf.DaprWorkflowContext, text: str) -> Any:
    ctx.set_custom_status(text)
    said = yield ctx.call_activity(echo, input=text)
    sub = yield ctx.call_child_workflow(child, input=text, instance_id=f"{ctx.instance_id}-c")
    got = yield ctx.wait_for_external_event("e")
    if not (said == sub == text and got == (text or None)):  # the SDK sends no "" event data
        raise ValueError(f"read back {said!r} {sub!r} {got!r}")
    return text


def waiter(ctx: wf.DaprWorkflowContext, text: str) -> Any:
    ctx.set_custom_status(text)
    yield ctx.wait_for_external_event("never")


def scenario(port: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runtime = wf.WorkflowRuntime(host="127.0.0.1", port=port)
    for workflow in (main, child, waiter):
        runtime.register_workflow(workflow)
    runtime.register_activity(echo)
    runtime.start()
    c = wf.DaprWorkflowClient(host="127.0.0.1", port=port)
    try:
        for key, text in TEXTS.items():
            iid = c.schedule_new_workflow(main, input=text, instance_id=f"main-{key}")
            c.raise_workflow_event(iid, "e", data=text)
            state = c.wait_for_workflow_completion(iid, timeout_in_seconds=WAIT)
            assert state is not None
            failure = state.failure_details.message if state.failure_details else None
            read = [state.runtime_status.name, json.loads(state.serialized_input or "null"),
                    json.loads(state.serialized_output or "null"),
                    state.serialized_custom_status, failure]  # fmt: skip
            iid = c.schedule_new_workflow(waiter, input=text, instance_id=f"wait-{key}")
            c.wait_for_workflow_start(iid, timeout_in_seconds=WAIT)
            c.terminate_workflow(iid, output=text, recursive=False)
            state = c.wait_for_workflow_completion(iid, timeout_in_seconds=WAIT)
            assert state is not None
            read += [state.runtime_status.name, json.loads(state.serialized_output or "null"),
                     state.serialized_custom_status]  # fmt: skip
            out[key] = ["=" if v == text else v[:80] if isinstance(v, str) else v for v in read]
    finally:
        runtime.shutdown()
        c.close()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(scenario(sys.argv[1]), sort_keys=True), flush=True)
