"""Support for users' own test suites: retries without real sleeps, and a
fault-injecting server.

    from reliable_client import testing

    def test_checkout_retries(httpserver):
        with testing.testing_mode(attempts=2) as mode:
            ...                        # code under test that uses reliable_client
        assert mode.sleeps == [...]    # what the retries would have slept

While testing mode is on (process-wide, like stamina's), every retry of every
client, transport and decorator sleeps zero time and its delay is recorded;
with ``attempts=N`` no call makes more than N attempts.  Backoff stays
observable: inject ``RetryPolicy(random=random.Random(0).random)`` to make the
recorded delays exact.

:class:`ChaosServer` is an HTTP/1.1 server on 127.0.0.1 that injects faults on
demand (scripted per route, random at seeded rates, or an outage window) and
can sit in front of an ASGI app.  With pytest, the ``chaos_server`` fixture
(registered by this package's pytest plugin) gives a running one per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._testing_state import TestingMode, activate, current
from .._validation import check_int
from ._chaos import (
    Action,
    BrokenBody,
    ChaosServer,
    Close,
    FaultMix,
    Forward,
    ForwardThenDrop,
    ForwardThenTruncate,
    Reply,
    Reset,
    Seen,
    SlowBody,
    Stall,
    closed_port,
)

__all__ = [
    "Action",
    "BrokenBody",
    "ChaosServer",
    "Close",
    "FaultMix",
    "Forward",
    "ForwardThenDrop",
    "ForwardThenTruncate",
    "Reply",
    "Reset",
    "Seen",
    "SlowBody",
    "Stall",
    "TestingMode",
    "closed_port",
    "is_testing",
    "set_testing",
    "testing_mode",
]


def _check(attempts: int | None, throttle: bool | None) -> None:
    if attempts is not None:
        check_int("testing", "attempts", attempts, minimum=1)
    if throttle is not None and not isinstance(throttle, bool):
        raise TypeError(
            f"testing.throttle must be a bool or None, got {type(throttle).__name__}"
        )


def set_testing(
    on: bool, *, attempts: int | None = None, throttle: bool | None = None
) -> TestingMode | None:
    """Turn testing mode on (``attempts`` caps attempts per call; ``throttle``
    False turns every AdaptiveThrottle off, True makes them refuse every
    request) or off.

    Returns the new mode object when turned on, else ``None``.
    """
    if not isinstance(on, bool):
        raise TypeError(f"set_testing(on=...) must be a bool, got {type(on).__name__}")
    _check(attempts, throttle)
    mode = TestingMode(attempts, throttle) if on else None
    activate(mode)
    return mode


def is_testing() -> bool:
    """Whether testing mode is on."""
    return current() is not None


@contextmanager
def testing_mode(
    *, attempts: int | None = None, throttle: bool | None = None
) -> Iterator[TestingMode]:
    """Testing mode for the ``with`` block; the previous mode is restored after.

    ``attempts`` caps the attempts of every call; ``throttle=False`` turns
    every :class:`~reliable_client.AdaptiveThrottle` off, ``throttle=True``
    makes them refuse every request (``ThrottledError``), for tests of the
    code that handles it.
    """
    _check(attempts, throttle)
    mode = TestingMode(attempts, throttle)
    previous = activate(mode)
    try:
        yield mode
    finally:
        activate(previous)
