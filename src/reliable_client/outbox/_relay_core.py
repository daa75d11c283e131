"""What the sync and async relays share: their workers' steps, slots and
claims, the leases they renew (here), what a delivery records
(:mod:`._delivery`).  The relays themselves (``_relay.py``, ``_arelay.py``)
only do the I/O.

Workers: a relay runs ``concurrency`` workers, each delivering one entry at
a time.  A worker that needs an entry takes one claimed ahead, or claims
(its own and up to seven ahead, while there is a backlog) and, in the same store
call, records every result that waits to be recorded: one statement for the
results of several deliveries, no central loop to wait for.  When every
worker has been busy with one delivery for a while (a slow endpoint), the
relay adds extra one-shot workers, up to ``concurrency`` of them, each for
an endpoint with nothing running, so that one slow endpoint cannot stall
the others.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._delivery import DeliveryBook, Label, logger
from ._model import Claimed, Result

if TYPE_CHECKING:
    from ._outbox import Outbox

__all__ = ["DEFAULT_CONCURRENCY", "Label", "RelayCore", "logger", "new_holder"]


DEFAULT_CONCURRENCY = 8
# Entries a regular worker claims, at most, beyond the one it delivers (taken
# by the next free workers without a store call), while there is a backlog:
# one claim, and one statement recording results, for up to eight
# deliveries.  Never more than the other workers can take (none for a relay
# of concurrency 1).
CLAIM_AHEAD = 7
# Seconds all slots must have been busy before an endpoint with nothing
# running may take an extra one.
OVERFLOW_AFTER = 0.5
# Seconds a result may wait for a worker's store call before the relay's
# loop records it.
RECORD_AFTER = 0.02
# Seconds between purges of old entries by a running relay, and the most
# batches (of 500 rows, one transaction each) per purge.
PURGE_EVERY = 60.0
PURGE_BATCHES = 4


def new_holder() -> str:
    """Who holds a lease: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


@dataclass(frozen=True)
class Finished:
    """A delivery's result, waiting to be recorded."""

    claimed: Claimed
    result: Result
    label: Label
    since: float  # time.monotonic() when it was ready


@dataclass(frozen=True)
class Plan:
    """What a worker's next store call does: record ``items`` (results of
    any worker's deliveries), claim ``want`` entries; ``took``: an entry
    claimed ahead, to deliver."""

    items: list[Finished]
    want: int
    took: Claimed | None

    @property
    def results(self) -> list[tuple[Claimed, Result]]:
        return [(item.claimed, item.result) for item in self.items]

    @property
    def calls_store(self) -> bool:
        return bool(self.items) or self.want > 0

    @property
    def empty(self) -> bool:
        return not self.calls_store and self.took is None


@dataclass
class _Held:
    claimed: Claimed
    started: float  # time.monotonic() when claimed
    renewed: float
    extra: bool = False  # held by an extra one-shot worker
    sending: float | None = None  # time.monotonic() when its delivery began


