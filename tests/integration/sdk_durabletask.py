"""The ``durabletask`` SDK (worker + client) running one scenario against a sidecar.

Run by tests/integration/test_sidecar_sdks.py in a process of its own (durabletask and
dapr.ext.workflow cannot share one)::

    python sdk_durabletask.py HOST:PORT      # a sidecar already listening there
    python sdk_durabletask.py inmemory       # durabletask's own in-memory backend

Prints one JSON object: what each part of the scenario observed, in a form that does
not depend on the backend (so the two runs, and the Dapr SDK's, compare equal).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from durabletask import client, task, worker

if TYPE_CHECKING:
    from collections.abc import Callable

ATTEMPTS: dict[str, int] = {}
WAIT = 30  # seconds: a generous bound for each client wait


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def flaky(ctx: task.ActivityContext, key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 3:
        raise ValueError(f"attempt {ATTEMPTS[key]} of {key} fails")
    return f"{key} ok after {ATTEMPTS[key]} attempts"


def broken(ctx: task.ActivityContext, _: Any) -> None:
    raise RuntimeError("always broken")


def child(ctx: task.OrchestrationContext, n: int) -> Any:
    doubled = yield ctx.call_activity(greet, input=f"child {n}")
    return {"child": n, "said": doubled}


RETRY = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=3)


def main(ctx: task.OrchestrationContext, order: dict[str, Any]) -> Any:
    first = yield ctx.call_activity(greet, input=order["name"])
    fan = yield task.when_all([ctx.call_activity(greet, input=str(i)) for i in range(4)])
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(milliseconds=300))
    approval = yield ctx.wait_for_external_event("approval")
    sub = yield ctx.call_sub_orchestrator(child, input=7, instance_id=f"{ctx.instance_id}-child")
    retried = yield ctx.call_activity(flaky, input="flaky", retry_policy=RETRY)
    try:
        yield ctx.call_activity(broken)
        caught = None
    except task.TaskFailedError as err:
        caught = err.details.message
    ctx.set_custom_status({"stage": "done"})
    return {"first": first, "fan": fan, "approval": approval, "sub": sub,
            "retried": retried, "caught": caught}  # fmt: skip


def waiter(ctx: task.OrchestrationContext, _: Any) -> Any:
    value = yield ctx.wait_for_external_event("go")
    return {"got": value}


def failing(ctx: task.OrchestrationContext, _: Any) -> Any:
    yield ctx.call_activity(broken)


def looping(ctx: task.OrchestrationContext, n: int) -> Any:
    said = yield ctx.call_activity(greet, input=f"round {n}")
    if n < 2:
        ctx.continue_as_new(n + 1)
        return None
    return {"rounds": n, "said": said}


def _state(c: client.TaskHubGrpcClient, instance_id: str) -> dict[str, Any]:
    state = c.wait_for_orchestration_completion(instance_id, timeout=WAIT)
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


def _wait_status(c: client.TaskHubGrpcClient, instance_id: str, wanted: str) -> str:
    """Poll until the instance shows ``wanted`` (a bounded wait on an Event, no sleep)."""
    tick = threading.Event()
    for _ in range(300):
        state = c.get_orchestration_state(instance_id)
        if state is not None and state.runtime_status.name == wanted:
            return wanted
        tick.wait(0.05)
    return "never " + wanted


def scenario(address: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with worker.TaskHubGrpcWorker(host_address=address) as w:
        for orchestrator in (main, child, waiter, failing, looping):
            w.add_orchestrator(orchestrator)
        for activity in (greet, flaky, broken):
            w.add_activity(activity)
        w.start()
        c = client.TaskHubGrpcClient(host_address=address)

        iid = c.schedule_new_orchestration(main, input={"name": "ada"}, instance_id="order-1")
        c.raise_orchestration_event(iid, "approval", data={"ok": True})
        out["main"] = _state(c, iid)
        c.purge_orchestration(iid, recursive=False)  # the child stays (the reference: any)
        out["purged"] = c.get_orchestration_state(iid) is None
        out["child"] = _state(c, f"{iid}-child")

        iid = c.schedule_new_orchestration(waiter, instance_id="wait-1")
        c.wait_for_orchestration_start(iid, timeout=WAIT)
        c.terminate_orchestration(iid, output={"stopped": True})
        out["terminated"] = _state(c, iid)

        iid = c.schedule_new_orchestration(waiter, instance_id="wait-2")
        c.wait_for_orchestration_start(iid, timeout=WAIT)
        c.suspend_orchestration(iid)
        out["suspended"] = _wait_status(c, iid, "SUSPENDED")
        c.raise_orchestration_event(iid, "go", data=42)
        c.resume_orchestration(iid)
        out["resumed"] = _state(c, iid)

        iid = c.schedule_new_orchestration(failing, instance_id="fail-1")
        out["failed"] = _state(c, iid)

        iid = c.schedule_new_orchestration(looping, input=0, instance_id="loop-1")
        out["continued"] = _state(c, iid)

        done = c.list_instance_ids(runtime_status=[client.OrchestrationStatus.COMPLETED])
        out["completed-ids"] = sorted(done.items)
        failed = c.get_all_orchestration_states(
            client.OrchestrationQuery(runtime_status=[client.OrchestrationStatus.FAILED])
        )
        out["failed-ids"] = sorted(state.instance_id for state in failed)
        purged = c.purge_orchestrations_by(runtime_status=[client.OrchestrationStatus.TERMINATED])
        out["purged-terminated"] = [purged.deleted_instance_count,
                                    c.get_orchestration_state("wait-1") is None]  # fmt: skip
        w.stop()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(scenario: Callable[[str], dict[str, Any]]) -> None:
    """Run ``scenario`` against the target on the command line (``inmemory``: the SDK's
    own backend, started here) and print its ``RESULT`` line."""
    target = sys.argv[1]
    if target == "inmemory":
        from durabletask.testing import create_test_backend

        port = _free_port()
        backend = create_test_backend(port)
        try:
            result = scenario(f"localhost:{port}")
        finally:
            backend.stop()
    else:
        result = scenario(target)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    run(scenario)
