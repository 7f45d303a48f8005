"""The console's actions on an instance, each done through the public ``Client``:
raise an event, suspend, resume, terminate, rerun from a step, purge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping

    from durable._client import Client

__all__ = ["ACTIONS", "Action", "ActionInputError", "perform"]


@dataclass(frozen=True, slots=True)
class Action:
    """One action: its URL segment, its button, when it applies, what it reports."""

    name: str
    title: str
    when: str  # "live": the instance has not ended; "ended": it has
    done: str  # the notice shown after it
    danger: bool = False
    explain: str = ""


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("raise-event", "Raise event", "live", "The event was sent.",
               explain="Sends an external event; it waits in the workflow until asked for."),
        Action("suspend", "Suspend", "live", "Suspend was sent.",
               explain="Pauses the workflow: new events queue up until it is resumed."),
        Action("resume", "Resume", "live", "Resume was sent.",
               explain="Lets a suspended workflow go on."),
        Action("terminate", "Terminate", "live", "Terminate was sent.", danger=True,
               explain="Ends the workflow now as TERMINATED; its open steps are abandoned."),
        Action("rerun", "Rerun", "ended", "The rerun started.", danger=True,
               explain="Runs the instance again from the chosen step on: the history before "
                       "it is kept, that step and everything after it run anew."),
        Action("purge", "Purge", "ended", "The instance was purged.", danger=True,
               explain="Deletes the instance, its history, inbox and memo. This cannot be "
                       "undone."),
    )
}  # fmt: skip


class ActionInputError(ValueError):
    """Raised when a form's fields cannot be turned into the action's arguments."""


def _event_data(text: str) -> object:
    if not text.strip():
        return None
    try:
        return msgspec.json.decode(text.encode())
    except msgspec.DecodeError as err:
        raise ActionInputError(f"the event data is not JSON: {err}") from None


async def perform(client: Client, instance_id: str, name: str, form: Mapping[str, str]) -> None:
    """Do action ``name`` on the instance with the form's fields. Errors from the client
    (``DurableError``, ``ValueError``) pass through for the page to show."""
    handle = client.get_handle(instance_id)
    reason = form.get("reason", "").strip() or "from the web console"
    if name == "raise-event":
        event = form.get("event_name", "").strip()
        if not event:
            raise ActionInputError("an event needs a name")
        await handle.raise_event(event, _event_data(form.get("data", "")))
    elif name == "suspend":
        await handle.suspend(reason)
    elif name == "resume":
        await handle.resume(reason)
    elif name == "terminate":
        await handle.terminate(reason)
    elif name == "rerun":
        try:
            from_event = int(form.get("from_event", ""))
        except ValueError:
            raise ActionInputError("pick the event to rerun from") from None
        await client.rerun(instance_id, from_event)
    elif name == "purge":
        await client.purge(instance_id)
    else:
        raise ActionInputError(f"no action {name!r}")
