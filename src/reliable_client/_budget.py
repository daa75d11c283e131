"""RetryBudget: a shared limit on retries, so that failures never multiply traffic.

Modelled on the budgets of Finagle and Linkerd: every first attempt deposits
``ratio`` of a retry, every retry withdraws one, a reserve of
``min_per_second * ttl`` retries keeps a floor for low traffic, and deposits
expire after ``ttl`` seconds, so the budget forgets old traffic.

Time is cut into ``SLOTS`` slices of ``ttl / SLOTS`` seconds.  To keep the
promise exact despite the slicing, deposits are counted only while their whole
slice lies within the last ``ttl`` seconds, and withdrawals stay counted one
slice longer than ``ttl``.  So at the moment of every retry it allows:

    retries in the last ttl seconds
        <= ratio * first attempts in the last ttl seconds + min_per_second * ttl
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ._validation import check_bool, check_number

__all__ = ["BudgetStats", "RetryBudget"]

SLOTS = 10
_OWNER = "RetryBudget"


@dataclass(frozen=True)
class BudgetStats:
    """A snapshot of a budget's counters (since it was made)."""

    first_attempts: int
    """First attempts seen (deposits)."""
    retries: int
    """Retries the budget allowed."""
    refused_by_budget: int
    """Retries the budget refused."""
    gave_up: int
    """Calls that ended on a retryable failure (reported by the callers)."""
    balance: float
    """Retries the budget would allow right now (all hosts together)."""

    @property
    def attempts(self) -> int:
        """Requests sent: first attempts plus allowed retries."""
        return self.first_attempts + self.retries


class _Window:
    """Deposits and withdrawals over the last ``ttl`` seconds, in slices."""

    __slots__ = (
        "deposited",
        "deposits",
        "slot",
        "withdrawals",
        "withdrawn",
    )

    def __init__(self, slot: int) -> None:
        # Ring of SLOTS + 1 entries: withdrawals live one slice longer.
        self.deposits = [0] * (SLOTS + 1)
        self.withdrawals = [0] * (SLOTS + 1)
        self.deposited = 0  # over slices slot-SLOTS+1 .. slot
        self.withdrawn = 0  # over slices slot-SLOTS .. slot
        self.slot = slot

    def advance(self, slot: int) -> None:
        if slot <= self.slot:
            return
        size = SLOTS + 1
        if slot - self.slot >= size:
            self.deposits = [0] * size
            self.withdrawals = [0] * size
            self.deposited = self.withdrawn = 0
            self.slot = slot
            return
        while self.slot < slot:
            self.slot += 1
            # The slice SLOTS back stops counting as a deposit...
            self.deposited -= self.deposits[(self.slot - SLOTS) % size]
            # ...and the slice SLOTS + 1 back, whose ring entry the new slice
            # reuses, stops counting as a withdrawal.
            entry = self.slot % size
            self.withdrawn -= self.withdrawals[entry]
            self.deposits[entry] = 0
            self.withdrawals[entry] = 0

    def balance(self, ratio: float, reserve: float) -> float:
        return reserve + ratio * self.deposited - self.withdrawn

    def withdraw(self) -> None:
        self.withdrawals[self.slot % (SLOTS + 1)] += 1
        self.withdrawn += 1


