"""The registry that ``durable worker cli_app:registry`` runs for the CLI and metrics
tests: a greeting, a workflow that waits for an event, and one that fails."""

from __future__ import annotations

from typing import Any

from durable import ActivityContext, Registry, WorkflowContext

registry = Registry()


@registry.activity
async def greet(ctx: ActivityContext, name: str) -> str:
    return f"hello {name}"


@registry.workflow
async def hello(ctx: WorkflowContext, name: str) -> str:
    first = await ctx.call_activity(greet, name)
    return await ctx.call_activity(greet, first)


@registry.workflow
async def waits(ctx: WorkflowContext, _: Any) -> Any:
    return {"got": await ctx.wait_for_event("go")}


@registry.workflow
async def fails(ctx: WorkflowContext, _: Any) -> None:
    raise ValueError("this workflow always fails")
