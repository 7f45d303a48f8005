"""Fixtures the ``test_semantics_*`` files share (import ``store_fixture`` and
``runtime_fixture``; tests ask for ``store`` and ``runtime``): a store on memory:// and
file://, and runtimes over it on a MockClock that skips time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import durable
from durable import MockClock, Registry
from durable.store import LocalStore, MemoryStore, ObjectStore

SECOND = durable.RetryPolicy().initial_interval  # one second


@pytest.fixture(name="store", params=["memory", "file"])
def store_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """A fresh store on memory:// and file://."""
    if request.param == "memory":
        return MemoryStore()
    return LocalStore(tmp_path / "store", url=f"file://{tmp_path / 'store'}")


@pytest.fixture(name="runtime")
def runtime_fixture(store: ObjectStore) -> Callable[..., Any]:
    """``async with runtime(registry[, clock]) as rt`` on the store, on a MockClock."""

    @asynccontextmanager
    async def make(
        registry: Registry, clock: MockClock | None = None
    ) -> AsyncIterator[durable.Runtime]:
        clock = clock or MockClock(auto_advance=True)
        async with durable.Runtime(registry, store=store, clock=clock) as rt:
            yield rt

    return make
