"""The instance lifecycle table: every allowed transition, every forbidden one, and random
event sequences (issue 13, section 4: one explicit, checked lifecycle)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable._core._events import EventRaised, WorkflowSuspended
from durable._core._state import WorkflowStatus
from durable._engine import _lifecycle
from durable._engine._lifecycle import (
    TRANSITIONS,
    InstanceState,
    LifecycleEvent,
    can_enqueue,
    can_evict,
    can_take_inline_turn,
    diagram,
    next_state,
)
from durable._errors import DurableError, LifecycleError

ALLOWED = [(s, e, after) for s, row in TRANSITIONS.items() for e, after in row.items()]
FORBIDDEN = [
    (s, e) for s, e in itertools.product(InstanceState, LifecycleEvent) if e not in TRANSITIONS[s]
]


def test_every_state_has_a_row() -> None:
    """The table names every state (a state without a row could never be left)."""
    assert set(TRANSITIONS) == set(InstanceState)


@pytest.mark.parametrize(("state", "event", "after"), ALLOWED)
def test_allowed_transition(
    state: InstanceState, event: LifecycleEvent, after: InstanceState
) -> None:
    """Each entry of the table is a transition the machine makes."""
    assert next_state("i", state, event) is after


@pytest.mark.parametrize(("state", "event"), FORBIDDEN)
def test_forbidden_transition_raises(state: InstanceState, event: LifecycleEvent) -> None:
    """An event the table does not allow raises LifecycleError naming instance, state
    and event (an engine bug the simulation reports with its seed)."""
    with pytest.raises(LifecycleError) as caught:
        next_state("inst-7", state, event)
    assert isinstance(caught.value, DurableError)
    message = str(caught.value)
    assert "inst-7" in message
    assert state.value in message
    assert event.value in message


def test_docstring_diagram_is_generated_from_the_table() -> None:
    """The diagram in the module's docstring is the one the table gives today."""
    assert _lifecycle.__doc__ is not None
    assert diagram() in _lifecycle.__doc__
    assert len(diagram().splitlines()) == len(ALLOWED)


def test_a_turn_owns_the_instance() -> None:
    """While a turn runs (or reloads, or backs off, or parks) nothing queues it, no
    activity worker runs another turn inline, and it is never evicted."""
    in_turn = [
        InstanceState.RUNNING, InstanceState.TURN_RELOADING,
        InstanceState.TURN_FAILED, InstanceState.TURN_PARKED,
    ]  # fmt: skip
    for state in [*in_turn, InstanceState.QUEUED, InstanceState.RELOADING]:
        assert not can_enqueue(state, [])
        assert not can_take_inline_turn(state)
        assert not can_evict(state, False, WorkflowStatus.RUNNING)
    for state in [*in_turn, InstanceState.RELOADING]:
        assert LifecycleEvent.START_TURN not in TRANSITIONS[state]


def test_parked_queues_only_for_control_messages() -> None:
    """A parked instance takes a turn only to apply suspend, resume or terminate."""
    parked = InstanceState.PARKED
    assert not can_enqueue(parked, [("m1", -1, EventRaised(name="x"))])
    assert can_enqueue(parked, [("m1", -1, EventRaised(name="x")), (None, -1, WorkflowSuspended())])


def test_backing_off_waits_for_its_reload() -> None:
    """After a store error no turn runs before the retry's reload (an activity outcome
    is not run inline then: it waits in pending)."""
    state = InstanceState.BACKING_OFF
    assert not can_enqueue(state, [(None, -1, EventRaised(name="x"))])
    assert not can_take_inline_turn(state)
    assert next_state("i", state, LifecycleEvent.RELOAD) is InstanceState.RELOADING


def test_evictable_only_when_waiting() -> None:
    """Only a run that has begun, has not ended and has nothing pending may be evicted."""
    idle = InstanceState.IDLE
    assert can_evict(idle, False, WorkflowStatus.RUNNING)
    assert not can_evict(idle, True, WorkflowStatus.RUNNING)
    assert not can_evict(idle, False, WorkflowStatus.PENDING)
    assert not can_evict(idle, False, WorkflowStatus.COMPLETED)
    assert not can_evict(InstanceState.ENDED, False, WorkflowStatus.COMPLETED)


@given(st.lists(st.sampled_from(list(LifecycleEvent)), max_size=40))
def test_random_event_sequences(events: list[LifecycleEvent]) -> None:
    """Any sequence of events either follows the table or stops at the first forbidden
    event with LifecycleError; DROPPED is never left, and a turn starts only from IDLE
    or QUEUED."""
    state = InstanceState.LOADING
    for event in events:
        allowed = event in TRANSITIONS[state]
        try:
            after = next_state("i", state, event)
        except LifecycleError:
            assert not allowed
            return
        assert allowed
        assert after is TRANSITIONS[state][event]
        if state is InstanceState.DROPPED:
            assert after is InstanceState.DROPPED
        if event is LifecycleEvent.START_TURN:
            assert state in (InstanceState.IDLE, InstanceState.QUEUED)
        state = after
