"""Helpers for the SDK scripts (each runs in a process of its own, with one SDK): no
SDK is imported here."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any


def until(check: Callable[[], bool]) -> bool:
    """Poll ``check`` until true, for at most 20 s (a bounded wait on an Event)."""
    tick = threading.Event()
    for _ in range(400):
        if check():
            return True
        tick.wait(0.05)
    return False


class Loud(dict):  # type: ignore[type-arg]
    """The results, each also printed to stderr as it comes (to see where a run stops)."""

    def __setitem__(self, key: str, value: Any) -> None:
        print(f"{key}: {value}", file=sys.stderr, flush=True)
        super().__setitem__(key, value)
