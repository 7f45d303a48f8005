"""Workflows for the console tests: a store with instances in every state, a hostile
one among them, and a registry a ``durable worker`` subprocess serves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import durable
from durable import ActivityContext, RetryPolicy, WorkflowContext

registry = durable.Registry()

# user data that must render as text: markup, a script, an attribute break-out
HOSTILE = (
    '<script id="pwned">document.title="pwned"</script>'
    '<img id="pwned-img" src=x onerror=alert(1)>"\'&'
)
HOSTILE_NAME = '<b id="pwned-name">evil</b>'
APPROVALS = 4  # instances left waiting for an event
HOSTILE_ID = "o'brien&co;(x)=1"  # quotes, ampersand and parentheses are valid in ids


class CardDeclined(Exception):
    """A charge that always fails (its stack shows on the instance page)."""


@registry.activity
async def reserve(ctx: ActivityContext, item: str) -> str:
    await ctx.memo.put("bin", f"bin-{len(item)}")
    return f"reserved {item}"


@registry.activity
async def flaky(ctx: ActivityContext, item: str) -> str:
    if ctx.attempt == 1:
        raise TimeoutError("the gateway did not answer")
    return f"ok {item}"


@registry.activity
async def decline(ctx: ActivityContext, amount: int) -> str:
    raise CardDeclined(f"card declined for {amount}")


@registry.workflow
async def shipping(ctx: WorkflowContext, item: str) -> str:
    await ctx.sleep(timedelta(minutes=5))
    return f"shipped {item}"


@registry.workflow
async def checkout(ctx: WorkflowContext, order: dict[str, Any]) -> dict[str, Any]:
    """Activities in parallel, a retry, a timer, a child: a timeline with every lane."""
    ctx.set_custom_status({"stage": "reserving"})
    items = list(order.get("items", []))
    reserved = await ctx.all([ctx.call_activity(reserve, item) for item in items])
    paid = await ctx.call_activity(flaky, "pay", retry=RetryPolicy(max_attempts=3))
    await ctx.sleep(timedelta(hours=1))
    shipped = await ctx.call_workflow(shipping, items[0] if items else "nothing")
    ctx.set_custom_status({"stage": "done"})
    return {"reserved": reserved, "paid": paid, "shipped": shipped}


@registry.workflow
async def charge_card(ctx: WorkflowContext, amount: int) -> str:
    """Fails: its failure, with a stack, is on the page."""
    result: str = await ctx.call_activity(decline, amount)
    return result


@registry.workflow
async def approval(ctx: WorkflowContext, request: Any) -> Any:
    """Waits for an ``approve`` event, then returns what the event carried."""
    ctx.set_custom_status("waiting for approval")
    decision = await ctx.wait_for_event("approve")
    return {"request": request, "decision": decision}


@registry.workflow(name=HOSTILE_NAME)
async def hostile(ctx: WorkflowContext, payload: Any) -> Any:
    """A workflow whose name, input, custom status and output are markup."""
    ctx.set_custom_status(HOSTILE)
    return {"echo": payload, "html": HOSTILE}


@registry.activity
async def hello(ctx: ActivityContext, who: str) -> str:
    return f"hello {who}"


@registry.workflow
async def greet(ctx: WorkflowContext, who: str) -> str:
    """One quick step: ends anew when rerun from it."""
    result: str = await ctx.call_activity(hello, who)
    return result


@registry.workflow
async def long_history(ctx: WorkflowContext, steps: int) -> int:
    """One activity after another: a long history for the figures."""
    total = 0
    for i in range(steps):
        total += len(await ctx.call_activity(reserve, f"item-{i}"))
    return total


async def populate(store: str, clock: durable.MockClock | None = None) -> None:
    """Put one instance of each kind in ``store`` (ended ones run to their end; the
    ``approval`` ones are left waiting)."""
    clock = clock or durable.MockClock(auto_advance=True)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        done = await rt.start(checkout, {"items": ["lamp", "desk"]}, instance_id="order-1")
        await done
        failed = await rt.start(charge_card, 4200, instance_id="charge-1")
        try:
            await failed
        except durable.WorkflowFailed:
            pass
        hostile_run = await rt.start(hostile, HOSTILE, instance_id=HOSTILE_ID)
        await hostile_run
        for i in range(2):
            await (await rt.start(greet, f"user {i}", instance_id=f"greet-{i}"))
        for i in range(APPROVALS):
            await rt.start(approval, {"n": i}, instance_id=f"approval-{i}")
