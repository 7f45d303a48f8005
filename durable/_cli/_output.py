"""How the command prints: tables for people, JSON for programs, progress for long work.

Tables are plain aligned text (nothing to install). A progress bar uses ``rich`` when it
is installed (the ``durable[cli]`` extra) and stdout is a terminal; otherwise one line
at the end says what was done.
"""

from __future__ import annotations

import contextlib
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = ["cell", "print_json", "print_pairs", "print_table", "progress"]

_WIDEST = 60  # a cell wider than this is cut (full values are in --json)


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout."""
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(value)) + b"\n")
    sys.stdout.flush()


def cell(value: Any) -> str:
    """One value as table text: timestamps to the second, payloads as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    text = text.replace("\n", " ")
    return text if len(text) <= _WIDEST else text[: _WIDEST - 1] + "…"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows under upper-case headers, columns aligned; ``(none)`` for no rows."""
    if not rows:
        print("(none)")
        return
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in texts)) for i, h in enumerate(headers)]
    for row in [[h.upper() for h in headers], *texts]:
        print("  ".join(t.ljust(w) for t, w in zip(row, widths, strict=True)).rstrip())


def print_pairs(pairs: Sequence[tuple[str, Any]]) -> None:
    """A two-column table of field and value (one instance, described)."""
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {cell(value) if not isinstance(value, str) else value}")


@contextlib.contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A bar for ``total`` items (None: unknown); yields ``advance(n)``."""
    bar: Any = None
    if sys.stdout.isatty():
        try:
            from rich.progress import Progress
        except ImportError:
            pass
        else:
            bar = Progress(transient=True)
    if bar is None:
        yield lambda n: None
        return
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
