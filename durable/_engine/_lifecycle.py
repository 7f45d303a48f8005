"""An instance's life in the engine's memory: one state, changed only through one table.

Everything that affects the machine lives here: the states, the events, the table of
allowed transitions, and the joint conditions the engine asks ("can it be queued?",
"can it be evicted?"). An event the table does not allow raises
:class:`~durable._errors.LifecycleError` naming the instance, its state and the event:
a bug in the engine, which the whole-system simulation reports with its seed.

Not in memory, so not states here: *absent* (never loaded, or ended and let go) and
*evicted* (a waiting instance dropped to save memory; its timers and the log bring it
back). A copy the engine let go of (evicted, forgotten, its partition lost) is DROPPED:
a task that still holds it (a turn unwinding) finds nothing left to do with it.

A turn owns the instance while it runs: a reload it starts, a store error it meets,
the workflow code it finds missing, each is a state of its own (TURN_RELOADING,
TURN_FAILED, TURN_PARKED) that the turn's end resolves. An activity outcome that
arrives while the instance is not IDLE waits in ``pending`` for the next turn. An ended
run's copy stays in memory as ENDED only while messages that reached it are discarded.

Transitions (generated from the table by :func:`diagram`)::

    LOADING        --LOADED--> IDLE
    LOADING        --FORGET--> DROPPED
    IDLE           --QUEUE--> QUEUED
    IDLE           --START_TURN--> RUNNING
    IDLE           --END--> ENDED
    IDLE           --EVICT--> DROPPED
    IDLE           --FORGET--> DROPPED
    QUEUED         --START_TURN--> RUNNING
    QUEUED         --FORGET--> DROPPED
    RUNNING        --END_TURN--> IDLE
    RUNNING        --RELOAD--> TURN_RELOADING
    RUNNING        --STORE_FAILED--> TURN_FAILED
    RUNNING        --PARK--> TURN_PARKED
    RUNNING        --END--> ENDED
    RUNNING        --FORGET--> DROPPED
    TURN_RELOADING --LOADED--> RUNNING
    TURN_RELOADING --STORE_FAILED--> TURN_FAILED
    TURN_RELOADING --FORGET--> DROPPED
    TURN_FAILED    --END_TURN--> BACKING_OFF
    TURN_FAILED    --STORE_FAILED--> TURN_FAILED
    TURN_FAILED    --RELOAD--> TURN_RELOADING
    TURN_FAILED    --END--> ENDED
    TURN_FAILED    --FORGET--> DROPPED
    TURN_PARKED    --END_TURN--> PARKED
    TURN_PARKED    --RELOAD--> TURN_RELOADING
    TURN_PARKED    --STORE_FAILED--> TURN_FAILED
    TURN_PARKED    --END--> ENDED
    TURN_PARKED    --FORGET--> DROPPED
    RELOADING      --LOADED--> IDLE
    RELOADING      --STORE_FAILED--> BACKING_OFF
    RELOADING      --FORGET--> DROPPED
    BACKING_OFF    --RELOAD--> RELOADING
    BACKING_OFF    --STORE_FAILED--> BACKING_OFF
    BACKING_OFF    --EVICT--> DROPPED
    BACKING_OFF    --FORGET--> DROPPED
    PARKED         --QUEUE--> QUEUED
    PARKED         --EVICT--> DROPPED
    PARKED         --FORGET--> DROPPED
    ENDED          --QUEUE--> QUEUED
    ENDED          --END--> ENDED
    ENDED          --FORGET--> DROPPED
    DROPPED        --LOADED--> DROPPED
    DROPPED        --END_TURN--> DROPPED
    DROPPED        --END--> DROPPED
    DROPPED        --STORE_FAILED--> DROPPED
    DROPPED        --FORGET--> DROPPED
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from durable._core._events import CONTROL, ExecutionTimedOut
from durable._core._state import WorkflowStatus
from durable._errors import LifecycleError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from durable._core._events import Event

    from ._instance import _Instance

__all__ = [
    "PARKED_APPLIES",
    "TRANSITIONS",
    "InstanceState",
    "LifecycleEvent",
    "can_enqueue",
    "can_reload",
    "can_evict",
    "can_take_inline_turn",
    "diagram",
    "end_of_turn",
    "fire",
    "is_backing_off",
    "is_reloading",
    "next_state",
]


class InstanceState(enum.StrEnum):
    """Where an instance in memory is in its life. (A ``StrEnum``: the table's lookups
    hash it in C, on every turn.)"""

    LOADING = "LOADING"  # just made; its state from the log is being set
    IDLE = "IDLE"  # waits for events; nothing under way
    QUEUED = "QUEUED"  # waits in the turn queue
    RUNNING = "RUNNING"  # a turn is under way
    TURN_RELOADING = "TURN_RELOADING"  # a turn reads the log again (its commit lost)
    TURN_FAILED = "TURN_FAILED"  # a turn met a store error: it backs off once it ends
    TURN_PARKED = "TURN_PARKED"  # a turn found no code for its workflow here
    RELOADING = "RELOADING"  # reads the log again, outside a turn
    BACKING_OFF = "BACKING_OFF"  # after a store error: no turn before the retry's reload
    PARKED = "PARKED"  # its workflow is not registered here: only control messages apply
    ENDED = "ENDED"  # its run ended; kept while messages that reached it are discarded
    DROPPED = "DROPPED"  # the engine let go of this copy (evicted, forgotten)


class LifecycleEvent(enum.StrEnum):
    """What the engine does to an instance."""

    LOADED = "LOADED"  # its state was set from the log
    QUEUE = "QUEUE"  # put in the turn queue
    START_TURN = "START_TURN"  # a turn begins (from the queue, or inline after an activity)
    END_TURN = "END_TURN"  # the turn is over and the run goes on
    RELOAD = "RELOAD"  # read the log again
    STORE_FAILED = "STORE_FAILED"  # a store error: retry after a backoff
    PARK = "PARK"  # no code for its workflow here
    END = "END"  # its run ended (the turn, reload or failure that ended it is over)
    EVICT = "EVICT"  # dropped from memory while it waits
    FORGET = "FORGET"  # dropped from memory: ended, purged, or another process runs it


S, E = InstanceState, LifecycleEvent

TRANSITIONS: dict[InstanceState, dict[LifecycleEvent, InstanceState]] = {
    S.LOADING: {E.LOADED: S.IDLE, E.FORGET: S.DROPPED},
    S.IDLE: {
        E.QUEUE: S.QUEUED, E.START_TURN: S.RUNNING, E.END: S.ENDED,
        E.EVICT: S.DROPPED, E.FORGET: S.DROPPED,
    },
    S.QUEUED: {E.START_TURN: S.RUNNING, E.FORGET: S.DROPPED},
    S.RUNNING: {
        E.END_TURN: S.IDLE, E.RELOAD: S.TURN_RELOADING, E.STORE_FAILED: S.TURN_FAILED,
        E.PARK: S.TURN_PARKED, E.END: S.ENDED, E.FORGET: S.DROPPED,
    },
    S.TURN_RELOADING: {
        E.LOADED: S.RUNNING, E.STORE_FAILED: S.TURN_FAILED, E.FORGET: S.DROPPED,
    },
    S.TURN_FAILED: {
        E.END_TURN: S.BACKING_OFF, E.STORE_FAILED: S.TURN_FAILED, E.RELOAD: S.TURN_RELOADING,
        E.END: S.ENDED, E.FORGET: S.DROPPED,
    },
    S.TURN_PARKED: {
        E.END_TURN: S.PARKED, E.RELOAD: S.TURN_RELOADING, E.STORE_FAILED: S.TURN_FAILED,
        E.END: S.ENDED, E.FORGET: S.DROPPED,
    },
    S.RELOADING: {E.LOADED: S.IDLE, E.STORE_FAILED: S.BACKING_OFF, E.FORGET: S.DROPPED},
    S.BACKING_OFF: {
        E.RELOAD: S.RELOADING, E.STORE_FAILED: S.BACKING_OFF, E.EVICT: S.DROPPED,
        E.FORGET: S.DROPPED,
    },
    S.PARKED: {E.QUEUE: S.QUEUED, E.EVICT: S.DROPPED, E.FORGET: S.DROPPED},
    S.ENDED: {E.QUEUE: S.QUEUED, E.END: S.ENDED, E.FORGET: S.DROPPED},
    S.DROPPED: {
        E.LOADED: S.DROPPED, E.END_TURN: S.DROPPED, E.END: S.DROPPED,
        E.STORE_FAILED: S.DROPPED, E.FORGET: S.DROPPED,
    },
}  # fmt: skip

# Bound once for the questions the engine asks on every turn: reading a member off its
# enum class takes CPython's slow attribute path (the enum type has a ``__getattr__``).
_IDLE, _PARKED = S.IDLE, S.PARKED
# what a parked instance applies without its workflow's code: the control messages, and
# its execution deadline (the run fails with durable.TimeoutError)
PARKED_APPLIES = (*CONTROL, ExecutionTimedOut)
_END, _END_TURN = E.END, E.END_TURN
_MAY_ENQUEUE = frozenset({S.IDLE, S.ENDED})
_MAY_EVICT = frozenset({S.IDLE, S.BACKING_OFF, S.PARKED})
_BACKING_OFF = frozenset({S.BACKING_OFF, S.TURN_FAILED})
_RELOADING = frozenset({S.RELOADING, S.TURN_RELOADING})
_PENDING = WorkflowStatus.PENDING


def next_state(instance_id: str, state: InstanceState, event: LifecycleEvent) -> InstanceState:
    """The state after ``event``; raises :class:`LifecycleError` if the table forbids it."""
    after = TRANSITIONS[state].get(event)
    if after is None:
        raise LifecycleError(instance_id, state.value, event.value)
    return after


def fire(inst: _Instance, event: LifecycleEvent) -> None:
    """Move ``inst`` by ``event``, checked against the table."""
    after = TRANSITIONS[inst.state].get(event)
    if after is None:
        raise LifecycleError(inst.id, inst.state.value, event.value)
    inst.state = after


def end_of_turn(status: WorkflowStatus) -> LifecycleEvent:
    """What a turn's end fires: END if the run ended, END_TURN if it goes on."""
    return _END if status.is_terminal else _END_TURN


