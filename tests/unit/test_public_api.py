"""The public surface is part of the product: pin it."""

from __future__ import annotations

import durable
import durable.store

EXPECTED = {
    "ActivityContext", "ActivityFailed", "ActivityTimeoutError", "CancelledError", "Client",
    "Clock",
    "DurableError", "DurableFuture",
    "EngineFailedError", "EvictionPolicy", "FailureDetails", "Fleet", "InstanceExistsError",
    "InstanceNotFoundError", "InstancePurgingError",
    "InstancePage",
    "InstanceRunningError", "InstanceStatusError", "InvalidArgumentError",
    "InvalidInstanceIdError", "JsonCodec", "Memo", "MemoStore", "MockClock",
    "NonDeterminismError", "PayloadCodec", "QueryFailedError",
    "Registry", "RetryPolicy", "Runtime", "SearchAttributeError", "SerializationError",
    "StoreConfigError", "StoreError",
    "SystemClock",
    "TimeoutError", "UnknownQueryError", "UnknownUpdateError", "UnknownWorkflowError",
    "UpdateFailedError", "UpdateRejectedError", "WorkflowContext",
    "WorkflowFailed",
    "WorkflowHandle", "WorkflowState", "WorkflowStatus",
}  # fmt: skip


def test_exports_are_exactly_the_public_api() -> None:
    assert set(durable.__all__) == EXPECTED
    assert durable.__all__ == sorted(durable.__all__)
    for name in durable.__all__:
        assert getattr(durable, name).__module__ == "durable" or name in {"Clock", "PayloadCodec"}


def test_store_exports() -> None:
    assert durable.store.__all__ == sorted(durable.store.__all__)
    assert {"ObjectStore", "MemoryStore", "LocalStore", "open_store"} <= set(durable.store.__all__)


def test_every_error_is_a_durable_error() -> None:
    errors = [
        durable.WorkflowFailed, durable.ActivityFailed, durable.NonDeterminismError,
        durable.TimeoutError, durable.InstanceExistsError, durable.InstanceNotFoundError,
        durable.InvalidInstanceIdError, durable.StoreError, durable.SerializationError,
        durable.UnknownWorkflowError, durable.InstanceRunningError, durable.InstanceStatusError,
        durable.EngineFailedError,
    ]  # fmt: skip
    for error in errors:
        assert issubclass(error, durable.DurableError), error
    assert issubclass(durable.TimeoutError, TimeoutError)
    assert issubclass(durable.InstanceNotFoundError, LookupError)
    assert issubclass(durable.InvalidInstanceIdError, ValueError)


def test_statuses() -> None:
    assert [s.value for s in durable.WorkflowStatus] == [
        "PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "FAILED", "TERMINATED", "CANCELED",
        "CONTINUED_AS_NEW",
    ]  # fmt: skip
    assert {s for s in durable.WorkflowStatus if s.is_terminal} == {
        durable.WorkflowStatus.COMPLETED,
        durable.WorkflowStatus.FAILED,
        durable.WorkflowStatus.TERMINATED,
        durable.WorkflowStatus.CANCELED,
    }


def test_grpc_exports() -> None:
    import durable.grpc

    assert durable.grpc.__all__ == [
        "RemoteClient",
        "RemoteWorker",
        "RemoteWorkflowHandle",
        "Sidecar",
    ]
    for name in durable.grpc.__all__:
        assert getattr(durable.grpc, name).__module__ == "durable.grpc"


def test_testing_exports() -> None:
    import durable.testing

    assert durable.testing.__all__ == sorted(durable.testing.__all__)
    assert set(durable.testing.__all__) == {
        "Faults", "MockClock", "Replayer", "SimulatedActivityError", "SimulationResult",
        "SystemConfig", "SystemResult", "WorkflowEnvironment", "simulate", "simulate_system",
    }  # fmt: skip
