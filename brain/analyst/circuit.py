"""A circuit breaker: stop calling an LLM that keeps failing, try again after a while.

Closed: calls go through; ``failure_threshold`` failed calls in a row open the circuit.
Open: calls are refused (the guard answers with the rules) until ``reset_after_s`` have
passed on the injected clock. Half-open: one probe call is let through; its success closes
the circuit, its failure opens it again for another ``reset_after_s``. Other calls are
refused while the probe is out.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class CircuitState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """See the module docstring. ``clock`` returns seconds (monotonic).

    Raises :class:`ValueError` for a threshold below 1 or a negative reset time.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        failure_threshold: int = 5,
        reset_after_s: float = 30.0,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if reset_after_s < 0:
            raise ValueError(f"reset_after_s must not be negative, got {reset_after_s}")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state.value}, failures={self._failures})"

    @property
    def state(self) -> CircuitState:
        """The current state (an open circuit turns half-open once its time is up)."""
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._probing or self._clock() - self._opened_at >= self.reset_after_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    @property
    def failures(self) -> int:
        """Failed calls in a row so far."""
        return self._failures

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open, true once (for the probe)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        """Record a successful call: the circuit closes."""
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        """Record a failed call: a failed probe, or one failure too many, opens the circuit."""
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._probing = False

    def cancel(self) -> None:
        """Give back a probe that was allowed but not made (no verdict either way)."""
        self._probing = False