class RetryBudget:
    """A limit on retries shared by clients, transports and decorators.

    Args:
        ratio: retries allowed per first attempt (default 0.2: at most 20% more
            traffic under a full outage), ``>= 0``.
        min_per_second: a floor of retries per second for low traffic (default
            10.0), ``>= 0``; the budget starts with ``min_per_second * ttl``.
        ttl: seconds after which a first attempt no longer earns retries
            (default 10.0), ``> 0``.
        per_host: keep one budget per host (default False), so that one failing
            host cannot spend the budget of a healthy one.  Hosts unseen for
            longer than ``ttl`` are forgotten (memory follows live hosts).
        clock: monotonic seconds (default ``time.monotonic``).

    Thread- and task-safe; O(1) per request; no background thread.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        ttl: float = 10.0,
        *,
        per_host: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = check_number(_OWNER, "ratio", ratio)
        self.min_per_second = check_number(_OWNER, "min_per_second", min_per_second)
        self.ttl = check_number(_OWNER, "ttl", ttl, allow_minimum=False)
        self.per_host = check_bool(_OWNER, "per_host", per_host)
        if not callable(clock):
            raise TypeError(f"{_OWNER}.clock must be callable")
        self.reserve = self.min_per_second * self.ttl
        self._clock = clock
        self._slice = self.ttl / SLOTS
        self._lock = threading.Lock()
        self._shared = _Window(math.floor(clock() / self._slice))
        # One window per host, or the shared one under the key "".
        # One window per host (least recently used first), or the shared one.
        self._windows: OrderedDict[str, _Window] = OrderedDict(
            () if per_host else (("", self._shared),)
        )
        self._first_attempts = 0
        self._retries = 0
        self._refused = 0
        self._gave_up = 0

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, min_per_second={self.min_per_second}, "
            f"ttl={self.ttl}, per_host={self.per_host})"
        )

    def _window(self, host: str | None, now: float | None = None) -> _Window:
        slot = math.floor((self._clock() if now is None else now) / self._slice)
        if not self.per_host:
            window = self._shared
        else:
            windows = self._windows
            self._forget_idle(slot)
            key = host or ""
            found = windows.get(key)
            if found is None:
                window = windows[key] = _Window(slot)
                return window
            window = found
            windows.move_to_end(key)  # least recently used first
        if slot > window.slot:
            window.advance(slot)
        return window

    def _forget_idle(self, slot: int) -> None:
        """Forget the hosts whose every deposit and withdrawal has expired (a
        fresh window stands for them exactly), so that memory follows the
        hosts seen in the last ``ttl``; O(1) amortised, as the least recently
        used host is first."""
        windows = self._windows
        while windows:
            window = next(iter(windows.values()))
            if slot - window.slot <= SLOTS:
                return
            windows.popitem(last=False)

    def deposit(self, host: str | None = None, now: float | None = None) -> None:
        """Record a first attempt (earns ``ratio`` of a retry for ``ttl``).

        ``now``: a reading of this budget's clock just taken by the caller,
        which saves reading it again (default: read it).
        """
        # Every request passes here: acquire/release costs half a with block.
        lock = self._lock
        lock.acquire()
        try:
            self._deposit(host, now)
        finally:
            lock.release()

    def _deposit(self, host: str | None, now: float | None) -> None:
        # The caller holds the lock.  The shared window is inline.
        if self.per_host:
            window = self._window(host, now)
        else:
            window = self._shared
            if now is None:
                now = self._clock()
            slot = math.floor(now / self._slice)
            if slot > window.slot:
                window.advance(slot)
        window.deposits[window.slot % (SLOTS + 1)] += 1
        window.deposited += 1
        self._first_attempts += 1

    def try_spend(self, host: str | None = None) -> bool:
        """Take one retry from the budget; ``False`` if none is left."""
        with self._lock:
            window = self._window(host)
            if window.balance(self.ratio, self.reserve) >= 1.0:
                window.withdraw()
                self._retries += 1
                return True
            self._refused += 1
            return False

    def record_gave_up(self) -> None:
        """Count a call that ended on a retryable failure."""
        with self._lock:
            self._gave_up += 1

    @property
    def balance(self) -> float:
        """Retries allowed right now (summed over the hosts seen in the last
        ``ttl`` when ``per_host``; the reserve when none was)."""
        with self._lock:
            if self.per_host:
                self._forget_idle(math.floor(self._clock() / self._slice))
            if not self._windows:
                return self.reserve
            return sum(
                self._window(key).balance(self.ratio, self.reserve)
                for key in list(self._windows)
            )

    @property
    def stats(self) -> BudgetStats:
        """A snapshot of the counters."""
        balance = self.balance
        with self._lock:
            return BudgetStats(
                first_attempts=self._first_attempts,
                retries=self._retries,
                refused_by_budget=self._refused,
                gave_up=self._gave_up,
                balance=balance,
            )
