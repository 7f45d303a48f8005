"""The ``durabletask`` SDK's lifecycle calls against a sidecar: events between
instances, sub-orchestration retries under the same id, id-reuse policies, recursive
terminate and purge, restart.

Run by tests/integration/test_sidecar_lifecycle_sdks.py in a process of its own::

    python sdk_lifecycle_durabletask.py HOST:PORT   # a sidecar listening there

(durabletask's in-memory backend is no reference here: it ignores ``recursive`` and
has no id-reuse default but refusal.)

Prints one JSON object (``RESULT {...}``): what each part observed.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import timedelta
from typing import Any

import grpc
from _sdk_common import Loud, until
from durabletask import client, task, worker
from durabletask.internal import orchestrator_service_pb2 as pb

WAIT = 30
ATTEMPTS: dict[str, int] = {}
RAN: list[str] = []  # the activities of terminated trees that ran, by input


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def record(ctx: task.ActivityContext, what: str) -> str:
    RAN.append(what)
    return what


def broken(ctx: task.ActivityContext, what: str) -> None:
    RAN.append(what)
    raise RuntimeError(f"{what} is broken")


def flaky_once(ctx: task.ActivityContext, key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 2:
        raise ValueError(f"attempt {ATTEMPTS[key]} of {key} fails")
    return f"{key} ok after {ATTEMPTS[key]} attempts"


def sender(ctx: task.OrchestrationContext, target: str) -> Any:
    ctx.send_event(target, "ping", data={"from": ctx.instance_id})
    ctx.send_event("nobody-is-here", "ping", data=1)  # dropped, not failing the sender
    said = yield ctx.call_activity(greet, input="sender")
    return said


def receiver(ctx: task.OrchestrationContext, _: Any) -> Any:
    got = yield ctx.wait_for_external_event("ping")
    return {"got": got}


def fragile_child(ctx: task.OrchestrationContext, key: str) -> Any:
    said = yield ctx.call_activity(flaky_once, input=key)  # no retry here: the child fails
    return said


RETRY = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=3)


def retrying_parent(ctx: task.OrchestrationContext, key: str) -> Any:
    said = yield ctx.call_sub_orchestrator(
        fragile_child, input=key, instance_id=f"{ctx.instance_id}-child", retry_policy=RETRY
    )
    return said


def adopting_parent(ctx: task.OrchestrationContext, child_id: str) -> Any:
    try:
        said = yield ctx.call_sub_orchestrator(echo, input="adopted", instance_id=child_id)
    except task.TaskFailedError as err:
        return {"failed": err.details.message[:200]}
    return said


def echo(ctx: task.OrchestrationContext, value: Any) -> Any:
    said = yield ctx.call_activity(greet, input=str(value))
    return said


def waiting_child(ctx: task.OrchestrationContext, tag: str) -> Any:
    yield ctx.wait_for_external_event("go")
    done = yield ctx.call_activity(record, input=tag)
    return done


def retrying_child(ctx: task.OrchestrationContext, tag: str) -> Any:
    # its retry's timer fires after the tree is terminated: the retry must not run
    slow = task.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=5)
    yield ctx.call_activity(broken, input=tag, retry_policy=slow)


GATE = threading.Event()  # holds the worker's one activity slot until set
HELD = threading.Event()
HOLD_DONE = threading.Event()


def hold(ctx: task.ActivityContext, what: str) -> str:
    HELD.set()
    GATE.wait(60)
    HOLD_DONE.set()
    return what


def fan(ctx: task.OrchestrationContext, tag: str) -> Any:
    # the worker takes one activity at a time: while "hold" runs, the others wait
    # in the sidecar's queue
    first = ctx.call_activity(hold, input=f"{tag}-hold")
    rest = [ctx.call_activity(record, input=f"{tag}-{i}") for i in range(3)]
    yield task.when_all([first, *rest])


def queued_tree(ctx: task.OrchestrationContext, tag: str) -> Any:
    yield ctx.call_sub_orchestrator(fan, input=tag, instance_id=f"{tag}-f")


def tree(ctx: task.OrchestrationContext, tag: str) -> Any:
    kids = [
        ctx.call_sub_orchestrator(waiting_child, input=f"{tag}-a", instance_id=f"{tag}-a"),
        ctx.call_sub_orchestrator(retrying_child, input=f"{tag}-b", instance_id=f"{tag}-b"),
        ctx.call_sub_orchestrator(echo, input=tag, instance_id=f"{tag}-c"),
    ]
    yield task.when_all(kids)


def _status(c: client.TaskHubGrpcClient, instance_id: str) -> str | None:
    state = c.get_orchestration_state(instance_id)
    return state.runtime_status.name if state is not None else None


def _done(c: client.TaskHubGrpcClient, instance_id: str) -> dict[str, Any]:
    try:
        state = c.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    except TimeoutError:
        return {"status": "never ended", "output": _status(c, instance_id)}
    if state is None:
        return {"status": None, "output": None}
    return {
        "status": state.runtime_status.name,
        "output": json.loads(state.serialized_output) if state.serialized_output else None,
    }


def _code(call: Any) -> str:
    try:
        call()
    except grpc.RpcError as err:
        return str(err.code().name)
    return "OK"


def scenario(address: str) -> dict[str, Any]:
    out: dict[str, Any] = Loud()
    one_activity = worker.ConcurrencyOptions(maximum_concurrent_activity_work_items=1)
    with worker.TaskHubGrpcWorker(host_address=address, concurrency_options=one_activity) as w:
        for orchestrator in (sender, receiver, fragile_child, retrying_parent, echo,
                             waiting_child, retrying_child, tree, fan, queued_tree,
                             adopting_parent):  # fmt: skip
            w.add_orchestrator(orchestrator)
        for activity in (greet, record, broken, flaky_once, hold):
            w.add_activity(activity)
        w.start()
        c = client.TaskHubGrpcClient(host_address=address)

        # 1. an event from one orchestration to another (and one to nobody)
        c.schedule_new_orchestration(receiver, instance_id="rx-1")
        c.wait_for_orchestration_start("rx-1", timeout=WAIT)
        c.schedule_new_orchestration(sender, input="rx-1", instance_id="tx-1")
        out["send-sender"] = _done(c, "tx-1")
        out["send-receiver"] = _done(c, "rx-1")
        out["send-nobody"] = _status(c, "nobody-is-here")

        # 2. a sub-orchestration retried under the same id
        c.schedule_new_orchestration(retrying_parent, input="kid", instance_id="retry-1")
        out["child-retry"] = _done(c, "retry-1")
        out["child-retry-child"] = _done(c, "retry-1-child")

        # 2b. a sub-orchestration under an id another instance holds: replaced if that
        # one has ended, the call failed at once if it runs
        c.schedule_new_orchestration(echo, input="mine", instance_id="held-ended")
        _done(c, "held-ended")
        c.schedule_new_orchestration(adopting_parent, input="held-ended", instance_id="adopt-1")
        out["child-id-ended"] = [_done(c, "adopt-1"), _done(c, "held-ended")]
        c.schedule_new_orchestration(receiver, instance_id="held-running")
        c.wait_for_orchestration_start("held-running", timeout=WAIT)
        c.schedule_new_orchestration(adopting_parent, input="held-running", instance_id="adopt-2")
        adopt = _done(c, "adopt-2")
        out["child-id-running"] = [adopt["status"], "failed" in (adopt["output"] or {}),
                                   _status(c, "held-running")]  # fmt: skip
        c.terminate_orchestration("held-running")

        # 3. starting an id that is taken, with and without a reuse policy
        c.schedule_new_orchestration(echo, input=1, instance_id="reuse-1")
        _done(c, "reuse-1")
        out["reuse-none"] = _code(lambda: c.schedule_new_orchestration(
            echo, input=2, instance_id="reuse-1"))  # fmt: skip
        out["reuse-none-replaced"] = _done(c, "reuse-1")
        failed_only = pb.OrchestrationIdReusePolicy(
            replaceableStatus=[pb.ORCHESTRATION_STATUS_FAILED]
        )
        out["reuse-not-listed"] = _code(lambda: c.schedule_new_orchestration(
            echo, input=3, instance_id="reuse-1", reuse_id_policy=failed_only))  # fmt: skip
        completed = pb.OrchestrationIdReusePolicy(
            replaceableStatus=[pb.ORCHESTRATION_STATUS_COMPLETED]
        )
        out["reuse-listed"] = _code(lambda: c.schedule_new_orchestration(
            echo, input=4, instance_id="reuse-1", reuse_id_policy=completed))  # fmt: skip
        out["reuse-replaced"] = _done(c, "reuse-1")
        c.schedule_new_orchestration(receiver, instance_id="reuse-2")
        c.wait_for_orchestration_start("reuse-2", timeout=WAIT)
        running = pb.OrchestrationIdReusePolicy(replaceableStatus=[pb.ORCHESTRATION_STATUS_RUNNING])
        out["reuse-running"] = _code(lambda: c.schedule_new_orchestration(
            echo, input=5, instance_id="reuse-2", reuse_id_policy=running))  # fmt: skip
        out["reuse-running-replaced"] = _done(c, "reuse-2")

        # 4. recursive terminate: the whole tree ends, and no activity of it runs after
        c.schedule_new_orchestration(tree, input="t1", instance_id="t1")
        assert until(lambda: _status(c, "t1-c") == "COMPLETED" and "t1-b" in RAN)
        c.terminate_orchestration("t1", output="stop")  # recursive=True: the SDK's default
        out["terminated"] = {i: _done(c, i)["status"] for i in ("t1", "t1-a", "t1-b", "t1-c")}
        c.raise_orchestration_event("t1-a", "go")  # would run t1-a's activity
        threading.Event().wait(1.5)  # past t1-b's retry timer (1 s), which would run it again
        out["ran-after-terminate"] = sorted(RAN)
        # activities of the tree waiting in the sidecar's queue when it is terminated
        # never run: the worker's one activity slot is held until the tree has ended
        c.schedule_new_orchestration(queued_tree, input="q1", instance_id="q1")
        assert HELD.wait(WAIT)
        c.terminate_orchestration("q1")
        out["terminated-queued"] = [_done(c, i)["status"] for i in ("q1", "q1-f")]
        GATE.set()
        assert HOLD_DONE.wait(WAIT)
        threading.Event().wait(1.0)  # time for the queued ones to reach the worker, if sent
        out["ran-after-terminate-queued"] = sorted(r for r in RAN if r.startswith("q1"))
        # not recursive: the children run on
        c.schedule_new_orchestration(tree, input="t2", instance_id="t2")
        assert until(lambda: _status(c, "t2-a") == "RUNNING")
        c.terminate_orchestration("t2", recursive=False)
        out["terminated-alone"] = [_done(c, "t2")["status"], _status(c, "t2-a")]
        c.terminate_orchestration("t2-a")
        c.terminate_orchestration("t2-b")

        # 5. recursive purge: the children go too (and not with recursive=False)
        _done(c, "t2-a"), _done(c, "t2-b")
        purged = c.purge_orchestration("t2", recursive=False)
        out["purged-alone"] = [purged.deleted_instance_count, _status(c, "t2-a")]
        purged = c.purge_orchestration("t1")
        out["purged-tree"] = [purged.deleted_instance_count,
                              [_status(c, i) for i in ("t1", "t1-a", "t1-b", "t1-c")]]  # fmt: skip

        # 6. restart, under the same id and a new one
        c.schedule_new_orchestration(echo, input="again", instance_id="restart-1")
        _done(c, "restart-1")
        same = c.restart_orchestration("restart-1")
        out["restart-same"] = [same, _done(c, same)]
        other = c.restart_orchestration("restart-1", restart_with_new_instance_id=True)
        out["restart-new"] = [other != "restart-1", _done(c, other)]
        out["restart-unknown"] = _code(lambda: c.restart_orchestration("never-was"))
        c.schedule_new_orchestration(receiver, instance_id="restart-2")
        c.wait_for_orchestration_start("restart-2", timeout=WAIT)
        out["restart-running"] = _code(lambda: c.restart_orchestration("restart-2"))
        c.terminate_orchestration("restart-2")
        w.stop()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(scenario(sys.argv[1]), sort_keys=True), flush=True)
