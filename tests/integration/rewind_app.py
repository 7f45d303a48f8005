"""The registry that ``durable worker rewind_app:registry`` runs for the rewind CLI
test: a workflow whose second step fails until a file exists (sync activities: they
touch files)."""

from __future__ import annotations

from pathlib import Path

from durable import ActivityContext, Registry, WorkflowContext

registry = Registry()


@registry.activity
def note(ctx: ActivityContext, path: str) -> str:
    """Count its runs in the file ``path`` (one line each); its result is the count."""
    with Path(path).open("a") as out:
        out.write("ran\n")
    return f"noted {len(Path(path).read_text().splitlines())}"


@registry.activity
def needs(ctx: ActivityContext, path: str) -> str:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is not there yet")
    return "found"


@registry.workflow
async def mend(ctx: WorkflowContext, paths: list[str]) -> list[str]:
    return [await ctx.call_activity(note, paths[0]), await ctx.call_activity(needs, paths[1])]
