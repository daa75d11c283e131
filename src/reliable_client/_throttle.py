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

The formula is also taken over the window's last fifth (its two latest
slices), and the higher of the two applies.  Over the whole window alone, a
healthy past shields an outage: 10 s of accepts at 200 a second let the next
4,000 failures through before the first refusal, half a window of full
traffic to a server that is down.  The short horizon sees the outage within
a second or two, as the probes see the recovery.

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
    """Requests the server accepted in the window (one still in flight
    counts as accepted until it fails)."""
    probability: float
    """The refusal probability now, in ``[0, 1)``."""


class _Host:
    """One host's requests and failures over the last ``SLOTS`` slices.

    Failures are counted, not accepts (``accepts = requests - failures``):
    an answered request costs nothing after :meth:`AdaptiveThrottle.admit`,
    and one still in flight counts as accepted until it fails.  The slice
    under way is in ``now_requests``/``now_failures``, the one before in
    ``last_requests``/``last_failures`` (the short horizon), older ones in
    ``ring``; ``requests``/``failures`` are the window's totals.
    """

    __slots__ = (
        "failures",
        "last_admitted",
        "last_failures",
        "last_requests",
        "now_failures",
        "now_requests",
        "requests",
        "ring",
        "slot",
        "throttling",
    )

    def __init__(self, slot: int) -> None:
        self.ring = [[0, 0] for _ in range(SLOTS)]  # per slice: requests, failures
        self.requests = self.failures = 0
        self.now_requests = self.now_failures = 0
        self.last_requests = self.last_failures = 0
        self.slot = slot
        self.last_admitted = -math.inf
        self.throttling = False

    def advance(self, slot: int) -> None:
        """Move to slice ``slot``: the oldest slices leave the window."""
        ring = self.ring
        entry = ring[self.slot % SLOTS]
        entry[0], entry[1] = self.now_requests, self.now_failures
        if slot - self.slot >= SLOTS:
            for entry in ring:
                entry[0] = entry[1] = 0
            self.requests = self.failures = 0
        else:
            while self.slot < slot:
                self.slot += 1
                entry = ring[self.slot % SLOTS]
                self.requests -= entry[0]
                self.failures -= entry[1]
                entry[0] = entry[1] = 0
        before = ring[(slot - 1) % SLOTS]
        self.last_requests, self.last_failures = before[0], before[1]
        self.now_requests = self.now_failures = 0
        self.slot = slot

    def probability(self, k: float) -> float:
        """The SRE formula over the window, or over its last fifth (this
        slice and the one before), whichever is higher."""
        return max(
            _formula(self.requests, self.failures, k),
            _formula(
                self.now_requests + self.last_requests,
                self.now_failures + self.last_failures,
                k,
            ),
        )

    def forget_failures(self) -> None:
        for entry in self.ring:
            entry[0] -= entry[1]
            entry[1] = 0
        self.requests -= self.failures
        self.now_requests -= self.now_failures
        self.last_requests -= self.last_failures
        self.failures = self.now_failures = self.last_failures = 0


def _formula(requests: int, failures: int, k: float) -> float:
    """max(0, (requests - k x accepts) / (requests + 1))"""
    excess = requests - k * (requests - failures)
    return 0.0 if excess <= 0 else excess / (requests + 1)


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
    (requests + 1))`` over the last ``window`` seconds (or over its last
    fifth, when that is higher: an outage is seen within a second or two
    however healthy the window was before it), where ``requests``
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
        self._per_slice = SLOTS / self.window
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

    def _host(self, key: str, slot: int) -> _Host:
        """The history ``key`` at slice ``slot``: made, or moved on.  Runs
        once a slice per host (the caller holds the lock)."""
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

    def admit(self, key: str, now: float | None = None) -> int:
        """Count a request to the history ``key`` and say whether to send it:
        :data:`ADMIT`, :data:`PROBE` (let through to learn whether the server
        is back) or :data:`REFUSE`.  Report what the server did with an
        admitted one to :meth:`record`.  ``now``: a reading of this
        throttle's clock just taken by the caller (default: read it)."""
        mode = _testing_state._current
        if mode is not None and mode.throttle is not None:
            return REFUSE if mode.throttle else ADMIT
        if now is None:
            now = self._clock()
        slot = int(now * self._per_slice)
        change: str | None
        lock = self._lock
        lock.acquire()
        try:
            host = self._hosts.get(key)
            if host is None or host.slot != slot:
                host = self._host(key, slot)
            if not host.failures:
                # Nothing failed in the window: the common case, no formula.
                host.requests += 1
                host.now_requests += 1
                if not host.throttling:
                    return ADMIT
                host.throttling = False
                verdict, probability, change = ADMIT, 0.0, "stopped"
            else:
                # The formula counts the requests before this one.
                probability = host.probability(self.k)
                host.requests += 1
                host.now_requests += 1
                verdict, change = self._verdict(host, probability, now)
        finally:
            lock.release()
        if change == "started":
            logger.warning(
                "throttling requests to %s: the server accepted too few of the "
                "last ones (refusal probability %.2f)",
                key or "every host",
                probability,
            )
        elif change == "stopped":
            _log_stop(key)
        return verdict

    def _verdict(
        self, host: _Host, probability: float, now: float
    ) -> tuple[int, str | None]:
        # The caller holds the lock.
        if probability == 0.0:
            verdict = ADMIT
            change = "stopped" if host.throttling else None
            host.throttling = False
            host.last_admitted = now
            return verdict, change
        if self._random() >= probability:
            # Let through while most are refused, it tells whether the server
            # is back: a probe too.
            verdict = PROBE if probability >= _PROBING else ADMIT
        elif host.last_admitted + self._probe_every <= now:
            # min_per_second: none went for a while (never, at first).
            verdict = PROBE
        else:
            self.refused += 1
            host.failures += 1  # refused: not accepted, and no answer comes
            host.now_failures += 1
            if host.throttling:
                return REFUSE, None
            host.throttling = True
            return REFUSE, "started"
        host.last_admitted = now
        return verdict, None

    def record(self, key: str, accepted: bool, probe: bool = False) -> None:
        """Count what the server did with a request :meth:`admit` let through
        (``probe``: it went as a probe).  An accept that was not a probe
        costs nothing: it was counted as accepted already."""
        if accepted and not probe:
            return
        lock = self._lock
        lock.acquire()
        try:
            host = self._hosts.get(key)
            if host is None:
                return  # forgotten meanwhile
            if not accepted:
                # In the host's latest slice (the clock is not read again).
                if host.failures < host.requests:
                    host.failures += 1
                    host.now_failures += 1
            elif host.failures > (1.0 - 1.0 / self.k) * host.requests:
                # An accepted probe, the server answers again: what came
                # before is history.
                host.forget_failures()
        finally:
            lock.release()

    def probability(self, host: str = "") -> float:
        """The refusal probability for a request to ``host`` now."""
        slot = int(self._clock() * self._per_slice)
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
        slot = int(self._clock() * self._per_slice)
        with self._lock:
            result = {}
            for key, host in self._hosts.items():
                if slot > host.slot:
                    host.advance(slot)
                result[key] = ThrottleStats(
                    host.requests,
                    host.requests - host.failures,
                    host.probability(self.k),
                )
            return result


def _log_stop(key: str) -> None:
    logger.warning(
        "stopped throttling requests to %s: the server accepts them again",
        key or "every host",
    )
