"""Payloads through the ``durabletask`` SDK, unchanged, with a data converter that
sends strings as they are (non-JSON, empty, ``null``, unicode, large).

Run by tests/integration/test_sidecar_payloads.py in a process of its own::

    python sdk_payloads_durabletask.py HOST:PORT

For each text: it is the orchestration's input, custom status, an activity's input
and result, a sub-orchestration's input and output, an event's data, the output; a
second instance is terminated with it as output, a third continues as new with it;
an activity failure carries it in its properties (and is non-retriable). Prints
what the client read back, per text.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from durabletask import client, task, worker
from durabletask.serialization import DataConverter
from sdk_texts import TEXTS

WAIT = 60


class AsIs(DataConverter):
    """Strings travel as they are; anything else as JSON."""

    def serialize(self, value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value)

    def deserialize(self, data: str | None, target_type: type | None = None) -> Any:
        return data

    def coerce(self, value: Any, target_type: type | None = None) -> Any:
        return value


class Carried:
    """Puts the failing text in the failure's properties."""

    def get_exception_properties(self, exception: Exception) -> dict[str, Any]:
        return {"text": str(exception), "n": 2}


def echo(ctx: task.ActivityContext, text: str) -> str:
    return text


def broken(ctx: task.ActivityContext, text: str) -> None:
    raise ValueError(text)


def child(ctx: task.OrchestrationContext, text: str) -> Any:
    return text
    yield


def main(ctx: task.OrchestrationContext, text: str | None) -> Any:
    ctx.set_custom_status(text)
    said = yield ctx.call_activity(echo, input=text)
    sub = yield ctx.call_sub_orchestrator(child, input=text, instance_id=f"{ctx.instance_id}-c")
    got = yield ctx.wait_for_external_event("e")
    if not (said == sub == got == text):
        raise ValueError(f"read back {said!r} {sub!r} {got!r}")
    return text


def failing(ctx: task.OrchestrationContext, text: str) -> Any:
    try:
        yield ctx.call_activity(broken, input=text)
    except task.TaskFailedError as err:
        props = err.details.properties or {}
        return {"properties": {k: "=" if v == text else v for k, v in props.items()},
                "message": "=" if err.details.message == text else err.details.message}  # fmt: skip
    return None


def waiter(ctx: task.OrchestrationContext, text: str) -> Any:
    yield ctx.wait_for_external_event("never")


def looping(ctx: task.OrchestrationContext, text: str | None) -> Any:
    if not text or not text.startswith("again:"):
        ctx.continue_as_new("again:" + (text or ""))
        return None
    return text
    yield


def _as_read(text: str, values: list[Any]) -> list[Any]:
    """``values`` with the ones equal to ``text`` shown as ``=`` (large texts stay short)."""
    return ["=" if v == text else v if not isinstance(v, str) else v[:80] for v in values]


def scenario(address: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with worker.TaskHubGrpcWorker(host_address=address, data_converter=AsIs(),
                                  exception_properties_provider=Carried()) as w:  # fmt: skip
        for orchestrator in (main, child, failing, waiter, looping):
            w.add_orchestrator(orchestrator)
        for activity in (echo, broken):
            w.add_activity(activity)
        w.start()
        c = client.TaskHubGrpcClient(host_address=address, data_converter=AsIs())
        for key, text in TEXTS.items():
            iid = c.schedule_new_orchestration(main, input=text, instance_id=f"main-{key}")
            c.raise_orchestration_event(iid, "e", data=text)
            state = c.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None
            failure = state.failure_details.message if state.failure_details else None
            read = [state.runtime_status.name, state.serialized_input, state.serialized_output,
                    state.serialized_custom_status, failure]  # fmt: skip

            iid = c.schedule_new_orchestration(waiter, input=text, instance_id=f"wait-{key}")
            c.wait_for_orchestration_start(iid, timeout=WAIT)
            c.terminate_orchestration(iid, output=text, recursive=False)
            state = c.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None
            read += [state.runtime_status.name, state.serialized_output]

            iid = c.schedule_new_orchestration(looping, input=text, instance_id=f"loop-{key}")
            state = c.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None
            read += [state.runtime_status.name, state.serialized_output == "again:" + text]

            iid = c.schedule_new_orchestration(failing, input=text, instance_id=f"fail-{key}")
            state = c.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None
            read += [state.runtime_status.name, json.loads(state.serialized_output or "null")]
            out[key] = _as_read(text, read)
        w.stop()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(scenario(sys.argv[1]), sort_keys=True), flush=True)
