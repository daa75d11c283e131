"""What the outbox holds and what its parts hand each other.

:class:`OutboxEntry` is what the application reads; :class:`NewEntry`,
:class:`Claimed` and :class:`Result` travel between the Outbox API, the
relays and the stores, which all speak in them.  Times are seconds since the
epoch (floats), read from the store's clock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

import httpx

__all__ = [
    "DEAD",
    "DELIVERED",
    "PENDING",
    "STATES",
    "Claimed",
    "DeliveryCounts",
    "NewEntry",
    "OutboxEntry",
    "OutboxError",
    "Result",
    "State",
]

State = Literal["pending", "delivered", "dead"]
PENDING: State = "pending"
DELIVERED: State = "delivered"
DEAD: State = "dead"
STATES: tuple[State, ...] = (PENDING, DELIVERED, DEAD)

Pairs = tuple[tuple[str, str], ...]


class OutboxError(Exception):
    """The outbox cannot do what was asked: a target that cannot be opened, a
    schema from another version, a store that fails.  The message names the
    target (a PostgreSQL password is never shown); ``__cause__`` holds the
    driver's own error."""


@dataclass(frozen=True)
class OutboxEntry:
    """One call written down in the outbox, and what became of it."""

    id: uuid.UUID
    """The entry's id (UUIDv7); ``outbox.get()`` takes it or its ``str()``."""
    idempotency_key: str
    """Sent as the Idempotency-Key on every attempt of every delivery."""
    resource_id: str
    """The client-generated resource id, the same on every attempt."""
    method: str
    url: str
    """As enqueued: absolute, or a path resolved against the relay client's
    ``base_url``."""
    group: str | None
    state: State
    """``"pending"``, ``"delivered"`` or ``"dead"``."""
    attempts: int
    """HTTP requests the relays recorded sending (a delivery cut short by a
    crash is not known to have sent anything, and is not counted)."""
    deliveries: int
    """Delivery passes begun (each may send several attempts)."""
    last_error: str | None
    """Why the last delivery did not deliver ("status 503", "ReadTimeout")."""
    status: int | None
    """The status of the final response (delivered or dead), else None."""
    response_headers: httpx.Headers = field(compare=False)
    """The final response's headers (``Set-Cookie`` is never kept)."""
    response_body: bytes | None
    """The final response's body, cut to the outbox's ``max_response_body``."""
    already_existed: bool
    """A 303 See Other answered: the server had made the resource already."""
    created_at: float
    """When it was enqueued (seconds since the epoch, store clock)."""
    delivered_at: float | None
    """When it was delivered, else None."""
    due_at: float | None = None
    """When a pending entry is next due, else None."""


@dataclass(frozen=True)
class NewEntry:
    """An entry ready to be written (made by ``enqueue``)."""

    id: str
    idempotency_key: str
    resource_id: str
    method: str
    url: str
    endpoint: str
    """``host/path`` (no query): relays spread their slots over endpoints."""
    headers: Pairs
    body: bytes | None
    fingerprint: str
    """Method, URL, the caller's body and group, hashed: a caller's key
    enqueued again must come with the same ones."""
    group: str | None


@dataclass(frozen=True)
class Claimed:
    """An entry a relay holds under a lease until it records a result."""

    seq: int
    token: int
    """The fencing token: raised by every claim, checked by every write."""
    id: str
    idempotency_key: str
    resource_id: str
    method: str
    url: str
    endpoint: str
    headers: Pairs
    body: bytes | None
    group: str | None
    deliveries: int
    """Deliveries begun, this one included."""
    attempts: int
    """Requests recorded before this delivery."""
    created_at: float
    horizon_from: float
    """When the redelivery deadline started: ``created_at``, or the time of
    a retry by hand."""
    claimed_at: float
    """The store's clock when it was claimed."""
    read_at: float = field(default_factory=time.monotonic, compare=False)
    """``time.monotonic()`` when the claim was read (this process's clock)."""


@dataclass(frozen=True)
class Result:
    """What a delivery ended in, to be recorded."""

    state: State
    attempts: int
    """Requests sent by this delivery."""
    reason: str | None = None
    """Why it did not deliver (stored as ``last_error``)."""
    status: int | None = None
    response_headers: Pairs = ()
    response_body: bytes | None = None
    already_existed: bool = False
    delay: float | None = None
    """Seconds until a pending entry is due again."""


@dataclass(frozen=True)
class DeliveryCounts(Mapping[str, int]):
    """What one ``deliver``/``adeliver`` pass (or a ``run``) did: read the
    attributes or use it as a mapping (``counts["delivered"]``)."""

    delivered: int = 0
    dead: int = 0
    rescheduled: int = 0
    """Deliveries that ended in a redelivery later."""
    lost: int = 0
    """Results not recorded because another relay had taken the entry over
    (its lease had run out): the newer holder's result stands."""
    released: int = 0
    """Entries given back unsent (on stop)."""

    def __getitem__(self, key: str) -> int:
        if key not in _COUNT_NAMES:
            raise KeyError(key)
        value: int = getattr(self, key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(_COUNT_NAMES)

    def __len__(self) -> int:
        return len(_COUNT_NAMES)

    @property
    def total(self) -> int:
        """Deliveries made (delivered + dead + rescheduled + lost)."""
        return self.delivered + self.dead + self.rescheduled + self.lost


_COUNT_NAMES = tuple(f.name for f in fields(DeliveryCounts))
