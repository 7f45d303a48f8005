"""Testing workflows: virtual time, replay checks and seeded simulation of faults."""

from durable._clock import MockClock
from durable.testing._environment import WorkflowEnvironment
from durable.testing._replayer import Replayer
from durable.testing._simulate import Faults, SimulatedActivityError, SimulationResult, simulate

__all__ = [
    "Faults",
    "MockClock",
    "Replayer",
    "SimulatedActivityError",
    "SimulationResult",
    "WorkflowEnvironment",
    "simulate",
]
