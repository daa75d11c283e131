"""AdaptiveThrottle: client-side load shedding, so that an outage costs the
server less traffic, not more.

Google SRE's adaptive throttling ("Handling Overload", *Site Reliability
Engineering*, chapter 21): a client keeps, over the last ``window`` seconds
and per host, how many requests it wanted to send (``requests``, those it
refused itself included) and how many the server accepted (``accepts``: every
answer that is not an overload signal).  Before each request it refuses it
locally with probability

    max(0, (requests - k * accepts) / (requests + 1))

so while the server accepts at least ``1 / k`` of what is asked nothing is
refused, and in an outage nearly everything is: callers fail in
microseconds, and the server sees a trickle instead of a flood.

Two additions make the recovery quick.  At least ``min_per_second`` requests
a host go through whatever the probability; those, and any request let
through while the probability is at least one half (the server accepted at
most about ``1 / 2k`` of the latest requests), are probes; and a probe that
the server accepts ends the throttling at once (the window forgets the
failures before it), so a recovered server gets its traffic back within about
``1 / min_per_second`` seconds instead of a whole window.  A false dawn costs
little: failures push the probability back up within a fraction of a second.
In a partial overload (the probability below one half) accepts do not reset
anything, and the throttle sheds load as the SRE formula says.

Time is cut into ``SLOTS`` slices of ``window / SLOTS`` seconds, as in the
retry budget; each host costs a few hundred bytes and is forgotten once all
its counts have expired.
"""

from __future__ import annotations

import logging
import math
import random as _random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from . import _testing_state
from ._exceptions import RetryError
from ._validation import check_bool, check_number

__all__ = [
    "ADMIT",
    "PROBE",
    "REFUSE",
    "AdaptiveThrottle",
    "ThrottleStats",
    "ThrottledError",
    "accepted_error",
    "accepted_status",
]

SLOTS = 10
_OWNER = "AdaptiveThrottle"
logger = logging.getLogger("reliable_client")

# A request let through while the refusal probability is at least this is a
# probe: the server accepted at most about 1 / (2k) of the latest requests.
_PROBING = 0.5

# What admit() answers.
REFUSE = 0
ADMIT = 1
PROBE = 2

# Answers that say "overloaded": everything else is an accept.
OVERLOAD_STATUSES = frozenset({429, 502, 503, 504})
_OVERLOAD_ERRORS = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


def accepted_status(status: int) -> bool:
    """Whether a response with ``status`` counts as accepted (a 404 or a 422
    is: the server answered; 429, 502, 503 and 504 are not)."""
    return status not in OVERLOAD_STATUSES


def accepted_error(exc: BaseException) -> bool:
    """Whether an attempt that raised ``exc`` counts as accepted: not for a
    timeout or a connection error (the server may be overloaded)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return accepted_status(exc.response.status_code)
    return not isinstance(exc, _OVERLOAD_ERRORS)


class ThrottledError(httpx.TransportError, RetryError):
    """A request refused on the client, before it was sent, because the
    server's recent answers mostly said "overloaded" (see
    :class:`AdaptiveThrottle`).  Never retried by reliable_client;
    ``outcome(exc).stopped_by == "throttle"``."""


@dataclass(frozen=True)
class ThrottleStats:
    """A host's counts over the throttle's window."""

    requests: int
    """Requests wanted in the window (those refused locally included)."""
    accepts: int
    """Requests the server accepted in the window."""
    probability: float
    """The refusal probability now, in ``[0, 1)``."""


class _Host:
    """One host's requests and accepts over the last ``SLOTS`` slices."""

    __slots__ = ("accepts", "last_admitted", "requests", "ring", "slot", "throttling")

    def __init__(self, slot: int) -> None:
        self.ring = [[0, 0] for _ in range(SLOTS)]  # per slice: requests, accepts
        self.requests = 0
        self.accepts = 0
        self.slot = slot
        self.last_admitted = -math.inf
        self.throttling = False

    def advance(self, slot: int) -> None:
        if slot - self.slot >= SLOTS:
            for entry in self.ring:
                entry[0] = entry[1] = 0
            self.requests = self.accepts = 0
        else:
            while self.slot < slot:
                self.slot += 1
                entry = self.ring[self.slot % SLOTS]
                self.requests -= entry[0]
                self.accepts -= entry[1]
                entry[0] = entry[1] = 0
        self.slot = slot

    def probability(self, k: float) -> float:
        excess = self.requests - k * self.accepts
        return 0.0 if excess <= 0 else excess / (self.requests + 1)

    def forget_failures(self) -> None:
        for entry in self.ring:
            entry[0] = entry[1]
        self.requests = self.accepts


