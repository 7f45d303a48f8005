"""durable is asyncio-native: run the examples' async tests on asyncio."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
