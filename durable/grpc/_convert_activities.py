"""Activity work items and their results in either wire dialect (see
:mod:`durable.grpc._convert`)."""

from __future__ import annotations

from functools import partial
from typing import Any, TypeVar

from durable._core._events import ActivityCompleted, ActivityErrored, ActivityScheduled
from durable.grpc._convert_values import failure_from_proto, payload_in, payload_out, text
from durable.grpc._dialect import DAPR, MS, Dialect
from durable.grpc._proto import dapr, ms

__all__ = [
    "DURABLE_ID",
    "STEP_TAG",
    "activity_request_to_dapr",
    "activity_request_to_ms",
    "activity_request_to_proto",
    "activity_result_from_proto",
    "step_of",
    "step_of_activity_request",
]


STEP_TAG = "durable.step"
"""The MS ``ActivityRequest.tags`` entry that carries durable's step number."""
DURABLE_ID = "durable:"
"""How a Dapr ``taskExecutionId`` made by durable begins."""

R = TypeVar("R")


def activity_request_to_proto(
    dialect: Dialect[Any, Any, Any, R],
    event: ActivityScheduled,
    *,
    instance_id: str,
    run_id: str = "",
    task_base: int = 0,
    trace_parent: str = "",
) -> R:
    """The dialect's ActivityRequest that runs ``event``'s activity; ``trace_parent``
    (the attempt's span) goes in its ``parentTraceContext``. durable's step number
    (unique in the instance across runs, unlike the wire task id) goes in its MS tags.
    Its Dapr ``taskExecutionId`` is the one the worker gave when it scheduled the call
    (Dapr SDKs keep one per call, over its retries), or else ``durable:{run id}:{step}``:
    the same for every attempt of the step, unique across runs and instances, and read
    back by durable's worker."""
    request: dict[str, Any] = {
        "name": event.name,
        "input": payload_out(event.input),
        dialect.instance: {"instanceId": instance_id, "executionId": text(run_id)},
        "taskId": event.task_id - task_base,
    }
    if dialect.execution_ids:
        request["taskExecutionId"] = event.execution_id or f"{DURABLE_ID}{run_id}:{event.step}"
    else:
        request["tags"] = {STEP_TAG: str(event.step)}
    if trace_parent:
        request["parentTraceContext"] = {"traceParent": trace_parent}
    return dialect.activity_request(**request)


activity_request_to_ms = partial(activity_request_to_proto, MS)
""":func:`activity_request_to_proto` in the MS dialect."""
activity_request_to_dapr = partial(activity_request_to_proto, DAPR)
""":func:`activity_request_to_proto` in the Dapr dialect."""


def step_of_activity_request(request: ms.ActivityRequest | dapr.ActivityRequest) -> int | None:
    """Durable's step number carried by an activity request from durable's sidecar
    (None from another sidecar)."""
    return step_of(request)


def step_of(
    message: ms.ActivityRequest
    | dapr.ActivityRequest
    | ms.ScheduleTaskAction
    | dapr.ScheduleTaskAction,
) -> int | None:
    """The step number in MS tags or at the end of a durable-made Dapr
    ``taskExecutionId`` (``durable:…:{step}``); None otherwise (Dapr SDKs make their
    own, a UUID)."""
    if isinstance(message, ms.ActivityRequest | ms.ScheduleTaskAction):
        text = message.tags.get(STEP_TAG, "")
    elif message.taskExecutionId.startswith(DURABLE_ID):
        text = message.taskExecutionId.rpartition(":")[2]
    else:
        return None
    return int(text) if text.isdigit() else None


def activity_result_from_proto(
    response: ms.ActivityResponse | dapr.ActivityResponse, *, task_base: int = 0
) -> ActivityCompleted | ActivityErrored:
    """The event an ActivityResponse of either dialect reports: failed if it carries
    failureDetails. Position and time are the engine's to stamp."""
    task_id = response.taskId + task_base
    if response.HasField("failureDetails"):
        return ActivityErrored(task_id=task_id, failure=failure_from_proto(response.failureDetails))
    return ActivityCompleted(task_id=task_id, result=payload_in(response, "result"))