def can_enqueue(state: InstanceState, pending: Iterable[tuple[Any, Any, Event]]) -> bool:
    """Whether an instance with pending events may be put in the turn queue now: it
    is not queued, in a turn, reloading or backing off, and if parked it has what a
    parked instance applies (:data:`PARKED_APPLIES`)."""
    if state is _PARKED:
        return any(isinstance(event, PARKED_APPLIES) for _, _, event in pending)
    return state in _MAY_ENQUEUE


def can_take_inline_turn(state: InstanceState) -> bool:
    """Whether an activity worker may run the instance's next turn itself, at once."""
    return state is _IDLE


def can_evict(state: InstanceState, has_pending: bool, status: WorkflowStatus) -> bool:
    """Whether a resident instance may leave memory: it only waits (nothing under way,
    nothing pending), its run has begun, and has not ended."""
    if state not in _MAY_EVICT:
        return False
    return not (has_pending or status.is_terminal or status is _PENDING)


def can_reload(state: InstanceState) -> bool:
    """Whether a reload may begin: not while one is under way, nor once the run ended
    or the copy was let go."""
    return LifecycleEvent.RELOAD in TRANSITIONS[state]


def is_backing_off(state: InstanceState) -> bool:
    """Whether a retry after a store error is already due (one retry at a time)."""
    return state in _BACKING_OFF


def is_reloading(state: InstanceState) -> bool:
    """Whether a reload of the instance is under way (a second one waits for nothing)."""
    return state in _RELOADING


def diagram() -> str:
    """The transition table as text, one ``STATE --EVENT--> STATE`` line per entry."""
    width = max(len(s.value) for s in InstanceState)
    lines = []
    for state, row in TRANSITIONS.items():
        for event, after in row.items():
            lines.append(f"    {state.value:<{width}} --{event.value}--> {after.value}")
    return "\n".join(lines)
