"""Queries: a handler the workflow set, called on a run's state, changing nothing.

Pure: the run, the query and its encoded arguments in, the encoded answer out. While a
handler runs, the run refuses every change (:meth:`WorkflowRun.not_in_query`), so a
handler that tries one fails the query, and the run is as it was.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from msgspec import Raw

from durable._errors import QueryFailedError, SerializationError, UnknownQueryError

if TYPE_CHECKING:
    from ._replay import WorkflowRun

__all__ = ["answer_query"]


def answer_query(run: WorkflowRun, name: str, args: Raw) -> Raw:
    """Call query handler ``name`` with ``args`` (an encoded list); its encoded answer.

    ``UnknownQueryError`` if the run has no such handler; ``QueryFailedError`` if it
    raises, tries to change the run, or answers with what cannot be encoded."""
    handler = run.query_handlers.get(name)
    if handler is None:
        raise UnknownQueryError(run.instance_id, name, list(run.query_handlers))
    try:
        values = run.codec.decode(args, list[Any])
    except SerializationError as err:
        raise QueryFailedError(run.instance_id, name, f"its arguments: {err}") from err
    run.querying = name
    try:
        answer = handler(*values)
    except QueryFailedError:
        raise
    except Exception as err:
        raise QueryFailedError(
            run.instance_id, name, f"its handler raised {type(err).__name__}: {err}"
        ) from err
    finally:
        run.querying = None
    if inspect.isawaitable(answer):
        if inspect.iscoroutine(answer):
            answer.close()
        raise QueryFailedError(run.instance_id, name, "its handler must be a plain function")
    try:
        return Raw(run.codec.encode(answer))
    except SerializationError as err:
        raise QueryFailedError(run.instance_id, name, f"its answer: {err}") from err