class AdaptiveThrottle:
    """Refuse requests on the client while a server's recent answers mostly
    say "overloaded" (Google SRE's adaptive throttling).

    Args:
        k: how many requests per accepted one are let through before any is
            refused (default 2.0: nothing is refused while the server accepts
            at least half), ``>= 1``.  Lower refuses sooner.
        window: seconds of history (default 10.0), ``> 0``.
        min_per_second: requests a second let through to each host as probes
            however high the refusal probability (default 1.0), ``>= 0``; an
            accepted probe ends the throttling at once.
        per_host: keep one history per host (default True); with False, one
            history for everything.
        clock: monotonic seconds (default ``time.monotonic``).
        random: floats in ``[0, 1)`` for the refusals (default
            ``random.random``); ``random.Random(seed).random`` to repeat them.

    Refuses a request with probability ``max(0, (requests - k x accepts) /
    (requests + 1))`` over the last ``window`` seconds, where ``requests``
    counts every request wanted (retries and refused ones included) and
    ``accepts`` every answer that is not an overload signal (429, 502, 503,
    504, a timeout, a connection error).  A refused request raises
    :class:`ThrottledError` and is never sent.  Share one object between
    clients, transports and decorators; thread- and task-safe; O(1) a request.
    """

    def __init__(
        self,
        k: float = 2.0,
        window: float = 10.0,
        min_per_second: float = 1.0,
        per_host: bool = True,
        clock: Callable[[], float] | None = None,
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.k = check_number(_OWNER, "k", k, minimum=1.0)
        self.window = check_number(_OWNER, "window", window, allow_minimum=False)
        self.min_per_second = check_number(_OWNER, "min_per_second", min_per_second)
        self.per_host = check_bool(_OWNER, "per_host", per_host)
        if clock is not None and not callable(clock):
            raise TypeError(f"{_OWNER}.clock must be callable or None")
        if not callable(random):
            raise TypeError(f"{_OWNER}.random must be callable")
        self._clock = clock or time.monotonic
        self._random = random
        self._slice = self.window / SLOTS
        self._probe_every = (
            1.0 / self.min_per_second if self.min_per_second > 0 else math.inf
        )
        self._lock = threading.Lock()
        self._hosts: OrderedDict[str, _Host] = OrderedDict()
        self.refused = 0
        """Requests refused since the throttle was made."""

    def __repr__(self) -> str:
        return (
            f"AdaptiveThrottle(k={self.k}, window={self.window}, "
            f"min_per_second={self.min_per_second}, per_host={self.per_host})"
        )

    def key(self, host: str) -> str:
        """The history a request to ``host`` counts in."""
        return host if self.per_host else ""

    def _host(self, key: str, slot: int, now: float) -> _Host:
        # The caller holds the lock.
        hosts = self._hosts
        while hosts:  # forget hosts whose every count has expired (LRU first)
            oldest_key, oldest = next(iter(hosts.items()))
            if slot - oldest.slot < SLOTS or oldest_key == key:
                break
            hosts.popitem(last=False)
            if oldest.throttling:
                _log_stop(oldest_key)
        host = hosts.get(key)
        if host is None:
            host = hosts[key] = _Host(slot)
            return host
        hosts.move_to_end(key)
        if slot > host.slot:
            host.advance(slot)
        return host

    def admit(self, key: str) -> int:
        """Count a request to the history ``key`` and say whether to send it:
        :data:`ADMIT`, :data:`PROBE` (let through by ``min_per_second``
        although the probability refused it) or :data:`REFUSE`."""
        mode = _testing_state._current
        if mode is not None and mode.throttle is not None:
            return REFUSE if mode.throttle else ADMIT
        now = self._clock()
        slot = math.floor(now / self._slice)
        started = stopped = False
        lock = self._lock
        lock.acquire()
        try:
            host = self._host(key, slot, now)
            excess = host.requests - self.k * host.accepts
            probability = 0.0 if excess <= 0 else excess / (host.requests + 1)
            host.requests += 1
            host.ring[slot % SLOTS][0] += 1
            if probability == 0.0 or self._random() >= probability:
                # Let through while most are refused, it tells whether the
                # server is back: a probe too.
                verdict = PROBE if probability >= _PROBING else ADMIT
                if probability == 0.0 and host.throttling:
                    host.throttling = False
                    stopped = True
            elif now - host.last_admitted >= self._probe_every:
                verdict = PROBE
            else:
                verdict = REFUSE
                self.refused += 1
                if not host.throttling:
                    host.throttling = started = True
            if verdict != REFUSE:
                host.last_admitted = now
        finally:
            lock.release()
        if started:
            logger.warning(
                "throttling requests to %s: the server accepted too few of the "
                "last ones (refusal probability %.2f)",
                key or "every host",
                probability,
            )
        elif stopped:
            _log_stop(key)
        return verdict

    def record(self, key: str, accepted: bool, probe: bool = False) -> None:
        """Count what the server did with a request :meth:`admit` let through
        (``probe``: it was let through as a probe)."""
        if not accepted:
            return  # the request is counted already, and no accept comes
        now = self._clock()
        slot = math.floor(now / self._slice)
        lock = self._lock
        lock.acquire()
        try:
            host = self._host(key, slot, now)
            host.accepts += 1
            host.ring[slot % SLOTS][1] += 1
            if probe and host.requests > self.k * host.accepts:
                # The server answers again: what came before is history.
                host.forget_failures()
        finally:
            lock.release()

    def probability(self, host: str = "") -> float:
        """The refusal probability for a request to ``host`` now."""
        slot = math.floor(self._clock() / self._slice)
        with self._lock:
            found = self._hosts.get(self.key(host))
            if found is None:
                return 0.0
            if slot > found.slot:
                found.advance(slot)
            return found.probability(self.k)

    @property
    def stats(self) -> dict[str, ThrottleStats]:
        """Each host's requests, accepts and refusal probability over the
        window (the key ``""`` with ``per_host=False``)."""
        slot = math.floor(self._clock() / self._slice)
        with self._lock:
            result = {}
            for key, host in self._hosts.items():
                if slot > host.slot:
                    host.advance(slot)
                result[key] = ThrottleStats(
                    host.requests, host.accepts, host.probability(self.k)
                )
            return result


def _log_stop(key: str) -> None:
    logger.warning(
        "stopped throttling requests to %s: the server accepts them again",
        key or "every host",
    )
