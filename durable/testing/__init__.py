"""Testing workflows: virtual time, replay checks, seeded simulation of faults, and a
whole-system simulation (a fleet, outside clients, faults at every store call)."""

from durable._clock import MockClock
from durable.testing._environment import WorkflowEnvironment
from durable.testing._replayer import Replayer
from durable.testing._simulate import Faults, SimulatedActivityError, SimulationResult, simulate
from durable.testing._system import SystemConfig, SystemResult, simulate_system

__all__ = [
    "Faults",
    "MockClock",
    "Replayer",
    "SimulatedActivityError",
    "SimulationResult",
    "SystemConfig",
    "SystemResult",
    "WorkflowEnvironment",
    "simulate",
    "simulate_system",
]
