"""``RetryPolicy``: how many times a failed activity or sub-workflow runs again, and when.

Retries are decided inside the workflow from the failure recorded in history, and the
backoff is a durable timer, so a retry schedule survives crashes and replays exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from ._failure import FailureDetails, qualified_name

__all__ = ["RetryPolicy"]

# Failures no retry can fix: the name is not registered, the payload does not decode.
_NEVER_RETRIED = frozenset({"durable.UnknownWorkflowError", "durable.SerializationError"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry with exponential backoff: attempt ``n`` waits
    ``initial_interval * backoff_coefficient ** (n - 1)``, capped at ``max_interval``.

    ``non_retryable`` lists exception types (subclasses included) that fail at once.
    """

    max_attempts: int = 3
    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    max_interval: timedelta = timedelta(minutes=5)
    non_retryable: tuple[type[BaseException], ...] = ()
    _names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_interval < timedelta(0) or self.max_interval < timedelta(0):
            raise ValueError("RetryPolicy intervals must not be negative")
        if self.backoff_coefficient < 1:
            raise ValueError("RetryPolicy.backoff_coefficient must be at least 1")
        names = frozenset(qualified_name(t) for t in self.non_retryable)
        object.__setattr__(self, "_names", names | _NEVER_RETRIED)

    def should_retry(self, attempt: int, failure: FailureDetails) -> bool:
        """Whether attempt ``attempt`` (1-based), which failed with ``failure``, gets another."""
        return attempt < self.max_attempts and not failure.is_a(self._names)

    def delay(self, attempt: int) -> timedelta:
        """The backoff after failed attempt ``attempt`` (1-based)."""
        seconds = self.initial_interval.total_seconds() * self.backoff_coefficient ** (attempt - 1)
        return min(timedelta(seconds=seconds), self.max_interval)
