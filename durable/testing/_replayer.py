"""``Replayer``: check that saved histories still replay against the current code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from durable._core._codec import JsonCodec, PayloadCodec
from durable._core._events import HistoryEvent, WorkflowStarted
from durable._core._replay import WorkflowRun
from durable._errors import NonDeterminismError, SerializationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from durable._registry import Registry

__all__ = ["Replayer"]

_history_decoder = msgspec.json.Decoder(list[HistoryEvent])


class Replayer:
    """Replays histories through the registry's workflows, with no store and no clock.

    Run it in CI over histories saved from production (``handle.history()`` or
    ``durable history --json``) before deploying changed workflow code.
    """

    def __init__(self, registry: Registry, *, codec: PayloadCodec | None = None) -> None:
        self.registry = registry
        self.codec: PayloadCodec = codec or JsonCodec()

    def check(self, history: Sequence[HistoryEvent] | str | os.PathLike[str] | bytes) -> None:
        """Raise ``NonDeterminismError`` (naming the event) if the code no longer matches.

        ``history`` is a list of events, the path of a JSON file, or JSON bytes.
        """
        events = self._load(history)
        if not events or not isinstance(events[0], WorkflowStarted):
            raise NonDeterminismError("a history must start with a WorkflowStarted event")
        started = events[0]
        definition = self.registry.get_workflow(started.name, started.version)
        run = WorkflowRun("replay", definition, self.registry, self.codec)
        try:
            run.apply(events, replaying=True)
            run.check_complete()
        finally:
            run.close()

    def _load(
        self, history: Sequence[HistoryEvent] | str | os.PathLike[str] | bytes
    ) -> list[HistoryEvent]:
        if isinstance(history, bytes):
            data = history
        elif isinstance(history, str | os.PathLike):
            data = Path(history).read_bytes()
        else:
            return list(history)
        try:
            return _history_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise SerializationError(f"not a durable history: {err}") from err
