"""durable: asyncio-native durable execution.

Write workflows as ``async def`` coroutines; ``durable`` records every decision in
an event history in object storage and replays the coroutine from it after a crash.
"""

from ._activity import ActivityContext
from ._client import Client, WorkflowHandle
from ._clock import Clock, MockClock, SystemClock
from ._core._codec import JsonCodec, PayloadCodec
from ._core._context import WorkflowContext
from ._core._failure import FailureDetails
from ._core._futures import DurableFuture
from ._core._retry import RetryPolicy
from ._core._state import WorkflowState, WorkflowStatus
from ._engine._eviction import EvictionPolicy
from ._errors import (
    ActivityFailed,
    ActivityTimeoutError,
    CancelledError,
    DurableError,
    EngineFailedError,
    InstanceExistsError,
    InstanceNotFoundError,
    InstancePurgingError,
    InstanceRunningError,
    InstanceStatusError,
    InvalidArgumentError,
    InvalidInstanceIdError,
    NonDeterminismError,
    QueryFailedError,
    SearchAttributeError,
    SerializationError,
    StoreError,
    TimeoutError,
    UnknownQueryError,
    UnknownUpdateError,
    UnknownWorkflowError,
    UpdateFailedError,
    UpdateRejectedError,
    WorkflowFailed,
)
from ._fleet._leases import Fleet
from ._fleet._partitions import StoreConfigError
from ._listing import InstancePage
from ._log._memo import Memo, MemoStore
from ._registry import Registry
from ._runtime import Runtime

__all__ = [
    "ActivityContext",
    "ActivityFailed",
    "ActivityTimeoutError",
    "CancelledError",
    "Client",
    "Clock",
    "DurableError",
    "DurableFuture",
    "EngineFailedError",
    "EvictionPolicy",
    "FailureDetails",
    "Fleet",
    "InstanceExistsError",
    "InstanceNotFoundError",
    "InstancePage",
    "InstancePurgingError",
    "InstanceRunningError",
    "InstanceStatusError",
    "InvalidArgumentError",
    "InvalidInstanceIdError",
    "JsonCodec",
    "Memo",
    "MemoStore",
    "MockClock",
    "NonDeterminismError",
    "PayloadCodec",
    "QueryFailedError",
    "Registry",
    "RetryPolicy",
    "Runtime",
    "SearchAttributeError",
    "SerializationError",
    "StoreConfigError",
    "StoreError",
    "SystemClock",
    "TimeoutError",
    "UnknownQueryError",
    "UnknownUpdateError",
    "UnknownWorkflowError",
    "UpdateFailedError",
    "UpdateRejectedError",
    "WorkflowContext",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowState",
    "WorkflowStatus",
]

__version__ = "0.1.0"

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("durable._"):
        _obj.__module__ = "durable"
del _name, _obj
