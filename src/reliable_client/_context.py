"""Per-task state that lets an outer retry layer (the decorator) own retries.

Inside a decorated call, clients and transports make one attempt per request
and leave retrying to the decorator, so that layers never multiply.  The
decorator also replays, attempt after attempt, the keys that the first attempt
used: the k-th keyed request of every attempt gets the k-th key pair.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["KeyJournal", "OuterLayer", "outer_layer"]


@dataclass
class KeyJournal:
    """The (key, resource id) pairs handed out during one decorated call."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    position: int = 0

    def rewind(self) -> None:
        """Start a new attempt: hand out the recorded pairs again, in order."""
        self.position = 0

    def next_pair(self) -> tuple[str, str] | None:
        """The pair recorded at this position (``None`` past the recorded ones);
        moves on to the next position."""
        position = self.position
        self.position += 1
        return self.pairs[position] if position < len(self.pairs) else None

    def record(self, pair: tuple[str, str]) -> None:
        """Record the pair handed out at the position just taken."""
        self.pairs.append(pair)


@dataclass
class OuterLayer:
    """Marks a call whose retries belong to an enclosing decorator."""

    journal: KeyJournal = field(default_factory=KeyJournal)


outer_layer: ContextVar[OuterLayer | None] = ContextVar(
    "reliable_client_outer_layer", default=None
)
