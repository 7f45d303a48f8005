"""A registry for the CLI tests of queries and updates (test_messages_cli.py)."""

from __future__ import annotations

import durable
from durable import WorkflowContext

registry = durable.Registry()


@registry.workflow
async def cart(ctx: WorkflowContext) -> list[str]:
    """Collects "add" events (and "add" updates) until "checkout"; "items" reads them."""
    items: list[str] = []
    ctx.set_query_handler("items", lambda: list(items))
    ctx.set_query_handler("has", lambda item: item in items)

    async def add(item: str) -> int:
        items.append(item)
        return len(items)

    def named(item: object) -> None:
        if not isinstance(item, str):
            raise TypeError(f"an item is a name, not {item!r}")

    ctx.set_update_handler("add", add, validator=named)
    while (item := await ctx.wait_for_event("add")) != "checkout":
        items.append(item)
    return items
