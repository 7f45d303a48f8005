"""The Dapr Workflow SDK's lifecycle calls against a sidecar: a child workflow retried
under the same id, an ended id started again, recursive terminate and purge, purge by
filter, rerun into a new instance with a new input.

Run by tests/integration/test_sidecar_lifecycle_sdks.py in a process of its own::

    python sdk_lifecycle_dapr.py PORT

Prints one JSON object (``RESULT {...}``): what each part observed.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import dapr.ext.workflow as wf
from _sdk_common import Loud, until
from dapr.ext.workflow._durabletask.internal import protos as pb
from google.protobuf import timestamp_pb2

WAIT = 30
ATTEMPTS: dict[str, int] = {}


def greet(ctx: wf.WorkflowActivityContext, name: str) -> str:
    return f"hello {name}"


def flaky_once(ctx: wf.WorkflowActivityContext, key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 2:
        raise ValueError(f"attempt {ATTEMPTS[key]} of {key} fails")
    return f"{key} ok after {ATTEMPTS[key]} attempts"


def fragile_child(ctx: wf.DaprWorkflowContext, key: str) -> Any:
    said = yield ctx.call_activity(flaky_once, input=key)  # no retry here: the child fails
    return said


RETRY = wf.RetryPolicy(first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=3)


def retrying_parent(ctx: wf.DaprWorkflowContext, key: str) -> Any:
    said = yield ctx.call_child_workflow(
        fragile_child, input=key, instance_id=f"{ctx.instance_id}-child", retry_policy=RETRY
    )
    return said


def echo(ctx: wf.DaprWorkflowContext, value: Any) -> Any:
    said = yield ctx.call_activity(greet, input=str(value))
    return said


def waiter(ctx: wf.DaprWorkflowContext, _: Any) -> Any:
    got = yield ctx.wait_for_external_event("go")
    return got


def tree(ctx: wf.DaprWorkflowContext, tag: str) -> Any:
    kids = [
        ctx.call_child_workflow(waiter, instance_id=f"{tag}-a"),
        ctx.call_child_workflow(echo, input=tag, instance_id=f"{tag}-b"),
    ]
    yield wf.when_all(kids)


def steps(ctx: wf.DaprWorkflowContext, n: int) -> Any:
    said = []
    for i in range(n):
        said.append((yield ctx.call_activity(greet, input=str(i))))
    return said


def _status(c: wf.DaprWorkflowClient, instance_id: str) -> str | None:
    state = c.get_workflow_state(instance_id)
    return state.runtime_status.name if state is not None else None


def _done(c: wf.DaprWorkflowClient, instance_id: str) -> dict[str, Any]:
    try:
        state = c.wait_for_workflow_completion(instance_id, timeout_in_seconds=WAIT)
    except TimeoutError:
        return {"status": "never ended", "output": _status(c, instance_id)}
    if state is None:
        return {"status": None, "output": None}
    return {
        "status": state.runtime_status.name,
        "output": json.loads(state.serialized_output) if state.serialized_output else None,
    }


def _stamp(at: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at)
    return out


def scenario(port: str) -> dict[str, Any]:
    out: dict[str, Any] = Loud()
    runtime = wf.WorkflowRuntime(host="127.0.0.1", port=port)
    for workflow in (fragile_child, retrying_parent, echo, waiter, tree, steps):
        runtime.register_workflow(workflow)
    for activity in (greet, flaky_once):
        runtime.register_activity(activity)
    runtime.start()
    c = wf.DaprWorkflowClient(host="127.0.0.1", port=port)
    stub = c._DaprWorkflowClient__obj._stub  # type: ignore[attr-defined]
    try:
        # a child workflow retried under the same id
        c.schedule_new_workflow(retrying_parent, input="kid", instance_id="retry-1")
        out["child-retry"] = _done(c, "retry-1")

        # an ended id started again: replaced (Dapr's rule)
        c.schedule_new_workflow(echo, input=1, instance_id="again-1")
        _done(c, "again-1")
        c.schedule_new_workflow(echo, input=2, instance_id="again-1")
        out["started-again"] = _done(c, "again-1")

        # recursive terminate, then recursive purge
        c.schedule_new_workflow(tree, input="t1", instance_id="t1")
        assert until(lambda: _status(c, "t1-a") == "RUNNING")
        c.terminate_workflow("t1")  # recursive=True: the SDK's default
        out["terminated"] = [_done(c, i)["status"] for i in ("t1", "t1-a")]
        c.purge_workflow("t1")  # recursive=True: the SDK's default
        out["purged-tree"] = [_status(c, i) for i in ("t1", "t1-a", "t1-b")]

        # purge by filter: created in a time range, with a status
        since = datetime.now(UTC)
        for i in range(3):
            c.schedule_new_workflow(echo, input=i, instance_id=f"f-{i}")
            _done(c, f"f-{i}")
        c.schedule_new_workflow(waiter, instance_id="f-running")
        c.wait_for_workflow_start("f-running", timeout_in_seconds=WAIT)
        request = pb.PurgeInstancesRequest(
            purgeInstanceFilter=pb.PurgeInstanceFilter(
                createdTimeFrom=_stamp(since),
                createdTimeTo=_stamp(datetime.now(UTC) + timedelta(seconds=1)),
                runtimeStatus=[pb.ORCHESTRATION_STATUS_COMPLETED],
            )
        )
        reply = stub.PurgeInstances(request)
        out["purged-by-filter"] = [reply.deletedInstanceCount,
                                   [_status(c, f"f-{i}") for i in range(3)],
                                   _status(c, "f-running"), _status(c, "again-1")]  # fmt: skip
        c.terminate_workflow("f-running")

        # rerun into a new instance, the rerun step with a new input
        c.schedule_new_workflow(steps, input=4, instance_id="src")
        out["source"] = _done(c, "src")
        fork = c.rerun_workflow_from_event("src", 3, new_instance_id="fork", input="X")
        out["rerun-new"] = [fork, _done(c, "fork"), _done(c, "src")]
        fork = c.rerun_workflow_from_event("src", 2, new_instance_id="fork-2")
        out["rerun-new-same-input"] = [fork, _done(c, "fork-2")]
    finally:
        runtime.shutdown()
        c.close()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(scenario(sys.argv[1]), sort_keys=True), flush=True)
