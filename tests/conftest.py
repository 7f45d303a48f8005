"""Fixtures shared by every test."""

from __future__ import annotations

import hypothesis  # noqa: F401  (imported early: a lazy import while pytest reports a
import pytest  # failure has crashed the session summary on Python 3.11)


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only: durable is asyncio-native."""
    return "asyncio"
