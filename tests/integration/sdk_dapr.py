"""The Dapr Workflow SDK (``dapr.ext.workflow``, dapr 1.19) running against a sidecar.

Run by tests/integration/test_sidecar_sdks.py in a process of its own::

    python sdk_dapr.py PORT [STEPS]

With ``dapr-ext-workflow`` 1.18 (``LEGACY``: an empty ``GetWorkItemsRequest``, no
stateful history, no listing, no rerun) it runs the scenario and the sequential
workflow once, and prints what that release can tell.

The same scenario as sdk_durabletask.py, written with Dapr's API, printing the same
JSON shape. Then a sequential workflow runs twice, once with the worker's stateful
history on (dapr 1.19's default) and once off, for the test to count the events the
sidecar sent per turn.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import timedelta
from typing import Any

import dapr.ext.workflow as wf

LEGACY = not hasattr(wf.DaprWorkflowClient, "rerun_workflow_from_event")  # dapr 1.18
ATTEMPTS: dict[str, int] = {}
EXECUTION_IDS: list[str] = []  # the flaky call's taskExecutionId, per attempt
WAIT = 30
STEPS = 6


def greet(ctx: wf.WorkflowActivityContext, name: str) -> str:
    return f"hello {name}"


def flaky(ctx: wf.WorkflowActivityContext, key: str) -> str:
    EXECUTION_IDS.append(getattr(ctx.get_inner_context(), "task_execution_id", ""))
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 3:
        raise ValueError(f"attempt {ATTEMPTS[key]} of {key} fails")
    return f"{key} ok after {ATTEMPTS[key]} attempts"


def broken(ctx: wf.WorkflowActivityContext, _: Any) -> None:
    raise RuntimeError("always broken")


def child(ctx: wf.DaprWorkflowContext, n: int) -> Any:
    said = yield ctx.call_activity(greet, input=f"child {n}")
    return {"child": n, "said": said}


RETRY = wf.RetryPolicy(first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=3)


def main(ctx: wf.DaprWorkflowContext, order: dict[str, Any]) -> Any:
    first = yield ctx.call_activity(greet, input=order["name"])
    fan = yield wf.when_all([ctx.call_activity(greet, input=str(i)) for i in range(4)])
    yield ctx.create_timer(timedelta(milliseconds=300))
    approval = yield ctx.wait_for_external_event("approval")
    sub = yield ctx.call_child_workflow(child, input=7, instance_id=f"{ctx.instance_id}-child")
    retried = yield ctx.call_activity(flaky, input="flaky", retry_policy=RETRY)
    try:
        yield ctx.call_activity(broken)
        caught = None
    except wf.TaskFailedError as err:
        caught = err.details.message
    ctx.set_custom_status({"stage": "done"})
    return {"first": first, "fan": fan, "approval": approval, "sub": sub,
            "retried": retried, "caught": caught}  # fmt: skip


def waiter(ctx: wf.DaprWorkflowContext, _: Any) -> Any:
    value = yield ctx.wait_for_external_event("go")
    return {"got": value}


def failing(ctx: wf.DaprWorkflowContext, _: Any) -> Any:
    yield ctx.call_activity(broken)


def steps(ctx: wf.DaprWorkflowContext, n: int) -> Any:
    said = []
    for i in range(n):
        said.append((yield ctx.call_activity(greet, input=str(i))))
    return said


def looping(ctx: wf.DaprWorkflowContext, n: int) -> Any:
    said = yield ctx.call_activity(greet, input=f"round {n}")
    if n < 2:
        ctx.continue_as_new(n + 1)
        return None
    return {"rounds": n, "said": said}


def _fresh(fn: Any) -> Any:
    """A new function calling ``fn`` under its name: the SDK marks the functions it
    registered, and refuses them in a second runtime."""

    def call(ctx: Any, value: Any = None) -> Any:
        return fn(ctx, value)

    call.__name__ = fn.__name__
    return call


def _runtime(port: str, *, stateful: bool) -> wf.WorkflowRuntime:
    options = {} if LEGACY else {"disable_stateful_history": not stateful}
    runtime = wf.WorkflowRuntime(host="127.0.0.1", port=port, **options)
    for workflow in (main, child, waiter, failing, steps, looping):
        runtime.register_workflow(_fresh(workflow))
    for activity in (greet, flaky, broken):
        runtime.register_activity(_fresh(activity))
    return runtime


def _state(c: wf.DaprWorkflowClient, instance_id: str) -> dict[str, Any]:
    state = c.wait_for_workflow_completion(instance_id, timeout_in_seconds=WAIT)
    assert state is not None
    failure = state.failure_details
    return {
        "status": state.runtime_status.name,
        "output": json.loads(state.serialized_output) if state.serialized_output else None,
        "custom": json.loads(state.serialized_custom_status)
        if state.serialized_custom_status
        else None,
        "failure": failure.message if failure is not None else None,
    }


def _wait_status(c: wf.DaprWorkflowClient, instance_id: str, wanted: str) -> str:
    """Poll until the instance shows ``wanted`` (a bounded wait on an Event, no sleep)."""
    tick = threading.Event()
    for _ in range(300):
        state = c.get_workflow_state(instance_id)
        if state is not None and state.runtime_status.name == wanted:
            return wanted
        tick.wait(0.05)
    return "never " + wanted


def scenario(port: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runtime = _runtime(port, stateful=True)
    runtime.start()
    c = wf.DaprWorkflowClient(host="127.0.0.1", port=port)
    try:
        iid = c.schedule_new_workflow(main, input={"name": "ada"}, instance_id="order-1")
        c.raise_workflow_event(iid, "approval", data={"ok": True})
        out["main"] = _state(c, iid)
        c.purge_workflow(iid, recursive=False)
        out["purged"] = c.get_workflow_state(iid) is None
        out["child"] = _state(c, f"{iid}-child")

        iid = c.schedule_new_workflow(waiter, instance_id="wait-1")
        c.wait_for_workflow_start(iid, timeout_in_seconds=WAIT)
        c.terminate_workflow(iid, output={"stopped": True}, recursive=False)
        out["terminated"] = _state(c, iid)

        iid = c.schedule_new_workflow(waiter, instance_id="wait-2")
        c.wait_for_workflow_start(iid, timeout_in_seconds=WAIT)
        c.pause_workflow(iid)
        out["suspended"] = _wait_status(c, iid, "SUSPENDED")
        c.raise_workflow_event(iid, "go", data=42)
        c.resume_workflow(iid)
        out["resumed"] = _state(c, iid)

        iid = c.schedule_new_workflow(failing, instance_id="fail-1")
        out["failed"] = _state(c, iid)

        iid = c.schedule_new_workflow(looping, input=0, instance_id="loop-1")
        out["continued"] = _state(c, iid)

        if LEGACY:
            iid = c.schedule_new_workflow(steps, input=STEPS, instance_id="steps-full")
            out["steps-full"] = _state(c, iid)["output"]
            return out
        iid = c.schedule_new_workflow(steps, input=STEPS, instance_id="steps-stateful")
        out["steps-stateful"] = _state(c, iid)["output"]
    finally:
        runtime.shutdown()
        if LEGACY:
            c.close()
    runtime = _runtime(port, stateful=False)
    runtime.start()
    try:
        iid = c.schedule_new_workflow(steps, input=STEPS, instance_id="steps-full")
        out["steps-full"] = _state(c, iid)["output"]
        out["dapr-ids"] = list(c.iter_workflow_instance_ids(page_size=2))
        out["dapr-execution-ids"] = list(EXECUTION_IDS)
        # run it again from its third activity (the worker numbers tasks from 1), in place
        rerun = c.rerun_workflow_from_event(iid, 3)
        out["dapr-rerun"] = [rerun, _state(c, rerun)["output"]]
    finally:
        runtime.shutdown()
        c.close()
    return out


if __name__ == "__main__":
    if len(sys.argv) > 2:
        STEPS = int(sys.argv[2])
    print("RESULT " + json.dumps(scenario(sys.argv[1]), sort_keys=True), flush=True)
