"""Jittered exponential backoff as tenacity wait strategies.

tenacity's own random waits draw from the ``random`` module; these take the
random source as an argument so that tests can assert exact sleeps.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Literal

import tenacity
from tenacity.wait import wait_base

__all__ = ["Jitter", "JitteredBackoff", "exponential_cap"]

Jitter = Literal["full", "equal", "decorrelated", "none"]
JITTERS: tuple[Jitter, ...] = ("full", "equal", "decorrelated", "none")

# The AWS "decorrelated jitter" growth factor: each sleep is drawn between the
# initial backoff and three times the previous sleep.
DECORRELATED_GROWTH = 3.0


def exponential_cap(initial: float, multiplier: float, cap: float, n: int) -> float:
    """``min(cap, initial * multiplier ** (n - 1))`` for retry ``n`` (1-based)."""
    if initial == 0.0 or multiplier == 1.0:
        return min(cap, initial)
    try:
        value = initial * multiplier ** (n - 1)
    except OverflowError:
        return cap
    return min(cap, value)


class JitteredBackoff(wait_base):
    """Exponential backoff with jitter, as a tenacity ``wait`` strategy.

    For retry ``n`` (``retry_state.attempt_number`` is the number of attempts
    made so far) with ``base = min(maximum, initial * multiplier ** (n - 1))``:

    - ``"full"``: uniform in ``[0, base]``;
    - ``"equal"``: ``base / 2`` plus uniform in ``[0, base / 2]``;
    - ``"decorrelated"``: uniform in ``[initial, 3 * previous sleep]``, capped at
      ``maximum`` (the previous sleep is ``retry_state.upcoming_sleep``);
    - ``"none"``: ``base``.

    All values are seconds.  ``random`` returns floats in ``[0, 1)``.
    """

    def __init__(
        self,
        *,
        initial: float,
        multiplier: float,
        maximum: float,
        jitter: Jitter,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.initial = initial
        self.multiplier = multiplier
        self.maximum = maximum
        self.jitter = jitter
        self.random = random

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        n = max(1, retry_state.attempt_number)
        if self.jitter == "decorrelated":
            previous = retry_state.upcoming_sleep or self.initial
            high = max(self.initial, previous * DECORRELATED_GROWTH)
            return min(
                self.maximum, self.initial + self.random() * (high - self.initial)
            )
        base = exponential_cap(self.initial, self.multiplier, self.maximum, n)
        if self.jitter == "full":
            return self.random() * base
        if self.jitter == "equal":
            return base / 2 + self.random() * (base / 2)
        return base

    def __repr__(self) -> str:
        return (
            f"JitteredBackoff(initial={self.initial}, multiplier={self.multiplier}, "
            f"maximum={self.maximum}, jitter={self.jitter!r})"
        )