class RelayCore(DeliveryBook):
    """The state of one ``deliver``/``run`` (sync or async): its slots,
    claims and leases (here), and what its deliveries record
    (:class:`DeliveryBook`)."""

    def __init__(self, outbox: Outbox, concurrency: int, limit: int | None) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise TypeError(
                f"concurrency must be an int, got {type(concurrency).__name__}"
            )
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.outbox = outbox
        self.store = outbox._store
        self.policy = outbox._redelivery
        self.lease = outbox.lease
        self.concurrency = concurrency
        self.holder = new_holder()
        self.held: dict[int, _Held] = {}
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._limit = limit
        self._reserved = 0
        self._extras = 0  # extra workers running
        self._extra_quiet_until = 0.0
        self._next_purge = 0.0
        # Claimed ahead (a worker claims two while there is a backlog), not
        # being delivered yet: the next free worker takes one from here.
        self._ready: deque[Claimed] = deque()
        self._unrecorded: list[Finished] = []
        self._claim_size = 1 + min(CLAIM_AHEAD, concurrency - 1)

    # -- claims ----------------------------------------------------------------

    def reserve(self, count: int) -> int:
        """How many more entries (of ``count``) a worker may claim (``limit``)."""
        with self._lock:
            if self._limit is not None:
                count = max(0, min(count, self._limit - self._reserved))
            self._reserved += count
            return count

    def unreserve(self, count: int) -> None:
        with self._lock:
            self._reserved -= count

    def take_ready(self, exclude: list[str] | None = None) -> Claimed | None:
        """An entry claimed ahead (for an extra worker: one whose endpoint
        has nothing being sent)."""
        with self._lock:
            if exclude is None:
                return self._ready.popleft() if self._ready else None
            sending = {
                h.claimed.endpoint for h in self.held.values() if h.sending is not None
            }
            for claimed in self._ready:
                if claimed.endpoint not in sending:
                    self._ready.remove(claimed)
                    return claimed
            return None

    def drain_ready(self) -> list[Claimed]:
        with self._lock:
            items = list(self._ready)
            self._ready.clear()
        return items

    def extra_worker(self, now: float) -> list[str] | None:
        """The endpoints an extra worker must leave out (those with a delivery
        running), if one should start now: every worker has held one
        delivery for ``OVERFLOW_AFTER`` seconds, and fewer than
        ``concurrency`` extra workers run."""
        with self._lock:
            regular = self._sending_since()
            if (
                len(regular) < self.concurrency
                or self._extras >= self.concurrency
                or now < self._extra_quiet_until
                or now - min(regular) < OVERFLOW_AFTER
            ):
                return None
            self._extras += 1
            self._extra_quiet_until = float("inf")  # until this one has claimed
            return sorted({h.claimed.endpoint for h in self.held.values() if h.sending})

    def extra_claimed(self, found: bool, now: float, poll: float) -> None:
        """An extra worker's claim came back (empty: look again in ``poll``
        seconds, or as soon as a delivery ends)."""
        with self._lock:
            self._extra_quiet_until = now if found else now + poll

    def extra_done(self) -> None:
        with self._lock:
            self._extras -= 1

    def purge_due(self, now: float) -> bool:
        """Whether a running relay should purge old entries now."""
        if now < self._next_purge:
            return False
        self._next_purge = now + PURGE_EVERY
        return True

    def let_go(self, claimed: Claimed) -> None:
        with self._lock:
            self.forget(claimed)

    def forget(self, claimed: Claimed) -> None:
        """Hold ``claimed`` no more (the lock held); a newer claim of its
        entry (this relay's own, after its lease ran out) stays held."""
        held = self.held.get(claimed.seq)
        if held is not None and held.claimed.token == claimed.token:
            del self.held[claimed.seq]
        if self._extra_quiet_until != float("inf"):
            self._extra_quiet_until = 0.0  # a slot is free: look again

    def busy(self) -> int:
        with self._lock:
            return len(self.held)

    def finish(self, claimed: Claimed, result: Result, label: Label) -> None:
        """A delivery ended: its result is recorded with the next store call
        of any worker (or by the relay's loop, when it has waited a while)."""
        with self._lock:
            self._unrecorded.append(Finished(claimed, result, label, time.monotonic()))

    def take_results(self, older_than: float = 0.0) -> list[Finished]:
        """The results not yet recorded (if the oldest waited ``older_than``
        seconds)."""
        with self._lock:
            items = self._unrecorded
            if not items or time.monotonic() - items[0].since < older_than:
                return []
            self._unrecorded = []
        return items

    def has_results(self) -> bool:
        with self._lock:
            return bool(self._unrecorded)

    def plan(
        self, exclude: list[str] | None, *, stopping: bool, claims_left: int
    ) -> Plan:
        """What a worker does next: take an entry claimed ahead, or claim
        (two for a regular worker: one to deliver, one ahead; one for an
        extra worker, whose claim leaves ``exclude`` out), recording with
        that claim every result waiting to be recorded."""
        took = None
        want = 0
        if claims_left != 0 and not stopping:
            took = self.take_ready(exclude)
            if took is None:
                want = self.reserve(1 if exclude is not None else self._claim_size)
        # An entry claimed ahead is delivered without a store call; results
        # wait for the next one (or for the relay's loop).
        items = [] if took is not None else self.take_results()
        return Plan(items, want, took)

    def settled(
        self,
        plan: Plan,
        written: list[bool],
        batch: list[Claimed],
        *,
        extra: bool,
        poll: float,
    ) -> Claimed | None:
        """Book a worker's store call; return the entry it delivers next."""
        now = time.monotonic()
        self.recorded(plan.items, written)
        if plan.want and len(batch) < plan.want:
            self.unreserve(plan.want - len(batch))
        if extra and (plan.want or plan.took is not None):
            self.extra_claimed(bool(batch) or plan.took is not None, now, poll)
        entries = ([plan.took] if plan.took is not None else []) + batch
        if not entries:
            return None
        with self._lock:
            for claimed in batch:
                self.held[claimed.seq] = _Held(claimed, now, now)
            self._ready.extend(entries[1:])
            held = self.held.get(entries[0].seq)
            if held is not None:
                held.sending, held.extra = now, extra
        return entries[0]

    def recorded(self, items: list[Finished], written: list[bool]) -> None:
        self.done(
            [
                (item.claimed, item.result, ok, item.label)
                for item, ok in zip(items, written, strict=True)
            ]
        )

    def settle_failed(self, plan: Plan, *, extra: bool, poll: float) -> None:
        """The store failed a worker's call: its claim is undone, its results
        wait to be recorded (a lease at most: after it, another relay may
        hold the entry and delivers it again, with the same key)."""
        if plan.want:
            self.unreserve(plan.want)
            if extra:
                self.extra_claimed(False, time.monotonic(), poll)
        if plan.took is not None:
            with self._lock:
                self._ready.appendleft(plan.took)
        self.not_recorded(plan.items)

    def not_recorded(self, items: list[Finished], *, final: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for item in items:
            if now - item.since < self.lease and not final:
                keep.append(item)
                continue
            logger.error(
                "outbox entry %s: result not recorded (the store fails); it will "
                "be delivered again, with the same key, after its lease",
                item.claimed.id,
            )
            self.done([(item.claimed, item.result, False, item.label)])
        with self._lock:
            self._unrecorded[:0] = keep

    def _sending_since(self) -> list[float]:
        """When the regular workers' deliveries began (lock held)."""
        return [
            h.sending
            for h in self.held.values()
            if not h.extra and h.sending is not None
        ]

    def has_ready(self) -> bool:
        with self._lock:
            return bool(self._ready)

    # -- leases ------------------------------------------------------------------

    def renewals(self, now: float) -> list[tuple[int, int]]:
        """The leases to renew now (a third of the lease since the last)."""
        with self._lock:
            due = [
                (h.claimed.seq, h.claimed.token)
                for h in self.held.values()
                if now - h.renewed >= self.lease / 3
            ]
            for seq, _ in due:
                self.held[seq].renewed = now
            return due

    def renewed(self, asked: list[tuple[int, int]], kept: set[int]) -> None:
        for seq, _ in asked:
            if seq not in kept:
                logger.warning(
                    "outbox entry seq %d: lease taken over by another relay; "
                    "its result will not be recorded here",
                    seq,
                )

    def next_wake(self, now: float, poll: float) -> float:
        """Seconds until something is due: a renewal, an extra worker, a
        result to record."""
        wait = poll
        with self._lock:
            if self._unrecorded:
                wait = min(wait, self._unrecorded[0].since + RECORD_AFTER - now)
            for h in self.held.values():
                wait = min(wait, h.renewed + self.lease / 3 - now)
            regular = self._sending_since()
            if len(regular) >= self.concurrency:
                ready = max(min(regular) + OVERFLOW_AFTER, self._extra_quiet_until)
                wait = min(wait, ready - now)
        return max(wait, 0.001)


def record_delays() -> Callable[[], float]:
    """Pauses between tries to record a result while the store fails."""
    pause = [0.05]

    def next_pause() -> float:
        value = pause[0]
        pause[0] = min(value * 2, 1.0)
        return value

    return next_pause
