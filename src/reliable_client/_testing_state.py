"""The state behind :mod:`reliable_client.testing` (kept apart to avoid cycles)."""

from __future__ import annotations

import threading

__all__ = ["TestingMode", "cap_attempts", "current", "intercept"]


class TestingMode:
    """Active testing mode: sleeps are recorded, not slept."""

    __test__ = False  # not a pytest test class

    def __init__(self, attempts: int | None, throttle: bool | None = None) -> None:
        self.attempts = attempts
        self.throttle = throttle
        """None: throttles decide as usual; False: they refuse nothing; True:
        they refuse every request (to test how code handles ThrottledError)."""
        self._lock = threading.Lock()
        self._sleeps: list[float] = []

    @property
    def sleeps(self) -> list[float]:
        """The delays (seconds) that retries would have slept, in order."""
        with self._lock:
            return list(self._sleeps)

    @property
    def retries(self) -> int:
        """How many retries slept (zero time) while this mode was on."""
        with self._lock:
            return len(self._sleeps)

    def record(self, delay: float) -> None:
        with self._lock:
            self._sleeps.append(delay)


_current: TestingMode | None = None


def current() -> TestingMode | None:
    return _current


def activate(mode: TestingMode | None) -> TestingMode | None:
    global _current
    previous, _current = _current, mode
    return previous


def intercept(delay: float) -> bool:
    """Record ``delay`` and return True when testing mode replaces sleeping."""
    mode = _current
    if mode is None:
        return False
    mode.record(delay)
    return True


def cap_attempts(max_attempts: int) -> int:
    mode = _current
    if mode is None or mode.attempts is None:
        return max_attempts
    return min(max_attempts, mode.attempts)
