"""Fixtures shared by every test."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only: durable is asyncio-native."""
    return "asyncio"
