"""Starting an instance again, the Durable Task way: id-reuse policies on a start,
``RestartInstance``, and the policy's replacing of an instance that still runs.

What a start does with an id that is taken (see the README's sidecar section):

- an MS ``orchestrationIdReusePolicy`` (field 6) replaces an instance whose status it
  lists (an empty list replaces none); a listed status that still runs (PENDING,
  RUNNING, SUSPENDED) is terminated first, then replaced;
- Dapr's ``enforceUniqueInstanceId`` (field 10) refuses any;
- neither: an ended instance is replaced (Dapr's rule and the SDKs' documented
  default), a running one refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from durable._core._state import WorkflowStatus
from durable._errors import InstanceExistsError, InstanceRunningError

from . import _convert as cv
from ._proto import dapr, ms

if TYPE_CHECKING:
    from durable._client import Client, WorkflowHandle

__all__ = ["restart", "reuse_of", "start_replacing"]

_ATTEMPTS = 5  # starts that may each lose the id to another start before giving up

Reuse = bool | frozenset[WorkflowStatus]
"""What a start may replace: any ended instance (True), none, or those statuses."""


def reuse_of(request: ms.CreateInstanceRequest | dapr.CreateInstanceRequest) -> Reuse:
    """What the start ``request`` may replace."""
    if isinstance(request, dapr.CreateInstanceRequest):
        return not request.enforceUniqueInstanceId
    if not request.HasField("orchestrationIdReusePolicy"):
        return True
    policy = request.orchestrationIdReusePolicy
    return frozenset(cv.status_from_proto(s) for s in policy.replaceableStatus)


async def start_replacing(
    client: Client, name: str, input: Any, *, instance_id: str | None, reuse: Reuse,
    **options: Any,
) -> WorkflowHandle[Any]:  # fmt: skip
    """``client.start`` under a reuse policy: an instance in a listed status that has
    not ended is terminated, and replaced once it has (the replace itself is the
    engine's race-safe reuse: it takes the id only from the run it saw end)."""
    for _ in range(_ATTEMPTS):
        try:
            return await client.start(name, input, instance_id=instance_id, reuse=reuse, **options)
        except InstanceExistsError as err:
            status = WorkflowStatus(err.status) if err.status else None
            if (
                instance_id is None
                or isinstance(reuse, bool)
                or status is None
                or status.is_terminal
                or status not in reuse
            ):
                raise
        handle = client.get_handle(instance_id)
        await handle.terminate(f"replaced by a new start (its id-reuse policy lists {status})")
        await _ended(handle)
        reuse = reuse | {WorkflowStatus.TERMINATED}  # the end it was just given
    raise InstanceExistsError(instance_id or "", None)


async def _ended(handle: WorkflowHandle[Any]) -> None:
    try:
        await handle.result()
    except Exception:
        pass  # a failed or terminated end is an end


async def restart(client: Client, instance_id: str, new_id: bool) -> str:
    """RestartInstance: start an ended instance's workflow again, with its current
    run's name, version and input, under its own id (replacing it) or a new one.
    ``InstanceNotFoundError`` if unknown; ``InstanceRunningError`` if it has not ended."""
    state = await client.get_handle(instance_id).describe()
    if not state.status.is_terminal:
        raise InstanceRunningError(instance_id, state.status)
    handle: WorkflowHandle[Any] = await client.start(
        state.name, state.input, instance_id=None if new_id else instance_id,
        reuse=frozenset({state.status}), version=state.version or None,
    )  # fmt: skip
    return handle.instance_id
