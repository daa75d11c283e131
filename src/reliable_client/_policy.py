"""RetryPolicy: one immutable, validated description of when and how to retry."""

from __future__ import annotations

import dataclasses
import random as _random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import tenacity
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ._backoff import JITTERS, Jitter, JitteredBackoff
from ._decision import RetryIfSafe
from ._validation import check_bool, check_int, check_methods, check_number

__all__ = ["DEFAULT_METHODS", "DEFAULT_STATUSES", "RetryPolicy"]

DEFAULT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
DEFAULT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

_OWNER = "RetryPolicy"


@dataclass(frozen=True)
class RetryPolicy:
    """When and how to retry a request.  Immutable; build changed copies with
    :meth:`replace`.

    Args:
        max_attempts: attempts in all, the first included (``>= 1``; default 3).
            ``1`` turns retrying off.
        methods: methods treated as idempotent (retried after a failure that may
            have reached the server).  Default: GET, HEAD, OPTIONS, TRACE, PUT,
            DELETE.  Upper-case tokens; extension methods such as ``PROPFIND``
            are allowed.  A request with an Idempotency-Key counts as
            idempotent whatever its method.
        statuses: response statuses that say "try again" (default 408, 425,
            429, 500, 502, 503, 504).  429, and 503 with a Retry-After, are
            retried for any method; the others only for idempotent requests.
        backoff_initial: the first backoff in seconds (default 0.5).
        backoff_multiplier: growth per retry (default 2.0, ``>= 1``).
        backoff_max: cap on one backoff in seconds (default 10.0).
        jitter: ``"full"`` (default), ``"equal"``, ``"decorrelated"`` or
            ``"none"``; see :class:`reliable_client._backoff.JitteredBackoff`.
        respect_retry_after: use a valid Retry-After header in place of the
            backoff (default True).
        max_retry_after: seconds (default 60.0).  A longer Retry-After ends the
            retries and the response carrying it is returned at once.
        deadline: seconds for all attempts and sleeps of one call together, or
            ``None`` (default) for no deadline.  Each attempt's timeouts are cut
            to the time left, and no sleep that would pass it is taken.
        wait: a tenacity wait strategy that replaces the built-in backoff.
        stop: a tenacity stop strategy, added to ``max_attempts`` and
            ``deadline`` (whichever stops first).
        random: a source of floats in ``[0, 1)`` for the jitter (default
            ``random.random``); pass ``random.Random(seed).random`` for
            repeatable sleeps.
    """

    max_attempts: int = 3
    methods: Iterable[str] = DEFAULT_METHODS
    statuses: Iterable[int] = DEFAULT_STATUSES
    backoff_initial: float = 0.5
    backoff_multiplier: float = 2.0
    backoff_max: float = 10.0
    jitter: Jitter = "full"
    respect_retry_after: bool = True
    max_retry_after: float = 60.0
    deadline: float | None = None
    wait: wait_base | None = None
    stop: stop_base | None = None
    random: Callable[[], float] = field(default=_random.random, repr=False)

    # Derived once per policy, so that no call pays for building them.
    _methods: frozenset[str] = field(init=False, repr=False, compare=False)
    _statuses: frozenset[int] = field(init=False, repr=False, compare=False)
    # Statuses a response must have to be judged at all: ``statuses``, and 409
    # (a keyed request still in progress on the server).
    _judged_statuses: frozenset[int] = field(init=False, repr=False, compare=False)
    _wait: wait_base = field(init=False, repr=False, compare=False)
    _stop: stop_base = field(init=False, repr=False, compare=False)
    _retry: retry_base = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        check_int(_OWNER, "max_attempts", self.max_attempts, minimum=1)
        put("methods", check_methods(_OWNER, "methods", self.methods))
        put("statuses", _check_statuses(self.statuses))
        put(
            "backoff_initial",
            check_number(_OWNER, "backoff_initial", self.backoff_initial),
        )
        put(
            "backoff_multiplier",
            check_number(
                _OWNER, "backoff_multiplier", self.backoff_multiplier, minimum=1.0
            ),
        )
        put("backoff_max", check_number(_OWNER, "backoff_max", self.backoff_max))
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"{_OWNER}.backoff_max ({self.backoff_max}) must be >= "
                f"backoff_initial ({self.backoff_initial})"
            )
        if self.jitter not in JITTERS:
            raise ValueError(
                f"{_OWNER}.jitter must be one of {', '.join(map(repr, JITTERS))}, "
                f"got {self.jitter!r}"
            )
        check_bool(_OWNER, "respect_retry_after", self.respect_retry_after)
        put(
            "max_retry_after",
            check_number(_OWNER, "max_retry_after", self.max_retry_after),
        )
        if self.deadline is not None:
            put(
                "deadline",
                check_number(_OWNER, "deadline", self.deadline, allow_minimum=False),
            )
        if self.wait is not None and not isinstance(self.wait, wait_base):
            raise TypeError(
                f"{_OWNER}.wait must be a tenacity wait strategy, "
                f"got {type(self.wait).__name__}"
            )
        if self.stop is not None and not isinstance(self.stop, stop_base):
            raise TypeError(
                f"{_OWNER}.stop must be a tenacity stop strategy, "
                f"got {type(self.stop).__name__}"
            )
        if not callable(self.random):
            raise TypeError(
                f"{_OWNER}.random must be a callable returning floats in [0, 1), "
                f"got {type(self.random).__name__}"
            )
        put("_methods", self.methods)
        put("_statuses", self.statuses)
        put("_judged_statuses", self._statuses | {409})
        put("_wait", self.wait or self._backoff())
        put("_stop", self._compose_stop())
        put("_retry", RetryIfSafe(self))

    def _backoff(self) -> JitteredBackoff:
        return JitteredBackoff(
            initial=self.backoff_initial,
            multiplier=self.backoff_multiplier,
            maximum=self.backoff_max,
            jitter=self.jitter,
            random=self.random,
        )

    def _compose_stop(self) -> stop_base:
        stop: stop_base = tenacity.stop_after_attempt(self.max_attempts)
        if self.deadline is not None:
            stop = stop | tenacity.stop_before_delay(self.deadline)
        if self.stop is not None:
            stop = stop | self.stop
        return stop

    # -- tenacity views ---------------------------------------------------

    @property
    def wait_strategy(self) -> wait_base:
        """The tenacity wait strategy: the user's ``wait`` or the jittered backoff."""
        return self._wait

    @property
    def stop_strategy(self) -> stop_base:
        """The tenacity stop strategy: ``max_attempts``, ``deadline`` and ``stop``."""
        return self._stop

    @property
    def retry_strategy(self) -> retry_base:
        """A tenacity retry strategy applying the safety rule to what an attempt
        returned (an ``httpx.Response``) or raised (an ``httpx`` exception, or an
        ``httpx.HTTPStatusError``), judged by the request it carries."""
        return self._retry

    # -- copies -----------------------------------------------------------

    def replace(self, **changes: Any) -> RetryPolicy:
        """Return a copy with ``changes`` applied (validated like the original)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self) if f.init}
        if unknown:
            raise TypeError(
                f"{_OWNER}.replace() got unknown field(s): {', '.join(sorted(unknown))}"
            )
        return dataclasses.replace(self, **changes)

    evolve = replace


def _check_statuses(value: object) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"{_OWNER}.statuses must be a collection of ints, "
            f"got {type(value).__name__}"
        )
    statuses = frozenset(value)
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"{_OWNER}.statuses must hold ints, got {status!r}")
        if not 100 <= status <= 599:
            raise ValueError(
                f"{_OWNER}.statuses: {status} is not an HTTP status (100..599)"
            )
    return statuses


NO_RETRY = RetryPolicy(max_attempts=1)
