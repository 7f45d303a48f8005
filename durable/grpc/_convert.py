"""Conversions between durable's model and the Durable Task protocol's messages.

Pure functions for the two wire dialects (``ms``: Microsoft's ``durabletask``;
``dapr``: Dapr 1.19). There is one converter per direction: going out, it takes a
:class:`~durable.grpc._dialect.Dialect` (``MS`` or ``DAPR``: the message classes, the
names in which the dialects differ and what only one of them carries) and builds that
dialect's message (``event_to_proto(MS, ...)``; ``event_to_ms`` and ``event_to_dapr``
name the two); coming in, it takes either dialect's message (``event_from_proto``...).
Protobuf types never leave ``durable.grpc``: the sidecar calls these at its edge and
hands the engine msgspec structs only.

Ids
---
durable numbers things twice: ``event_id`` is an event's position in the run's
history, and ``task_id`` names an activity, timer or sub-workflow; task ids start at
``WorkflowStarted.first_task_id`` so they stay unique across continue-as-new. A
Durable Task worker numbers its actions ``0, 1, 2...`` afresh in every run and
expects, on replay::

    taskScheduled / timerCreated / subOrchestrationInstanceCreated  eventId = action id
    taskCompleted / taskFailed / sub-orchestration completed|failed  taskScheduledId = action id
    timerFired                                                       timerId = action id
    every other event                                                eventId = -1

So the mapping is: **action id = task_id - task_base**, where ``task_base`` is the
run's ``WorkflowStarted.first_task_id`` (0 unless the instance continued as new).
The sidecar passes the same ``task_base`` both ways. Positions do not travel: going
out, non-scheduling events carry ``eventId = -1``; coming in, ``events_from_proto``
numbers the events it keeps from ``first_event_id`` (the count of events already
known, e.g. a stateful-history ``CachedHistory.eventCount``).

Events
------
==========================  ===========================================================
durable                     Durable Task (MS name | Dapr name where they differ)
==========================  ===========================================================
WorkflowStarted             executionStarted {name, version, input, instance{id, seed},
                            parentInstance{taskScheduledId = parent task id (absolute),
                            instance{id, run_id}}}; the executionId is the run's seed
                            (its run id, or for a rerun the run whose history it keeps),
                            so a remote worker replays the values the run drew
TurnStarted                 orchestratorStarted | workflowStarted
ActivityScheduled           taskScheduled {name, input}, eventId = action id
ActivityCompleted/Errored   taskCompleted {result} / taskFailed {failureDetails}
TimerCreated                timerCreated {fireAt} (Dapr: origin from ``purpose``)
TimerFired                  timerFired {fireAt, timerId}
ChildWorkflowScheduled      subOrchestrationInstanceCreated | childWorkflowInstanceCreated
ChildWorkflowCompleted/...  subOrchestrationInstanceCompleted/Failed | childWorkflow...
EventRaised                 eventRaised {name, input}
EventSent                   eventSent {instanceId, name, input}, eventId = action id
WorkflowSuspended/Resumed   executionSuspended/Resumed {input = reason text}
WorkflowTerminated          executionTerminated {input = output}
WorkflowCompleted/Errored   executionCompleted {COMPLETED, result} / {FAILED, failure}
ContinuedAsNew              continueAsNew {input}
PatchApplied                Dapr: in its turn's workflowStarted {version {patches}}; MS: none
==========================  ===========================================================

Coming in, orchestratorCompleted/workflowCompleted, entity, rewind, stalled
and other events durable has no counterpart for are skipped (``None``).

Patches (Dapr only). A Dapr worker learns the patches a run took from the
``workflowStarted.version.patches`` of the history, as it replays: a patch must sit on
the workflowStarted of the turn that took it, before the code of that turn runs again.
durable records PatchApplied at the end of that turn, so :func:`events_to_dapr` moves
each one into its turn's workflowStarted (the Dapr sidecar does the same), and
:func:`events_from_proto` moves them back to the end of the turn. The Dapr list is then
shorter than durable's: stateful-history counts (``CachedHistory.eventCount``) count
Dapr messages. RecordPatch is no action on the wire: a worker lists its patches in
``WorkflowResponse.version``, read by :func:`patches_from_proto`.

What does not survive a round trip (no field for it on the wire): an activity's
``attempt`` and ``step`` (they come back as ``1`` and ``task_id``: a Durable Task
retry is a new task); a timer's ``purpose`` in the MS dialect (comes back "sleep");
Dapr keeps "sleep", "retry" and "event_timeout" in the timer's ``origin``;
``first_task_id`` (comes back as ``task_base``); ``WorkflowTerminated.reason``;
``ChildWorkflowCompleted/Errored.instance_id``; ``ContinuedAsNew.carryover`` (the
next run's history carries those events); ``FailureDetails.bases``; event positions
of carried-over events.

Payloads are opaque text both sides: ``msgspec.Raw`` ↔ ``google.protobuf.StringValue``,
with ``null`` ↔ absent (what the SDKs send for ``None``); text that is not one JSON
value is stored as data (see :mod:`durable.grpc._payload`). Time is UTC to the
microsecond, except that Dapr's "never" sentinel ``9999-12-31T23:59:59.999999999Z``
(timers of indefinite waits, compared to the nanosecond) maps to ``datetime.max`` and
back exactly.

Modules
-------
This module is the one import path; the work is in :mod:`._dialect` (the table of
the two dialects), :mod:`._convert_values` (times, statuses, failure details, trace
contexts, timer origins),
:mod:`._convert_events` (history events), :mod:`._convert_actions` (a turn's actions
and patches) and :mod:`._convert_activities` (activity work items and their results).
"""

