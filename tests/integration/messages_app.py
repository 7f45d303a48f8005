"""A registry for the CLI tests of queries and updates (test_messages_cli.py)."""

from __future__ import annotations

import durable
from durable import WorkflowContext

registry = durable.Registry()


@registry.workflow
async def cart(ctx: WorkflowContext) -> list[str]:
    """Collects "add" events until "checkout"; the "items" query reads them."""
    items: list[str] = []
    ctx.set_query_handler("items", lambda: list(items))
    ctx.set_query_handler("has", lambda item: item in items)
    while (item := await ctx.wait_for_event("add")) != "checkout":
        items.append(item)
    return items
