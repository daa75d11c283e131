"""Per-task state that lets an outer retry layer (the decorator) own retries.

Inside a decorated call, clients and transports make one attempt per request
and leave retrying to the decorator, so that layers never multiply.  The
decorator also replays, attempt after attempt, the keys that the first attempt
used: the k-th keyed request of every attempt gets the k-th key pair.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["KeyJournal", "OuterLayer", "outer_layer"]


class KeyJournal:
    """The (key, resource id) pairs handed out during one decorated call.

    Attempt after attempt, a keyed request gets the pair of the first
    attempt's request with the same method, URL and body (so that tasks
    which reach their requests in another order still get their own keys);
    failing that, the pair at its position, so that the k-th keyed request
    of every attempt reuses the k-th pair of the first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[Hashable, tuple[str, str]]] = []
        self._used: set[int] = set()
        self._position = 0

    def rewind(self) -> None:
        """Start a new attempt: hand out the recorded pairs again."""
        with self._lock:
            self._position = 0
            self._used = set()

    def take(
        self, fingerprint: Hashable, make: Callable[[], tuple[str, str]]
    ) -> tuple[str, str]:
        """The pair for this request: a recorded one, or ``make()`` recorded."""
        with self._lock:
            position = self._position
            self._position += 1
            for index, (recorded, pair) in enumerate(self._entries):
                if index not in self._used and recorded == fingerprint:
                    self._used.add(index)
                    return pair
            if position < len(self._entries) and position not in self._used:
                self._used.add(position)
                return self._entries[position][1]
            pair = make()
            self._used.add(len(self._entries))
            self._entries.append((fingerprint, pair))
            return pair


@dataclass
class OuterLayer:
    """Marks a call whose retries belong to an enclosing decorator."""

    journal: KeyJournal = field(default_factory=KeyJournal)
    deadline_at: float | None = None
    """The decorator's deadline as a ``time.monotonic()`` reading: requests
    made inside the call get no more time than is left."""


outer_layer: ContextVar[OuterLayer | None] = ContextVar(
    "reliable_client_outer_layer", default=None
)