from __future__ import annotations

from durable.grpc._convert_actions import (
    action_from_proto,
    action_to_dapr,
    action_to_ms,
    action_to_proto,
    patches_from_proto,
)
from durable.grpc._convert_activities import (
    STEP_TAG,
    activity_request_to_dapr,
    activity_request_to_ms,
    activity_request_to_proto,
    activity_result_from_proto,
    step_of_activity_request,
)
from durable.grpc._convert_events import (
    event_from_proto,
    event_to_dapr,
    event_to_ms,
    event_to_proto,
    events_from_proto,
    events_to_dapr,
    events_to_ms,
    events_to_proto,
)
from durable.grpc._convert_values import (
    NEVER,
    failure_from_proto,
    failure_to_dapr,
    failure_to_ms,
    failure_to_proto,
    payload_in,
    payload_out,
    status_from_proto,
    status_to_dapr,
    status_to_ms,
    text,
    time_from_proto,
    time_to_proto,
    trace_context_from_proto,
    trace_context_to_dapr,
    trace_context_to_ms,
)
from durable.grpc._dialect import DAPR, MS, Dialect
from durable.grpc._framing import (
    FIXED32,
    FIXED64,
    LENGTH_DELIMITED,
    VARINT,
    ProtocolError,
    wire_fields,
)
from durable.grpc._payload import payload_from_proto, payload_to_proto

__all__ = [
    "DAPR",
    "FIXED32",
    "FIXED64",
    "LENGTH_DELIMITED",
    "MS",
    "NEVER",
    "STEP_TAG",
    "VARINT",
    "Dialect",
    "ProtocolError",
    "action_from_proto",
    "action_to_dapr",
    "action_to_ms",
    "action_to_proto",
    "activity_request_to_dapr",
    "activity_request_to_ms",
    "activity_request_to_proto",
    "activity_result_from_proto",
    "event_from_proto",
    "event_to_dapr",
    "event_to_ms",
    "event_to_proto",
    "events_from_proto",
    "events_to_dapr",
    "events_to_ms",
    "events_to_proto",
    "failure_from_proto",
    "failure_to_dapr",
    "failure_to_ms",
    "failure_to_proto",
    "patches_from_proto",
    "payload_from_proto",
    "payload_in",
    "payload_out",
    "payload_to_proto",
    "status_from_proto",
    "status_to_dapr",
    "status_to_ms",
    "step_of_activity_request",
    "text",
    "time_from_proto",
    "time_to_proto",
    "trace_context_from_proto",
    "trace_context_to_dapr",
    "trace_context_to_ms",
    "wire_fields",
]
