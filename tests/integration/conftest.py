"""Fixtures for integration tests: a store per backend, and runtimes on a mock clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.store import LocalStore, MemoryStore, ObjectStore


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """A fresh empty store of each backend; runtimes given this object share it."""
    if request.param == "memory":
        return MemoryStore()
    return LocalStore(tmp_path / "store", url=f"file://{tmp_path / 'store'}")


@pytest.fixture
def runtime_factory(
    store: ObjectStore,
) -> Callable[..., Any]:
    """``async with runtime_factory(registry) as rt`` on the shared store and a MockClock."""

    @asynccontextmanager
    async def make(
        registry: durable.Registry, clock: durable.MockClock | None = None, **options: Any
    ) -> AsyncIterator[durable.Runtime]:
        clock = clock or durable.MockClock(auto_advance=True)
        async with durable.Runtime(registry, store=store, clock=clock, **options) as rt:
            yield rt

    return make
