"""Per-task state that lets an outer retry layer (the decorator) own retries.

Inside a decorated call, clients and transports make one attempt per request
and leave retrying to the decorator, so that layers never multiply.  The
decorator also replays, attempt after attempt, the keys that earlier attempts
used: the k-th keyed request to a method and URL gets the k-th pair made for
that method and URL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["KeyJournal", "OuterLayer", "outer_layer"]


class KeyJournal:
    """The (key, resource id) pairs handed out during one decorated call.

    Pairs are filed by the request's method and URL.  In every attempt, the
    k-th keyed request to one method and URL gets the k-th pair filed under
    them, made by the first attempt that sent such a request; a request that
    no earlier attempt made gets a fresh pair (filed for later attempts).  So
    a request never carries a key that was sent to another method or URL.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._taken: dict[tuple[str, str], int] = {}

    def rewind(self) -> None:
        """Start a new attempt: hand out the filed pairs again."""
        with self._lock:
            self._taken = {}

    def take(
        self, method: str, url: str, make: Callable[[], tuple[str, str]]
    ) -> tuple[str, str]:
        """The pair for this request: a filed one, or ``make()``, filed."""
        target = (method, url)
        with self._lock:
            taken = self._taken.get(target, 0)
            self._taken[target] = taken + 1
            pairs = self._pairs.setdefault(target, [])
            if taken == len(pairs):
                pairs.append(make())
            return pairs[taken]


@dataclass
class OuterLayer:
    """Marks a call whose retries belong to an enclosing decorator."""

    journal: KeyJournal = field(default_factory=KeyJournal)
    deadline_at: float | None = None
    """The decorator's deadline as a ``time.monotonic()`` reading: requests
    made inside the call get no more time than is left."""
    throttled: bool = False
    """The decorator asks a throttle before each attempt: the requests inside
    are not asked again (a client's own throttle decides otherwise)."""


outer_layer: ContextVar[OuterLayer | None] = ContextVar(
    "reliable_client_outer_layer", default=None
)
