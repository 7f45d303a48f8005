"""pytest fixtures for testing workflows (registered through the ``pytest11`` entry point).

They are plain fixtures, so they work under pytest's asyncio plugin and anyio's alike::

    async def test_checkout(durable_env_factory):
        async with durable_env_factory(registry) as env:
            assert await env.run(checkout, order) == receipt
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pytest

from durable._clock import MockClock
from durable.testing._environment import WorkflowEnvironment

if TYPE_CHECKING:
    from durable._registry import Registry

__all__ = ["durable_env_factory", "mock_clock"]


class EnvironmentFactory(Protocol):
    def __call__(self, registry: Registry, **options: Any) -> WorkflowEnvironment: ...


@pytest.fixture
def mock_clock() -> MockClock:
    """A ``MockClock(auto_advance=True)``: time skips ahead whenever nothing is runnable."""
    return MockClock(auto_advance=True)


@pytest.fixture
def durable_env_factory(mock_clock: MockClock) -> EnvironmentFactory:
    """Make ``WorkflowEnvironment``s on the test's ``mock_clock`` (use with ``async with``)."""

    def make(registry: Registry, **options: Any) -> WorkflowEnvironment:
        options.setdefault("clock", mock_clock)
        return WorkflowEnvironment(registry, **options)

    return make
