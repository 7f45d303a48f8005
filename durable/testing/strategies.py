"""Hypothesis strategies for property tests of workflows (needs ``hypothesis``).

``fault_schedules()`` draws the faults :func:`durable.testing.simulate` injects;
``workflow_programs()`` draws small random programs that :data:`program_registry`
runs as a workflow and :func:`expected_result` interprets in plain Python::

    @given(program=workflow_programs(), faults=fault_schedules(), seed=seeds())
    async def test_programs_survive_faults(program, faults, seed):
        run = await simulate(program_registry, "run_program", program, seed=seed, faults=faults)
        assert run.result == expected_result(program)
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from durable._core._retry import RetryPolicy
from durable._registry import Registry
from durable.testing._simulate import Faults

if TYPE_CHECKING:
    from durable._activity import ActivityContext
    from durable._core._context import WorkflowContext

__all__ = [
    "expected_result",
    "fault_schedules",
    "program_registry",
    "seeds",
    "workflow_programs",
]

Program = list[list[Any]]


def seeds() -> st.SearchStrategy[int]:
    """Simulation seeds."""
    return st.integers(min_value=0, max_value=2**32 - 1)


def fault_schedules(
    *,
    max_crashes: int = 3,
    crashes: bool = True,
    duplicates: bool = True,
    activity_errors: bool = True,
    store_errors: bool = True,
) -> st.SearchStrategy[Faults]:
    """Fault mixes for ``simulate``: each kind on or off, at a drawn rate."""

    def rate(enabled: bool, top: float) -> st.SearchStrategy[float]:
        return st.floats(0.0, top) if enabled else st.just(0.0)

    return st.builds(
        Faults,
        crash_rate=rate(crashes, 0.3),
        max_crashes=st.integers(0, max_crashes),
        duplicate_rate=rate(duplicates, 0.3),
        reorder=st.booleans(),
        activity_error_rate=rate(activity_errors, 0.3),
        store_error_rate=rate(store_errors, 0.05),
    )


def workflow_programs(*, max_steps: int = 6, max_depth: int = 1) -> st.SearchStrategy[Program]:
    """Programs of sequential steps, fan-outs, timers and sub-workflows."""
    value = st.integers(-1000, 1000)
    leaf = st.one_of(
        st.tuples(st.just("act"), value).map(list),
        st.tuples(st.just("fanout"), st.lists(value, min_size=1, max_size=5)).map(list),
        st.tuples(st.just("sleep"), st.integers(1, 30 * 24 * 3600)).map(list),
    )
    if max_depth <= 0:
        return st.lists(leaf, min_size=1, max_size=max_steps)
    child = workflow_programs(max_steps=3, max_depth=max_depth - 1)
    step = st.one_of(leaf, st.tuples(st.just("child"), child).map(list))
    return st.lists(step, min_size=1, max_size=max_steps)


def _step_value(value: int) -> int:
    return value * 3 + 1


def expected_result(program: Program) -> list[Any]:
    """What running ``program`` must return, computed without durable."""
    out: list[Any] = []
    for kind, arg in program:
        if kind == "act":
            out.append(_step_value(arg))
        elif kind == "fanout":
            out.append([_step_value(v) for v in arg])
        elif kind == "sleep":
            out.append(arg)
        elif kind == "child":
            out.append(expected_result(arg))
    return out


_RETRY = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=1))

program_registry = Registry()
"""A registry with the ``run_program`` workflow that runs any drawn program."""


@program_registry.activity
async def program_step(ctx: ActivityContext, value: int) -> int:
    return _step_value(value)


@program_registry.workflow
async def run_program(ctx: WorkflowContext, program: Program) -> list[Any]:
    out: list[Any] = []
    for kind, arg in program:
        if kind == "act":
            out.append(await ctx.call_activity(program_step, arg, retry=_RETRY))
        elif kind == "fanout":
            calls = [ctx.call_activity(program_step, v, retry=_RETRY) for v in arg]
            out.append(await ctx.all(calls))
        elif kind == "sleep":
            before = ctx.now()
            await ctx.sleep(timedelta(seconds=arg))
            elapsed = round((ctx.now() - before).total_seconds())
            # a timer never fires early; under store faults its turn may come late
            out.append(arg if elapsed >= arg else elapsed)
        elif kind == "child":
            out.append(await ctx.call_workflow(run_program, arg))
    return out
