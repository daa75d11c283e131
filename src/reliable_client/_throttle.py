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

The formula applies only within a window of the host's last overload answer
(a 503, a timeout, a cancelled attempt, ...) or, with probes, of its last
refusal.  Before any, nothing is refused: requests still out
are not accepts, and a fresh client's burst of concurrent first calls (or a
slow but healthy server's calls in flight) would otherwise look like an
outage.  It also makes the common case cheap: a request to a host with no
recent overload answer is logged and sent without the lock.

The formula is also taken over the window's last fifth (its two latest
slices), and the higher of the two applies.  Over the whole window alone, a
healthy past shields an outage: 10 s of accepts at 200 a second let the next
4,000 failures through before the first refusal, half a window of full
traffic to a server that is down.  The short horizon sees the outage within
a second or two, as the probes see the recovery.

Two additions make the recovery quick.  At least ``min_per_second`` requests
a host go through whatever the probability: those are probes, and a probe
that the server accepts ends the throttling at once (the window forgets the
failures before it), so a recovered server gets its traffic back within about
``1 / min_per_second`` seconds instead of a whole window.  A false dawn costs
little: failures push the probability back up within a fraction of a second.
A request the draw lets through is not a probe: its accept resets nothing,
and a server in a partial overload gets the SRE formula's share.

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
    "accepted",
    "accepted_error",
    "accepted_status",
]

SLOTS = 10
_OWNER = "AdaptiveThrottle"
logger = logging.getLogger("reliable_client")

# Requests logged without the lock before they are counted in under it.
_LOGGED = 1024

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


def accepted_error(exc: BaseException) -> bool | None:
    """Whether an attempt that raised ``exc`` counts as accepted: not for a
    timeout or a connection error (the server may be overloaded); ``None``
    for a cancellation or an interruption (the caller gave up: see
    :meth:`AdaptiveThrottle.record`)."""
    if not isinstance(exc, Exception):
        return None
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
    """Requests the server accepted in the window (counted when their
    answers came)."""
    probability: float
    """The refusal probability now, in ``[0, 1)``."""


class _Host:
    """One host's requests and accepts over the last ``SLOTS`` slices.

    Requests are counted when asked for (:meth:`AdaptiveThrottle.admit`),
    accepts when the answer comes: a request still in flight is not
    accepted (yet), so once a server that hangs has timed out one request,
    the others still waiting count against it.
    In the common case both are logged without the lock (``asked`` and
    ``answered``, lists whose appends are atomic) and counted in when the
    lock is next taken (at least once a slice).  The slice under way
    is in ``now_requests``/``now_accepts``, the one before in
    ``last_requests``/``last_accepts`` (the short horizon), older ones in
    ``ring``; ``requests``/``accepts`` are the window's totals.
    """

    __slots__ = (
        "accepts",
        "answered",
        "asked",
        "failed_until",
        "key",
        "last_accepts",
        "last_requests",
        "now_accepts",
        "now_requests",
        "open_from",
        "probed",
        "requests",
        "ring",
        "slot",
        "throttling",
        "tokens",
    )

    def __init__(self, key: str, slot: int, now: float, tokens: float) -> None:
        self.key = key
        self.ring = [[0, 0] for _ in range(SLOTS)]  # per slice: requests, accepts
        self.requests = self.accepts = 0
        self.now_requests = self.now_accepts = 0
        self.last_requests = self.last_accepts = 0
        self.slot = slot
        self.answered: list[bool] = []  # accepted answers not counted yet
        self.asked: list[bool] = []  # requests not counted yet
        self.tokens = tokens  # probes that may go now
        self.probed = now  # when the tokens were last topped up
        self.throttling = False
        # A window after the last overload answer: until then the counts
        # decide (a request still out is not an accept), from then on every
        # request goes (a fresh host's burst, or a slow but healthy server,
        # is never refused).  open_from: the same, or never while throttling.
        self.failed_until = self.open_from = -math.inf

    def count_answers(self) -> None:
        """Count in the requests and answers logged since (the caller holds
        the lock)."""
        for log in (self.asked, self.answered):
            count = len(log)
            if count:
                del log[:count]  # one step: appends meanwhile stay for later
                if log is self.asked:
                    self.requests += count
                    self.now_requests += count
                else:
                    self.accepts += count
                    self.now_accepts += count

    def advance(self, slot: int) -> None:
        """Move to slice ``slot``: the oldest slices leave the window."""
        self.count_answers()  # into the slice they were logged in
        ring = self.ring
        entry = ring[self.slot % SLOTS]
        entry[0], entry[1] = self.now_requests, self.now_accepts
        if slot - self.slot >= SLOTS:
            for entry in ring:
                entry[0] = entry[1] = 0
            self.requests = self.accepts = 0
        else:
            while self.slot < slot:
                self.slot += 1
                entry = ring[self.slot % SLOTS]
                self.requests -= entry[0]
                self.accepts -= entry[1]
                entry[0] = entry[1] = 0
        before = ring[(slot - 1) % SLOTS]
        self.last_requests, self.last_accepts = before[0], before[1]
        self.now_requests = self.now_accepts = 0
        self.slot = slot

    def probability(self, k: float) -> float:
        """The SRE formula over the window, or over its last fifth (this
        slice and the one before), whichever is higher."""
        return max(
            _formula(self.requests, self.accepts, k),
            _formula(
                self.now_requests + self.last_requests,
                self.now_accepts + self.last_accepts,
                k,
            ),
        )

    def forget_refusals(self) -> None:
        """The server answers again: forget every request it did not accept
        (refused here, failed, or still out), in every slice."""
        ring = self.ring
        for entry in ring:  # past slices (the current one's entry is empty)
            entry[0] = min(entry[0], entry[1])
        self.now_requests = min(self.now_requests, self.now_accepts)
        self.last_requests = ring[(self.slot - 1) % SLOTS][0]
        self.requests = sum(entry[0] for entry in ring) + self.now_requests
        self.accepts = sum(entry[1] for entry in ring) + self.now_accepts


