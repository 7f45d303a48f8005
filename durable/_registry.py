"""``Registry``: the workflows and activities a runtime can run, by name."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from ._core._codec import hints_of
from ._engine._eviction import EvictionPolicy
from ._errors import UnknownWorkflowError

__all__ = ["ActivityDefinition", "Registry", "WorkflowDefinition"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    """A registered workflow: its name, version, function and payload types."""

    name: str
    fn: Callable[..., Any]
    input_type: Any
    output_type: Any
    takes_input: bool
    version: str = ""
    eviction: EvictionPolicy | None = None


@dataclass(frozen=True, slots=True)
class ActivityDefinition:
    """A registered activity; ``is_async`` is false for plain ``def`` (run in a thread)."""

    name: str
    fn: Callable[..., Any]
    input_type: Any
    output_type: Any
    takes_input: bool
    is_async: bool


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions naturally: "2" < "10", "1.9" < "1.10"; "" (unversioned) first."""
    parts = re.findall(r"\d+|\D+", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def _check_signature(fn: Callable[..., Any], kind: str) -> bool:
    """Check ``(ctx)`` or ``(ctx, input)``; return whether it takes the input."""
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not 1 <= len(positional) <= 2 or len(positional) != len(params):
        raise TypeError(
            f"{kind} {fn.__qualname__} must take (ctx) or (ctx, input): "
            f"got {len(params)} parameter(s)"
        )
    return len(positional) == 2


class Registry:
    """Holds workflows and activities by name; decorate functions to add them.

    The decorators return the function unchanged, so one function may be registered
    in several registries.
    """

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowDefinition] = {}
        """The newest version of each workflow, by name."""
        self.activities: dict[str, ActivityDefinition] = {}
        self._versions: dict[str, dict[str, WorkflowDefinition]] = {}
        self._names: dict[Callable[..., Any], str] = {}

    @overload
    def workflow(self, fn: F, /) -> F: ...
    @overload
    def workflow(
        self,
        *,
        name: str | None = None,
        version: str = "",
        eviction: EvictionPolicy | None = None,
    ) -> Callable[[F], F]: ...
    def workflow(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        version: str = "",
        eviction: EvictionPolicy | None = None,
    ) -> Any:
        """Register ``async def wf(ctx: WorkflowContext, input) -> output``.

        Several ``version``s may share one name: new instances start on the newest, and a
        running instance keeps the version it started on.
        """

        def register(fn: F) -> F:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"workflow {fn.__qualname__} must be an async def function")
            takes_input = _check_signature(fn, "workflow")
            wf_name = name or fn.__name__
            self._claim(wf_name, "workflow", {})
            versions = self._versions.setdefault(wf_name, {})
            if version in versions:
                raise ValueError(f"workflow {wf_name!r} version {version!r} is already registered")
            input_type, output_type = hints_of(fn)
            versions[version] = WorkflowDefinition(
                wf_name, fn, input_type, output_type, takes_input, version, eviction
            )
            self.workflows[wf_name] = versions[max(versions, key=_version_key)]
            self._names[fn] = wf_name
            return fn

        return register(fn) if fn is not None else register

    @overload
    def activity(self, fn: F, /) -> F: ...
    @overload
    def activity(self, *, name: str | None = None) -> Callable[[F], F]: ...
    def activity(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register ``async def act(ctx: ActivityContext, input) -> output`` (or a plain def)."""

        def register(fn: F) -> F:
            takes_input = _check_signature(fn, "activity")
            act_name = name or fn.__name__
            self._claim(act_name, "activity", self.activities)
            input_type, output_type = hints_of(fn)
            is_async = inspect.iscoroutinefunction(fn)
            self.activities[act_name] = ActivityDefinition(
                act_name, fn, input_type, output_type, takes_input, is_async
            )
            self._names[fn] = act_name
            return fn

        return register(fn) if fn is not None else register

    def _claim(self, name: str, kind: str, table: dict[str, Any]) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"{kind} name must be a non-empty string")
        if name in table:
            raise ValueError(f"a {kind} named {name!r} is already registered")

    def name_of(
        self, fn_or_name: Callable[..., Any] | str, kind: Literal["workflow", "activity"]
    ) -> str:
        """The registered name of a function, or the name itself."""
        if isinstance(fn_or_name, str):
            return fn_or_name
        try:
            return self._names[fn_or_name]
        except (KeyError, TypeError):
            qualname = getattr(fn_or_name, "__qualname__", repr(fn_or_name))
            raise UnknownWorkflowError(
                f"{qualname} is not registered as a {kind}: decorate it with @registry.{kind}"
            ) from None

    def get_workflow(self, name: str, version: str | None = None) -> WorkflowDefinition:
        """The workflow registered as ``name`` (its newest version unless ``version``
        names one); ``UnknownWorkflowError`` if none."""
        versions = self._versions.get(name)
        if versions is None:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise UnknownWorkflowError(f"no workflow named {name!r} is registered (known: {known})")
        if version is None:
            return self.workflows[name]
        try:
            return versions[version]
        except KeyError:
            have = ", ".join(repr(v) for v in sorted(versions, key=_version_key))
            raise UnknownWorkflowError(
                f"workflow {name!r} version {version!r} is not registered here (have: {have})"
            ) from None

    def versions(self, name: str) -> list[str]:
        """The registered versions of ``name``, oldest first."""
        return sorted(self._versions.get(name, {}), key=_version_key)

    def get_activity(self, name: str) -> ActivityDefinition:
        """The activity registered as ``name``; ``UnknownWorkflowError`` if none."""
        try:
            return self.activities[name]
        except KeyError:
            known = ", ".join(sorted(self.activities)) or "none"
            raise UnknownWorkflowError(
                f"no activity named {name!r} is registered (known: {known})"
            ) from None


def workflow_name(registry: Registry | None, workflow: Callable[..., Any] | str) -> str:
    """The name a client starts ``workflow`` by: checked against ``registry`` when it has
    one; without one, only a name will do."""
    if registry is None:
        if not isinstance(workflow, str):
            qualname = getattr(workflow, "__qualname__", repr(workflow))
            raise TypeError(f"this client has no registry: start {qualname} by its name")
        return workflow
    name = registry.name_of(workflow, "workflow")
    registry.get_workflow(name)
    return name