def _formula(requests: int, accepts: int, k: float) -> float:
    """max(0, (requests - k x accepts) / (requests + 1)), in [0, 1)."""
    excess = requests - k * accepts
    return 0.0 if excess <= 0 or requests <= 0 else excess / (requests + 1)


class AdaptiveThrottle:
    """Refuse requests on the client while a server's recent answers mostly
    say "overloaded" (Google SRE's adaptive throttling).

    Args:
        k: how many requests per accepted one are let through before any is
            refused (default 2.0: nothing is refused while the server accepts
            at least half), ``>= 1``.  Lower refuses sooner.
        window: seconds of history (default 10.0), ``> 0``.
        min_per_second: probes a second let through to each host however
            high the refusal probability (default 1.0), ``>= 0``; up to four
            seconds' worth (at least one) go at once, so that a rare call and
            its retries get through.  An accepted probe ends the throttling at once.
        per_host: keep one history per host (default True); with False, one
            history for everything.
        clock: monotonic seconds (default ``time.monotonic``).
        random: floats in ``[0, 1)`` for the refusals (default
            ``random.random``); ``random.Random(seed).random`` to repeat them.

    Refuses a request with probability ``max(0, (requests - k x accepts) /
    (requests + 1))`` over the last ``window`` seconds (or over its last
    fifth, when that is higher: an outage is seen within a second or two
    however healthy the window was before it), where ``requests`` counts
    every request wanted (retries and refused ones included) and ``accepts``
    every answer that is not an overload signal (429, 502, 503, 504, a
    timeout, a connection error); never while no overload answer came from
    the host in the last ``window`` seconds.  A refused request raises
    :class:`ThrottledError` and is never sent.  Share one object between
    clients, transports and decorators; thread- and task-safe; O(1) a
    request; a host is forgotten once its counts have expired (about 1 KiB
    each while it is known).
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
        # Probes that may go at once: four seconds' worth, at least one.
        self._burst = max(1.0, 4.0 * self.min_per_second) if min_per_second else 0.0
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

    def _forget_idle(self, slot: int, keep: str | None, stopped: list[str]) -> None:
        """Forget hosts whose every count has expired, least recently used
        first (the caller holds the lock; names of throttled ones go to
        ``stopped``, to be logged after it is released)."""
        hosts = self._hosts
        while hosts:
            oldest_key, oldest = next(iter(hosts.items()))
            if slot - oldest.slot < SLOTS or oldest_key == keep:
                return
            hosts.popitem(last=False)
            if oldest.throttling:
                stopped.append(oldest_key)

    def _host(self, key: str, slot: int, now: float, stopped: list[str]) -> _Host:
        """The history ``key`` at slice ``slot``, made or moved on: once a
        slice per host (the caller holds the lock)."""
        self._forget_idle(slot, key, stopped)
        hosts = self._hosts
        host = hosts.get(key)
        if host is None:
            host = hosts[key] = _Host(key, slot, now, self._burst)
            return host
        hosts.move_to_end(key)
        if slot > host.slot:
            host.advance(slot)
        return host

    def admit(self, key: str, now: float | None = None) -> int:
        """Count a request to the history ``key`` and say whether to send it:
        :data:`ADMIT`, :data:`PROBE` (let through by ``min_per_second`` to
        learn whether the server is back) or :data:`REFUSE`.  Report what
        the server did with an admitted one to :meth:`record`.  ``now``: a
        reading of this throttle's clock just taken by the caller."""
        entered = self.enter(key, now)
        return entered if isinstance(entered, int) else ADMIT

    def enter(self, key: str, now: float | None = None) -> _Host | int:
        """:meth:`admit`, for the engine: a plain admission answers the
        host's history itself, whose answer can then be logged with
        :func:`accepted` (no lookup); else :data:`PROBE` or :data:`REFUSE`
        (or :data:`ADMIT` in testing mode)."""
        mode = _testing_state._current
        if mode is not None and mode.throttle is not None:
            return REFUSE if mode.throttle else ADMIT
        if now is None:
            now = self._clock()
        slot = now * self._per_slice // 1.0  # a float; the slow path makes it int
        host = self._hosts.get(key)
        if (
            host is not None
            and host.slot == slot
            and now >= host.open_from
            and len(host.asked) < _LOGGED
        ):
            # The common case, without the lock: no overload answer for a
            # window, so the request goes; it is logged, to be counted in.
            host.asked.append(True)
            return host
        return self._admit(key, int(slot), now)

    def _admit(self, key: str, slot: int, now: float) -> _Host | int:
        """:meth:`admit` past its common case: a new slice or host, or a
        server that accepts too little."""
        k = self.k
        stopped: list[str] = []
        change: str | None = None
        with self._lock:
            host = self._hosts.get(key)
            if host is None or host.slot != slot:
                host = self._host(key, slot, now, stopped)
            host.count_answers()
            if now >= host.failed_until or (
                host.requests <= k * host.accepts
                and host.now_requests + host.last_requests
                <= k * (host.now_accepts + host.last_accepts)
            ):
                host.requests += 1
                host.now_requests += 1
                if host.throttling:
                    host.throttling = False
                    host.open_from = host.failed_until
                    stopped.append(key)
                verdict = ADMIT
            else:
                probability = host.probability(k)
                host.requests += 1
                host.now_requests += 1
                verdict, change = self._verdict(host, probability, now)
        if change is not None:
            logger.warning(
                "throttling requests to %s: the server accepted too few of the "
                "last ones (refusal probability %.2f)",
                key or "every host",
                probability,
                extra={"host": key, "probability": probability},
            )
        for name in stopped:
            _log_stop(name)
        return host if verdict == ADMIT else verdict

    def _verdict(
        self, host: _Host, probability: float, now: float
    ) -> tuple[int, str | None]:
        # The caller holds the lock.
        if probability == 0.0:
            return ADMIT, None
        if self._random() >= probability:
            # Let through by the draw: not a probe, so that a server in a
            # partial overload keeps the formula's share (about k times what
            # it accepts), not its whole traffic at each lucky answer.
            return ADMIT, None
        tokens = min(
            self._burst, host.tokens + (now - host.probed) * self.min_per_second
        )
        host.probed = now
        if tokens >= 1.0:
            host.tokens = tokens - 1.0
            return PROBE, None
        host.tokens = tokens
        self.refused += 1
        if self.min_per_second:
            # While refusing, the probes decide when it ends (an accepted one
            # does), not the time since the last failure: a probe still out
            # to a server that hangs longer than the window says nothing yet.
            host.failed_until = now + self.window
        if host.throttling:
            return REFUSE, None
        host.throttling = True
        host.open_from = math.inf  # the lock decides until it stops
        return REFUSE, "started"

    def record(self, key: str, accepted: bool | None, probe: bool = False) -> None:
        """Report what the server did with a request :meth:`admit` let
        through (``probe``: it went as a probe).  An accept is logged at
        once, without the lock.  A failure closes the gate for a window (the
        request counts as not accepted already).  ``None``: no answer, the
        caller gave up (a cancellation, its own timeout): not an accept, and
        an overload signal only if the host has accepted nothing lately (a
        hedged request's loser, cancelled once another answered, is not)."""
        if not accepted:
            self._failed(key, None, gave_up=accepted is None)
            return
        host = self._hosts.get(key)
        if host is None:
            return  # forgotten meanwhile: an accept changes nothing then
        if not probe:
            host.answered.append(True)
            return
        with self._lock:
            host.count_answers()
            host.accepts += 1
            host.now_accepts += 1
            if host.requests > self.k * host.accepts:
                # An accepted probe: the server answers again, what came
                # before is history.
                host.forget_refusals()

    def failed(self, history: _Host, gave_up: bool = False) -> None:
        """The server answered a request that :meth:`enter` let go plainly
        (``history``, what it answered) with an overload signal (or, with
        ``gave_up``, the caller stopped waiting: see :meth:`record`)."""
        self._failed(history.key, history, gave_up=gave_up)

    def _failed(
        self, key: str, counted_in: _Host | None, *, gave_up: bool = False
    ) -> None:
        """An overload answer from the history ``key``: for a window from now
        the counts decide whether requests go.  ``counted_in``: the history
        the request was counted in, if known."""
        mode = _testing_state._current
        if mode is not None and mode.throttle is not None:
            return  # testing mode decides, and counts nothing
        now = self._clock()
        stopped: list[str] = []
        with self._lock:  # rare, and ordered with the throttling's start
            known = self._hosts.get(key)
            host = self._host(key, int(now * self._per_slice), now, stopped)
            if host is not (counted_in or known):
                # Forgotten while this request was out (it took longer than a
                # window): the history starts again, with this request in it.
                host.requests += 1
                host.now_requests += 1
            host.count_answers()
            # A caller that gave up while the server answers others made its
            # own choice (a hedged call's loser): no overload signal then.
            if not (gave_up and host.now_accepts + host.last_accepts):
                host.failed_until = now + self.window
                if not host.throttling:
                    host.open_from = host.failed_until
        for name in stopped:
            _log_stop(name)

    def _view(self, host: _Host, now: float) -> tuple[int, int, float]:
        """A host's (requests, accepts, probability) at ``now``, without
        moving it (the caller holds the lock)."""
        host.count_answers()
        slot = int(now * self._per_slice)
        if slot <= host.slot:
            return host.requests, host.accepts, self._probability(host, now)
        copy = _Host(host.key, host.slot, host.probed, host.tokens)
        copy.ring = [list(entry) for entry in host.ring]
        copy.requests, copy.accepts = host.requests, host.accepts
        copy.now_requests, copy.now_accepts = host.now_requests, host.now_accepts
        copy.last_requests, copy.last_accepts = host.last_requests, host.last_accepts
        copy.failed_until = host.failed_until
        copy.advance(slot)
        return copy.requests, copy.accepts, self._probability(copy, now)

    def _probability(self, host: _Host, now: float) -> float:
        return 0.0 if now >= host.failed_until else host.probability(self.k)

    def probability(self, host: str = "") -> float:
        """The refusal probability for a request to ``host`` now."""
        now = self._clock()
        with self._lock:
            found = self._hosts.get(self.key(host))
            return 0.0 if found is None else self._view(found, now)[2]

    @property
    def stats(self) -> dict[str, ThrottleStats]:
        """Each host's requests, accepts and refusal probability over the
        window (the key ``""`` with ``per_host=False``)."""
        now = self._clock()
        stopped: list[str] = []
        with self._lock:
            self._forget_idle(int(now * self._per_slice), None, stopped)
            result = {
                key: ThrottleStats(*self._view(host, now))
                for key, host in self._hosts.items()
            }
        for name in stopped:
            _log_stop(name)
        return result


def accepted(history: _Host) -> None:
    """The server accepted a request that :meth:`AdaptiveThrottle.enter` let
    go plainly (``history``, what it answered): counted without the lock."""
    history.answered.append(True)


def _log_stop(key: str) -> None:
    logger.warning(
        "stopped throttling requests to %s: the server accepts them again",
        key or "every host",
        extra={"host": key},
    )
