"""What a forked child does with the stores it inherited from its parent.

The parent's connections are the parent's: the child never uses them, and
never closes them the way a client does (that would end the parent's
sessions, or write to its database files).  Right after the fork, each
store of the process gives them up (a PostgreSQL store closes the child's
copies of their sockets, so that a parent that dies does not leave its
sessions open behind a living child) and takes fresh locks (another thread
of the parent may have held one at the fork; in the child it never lets
go).  The child then opens connections of its own as it needs them.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Protocol

__all__ = ["ForkAware", "keep_inherited", "watch"]


class ForkAware(Protocol):
    def after_fork_in_child(self) -> None:
        """Give up what the parent held (called in the child, at once)."""


_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()
# Inherited connections, kept so that the child never finalizes one (a
# finalizer may close or flush what belongs to the parent).
_INHERITED: list[object] = []


def watch(store: ForkAware) -> None:
    """Have ``store.after_fork_in_child()`` called in every forked child."""
    _WATCHED.add(store)


def keep_inherited(connections: list[Any]) -> None:
    _INHERITED.extend(connections)


def _after_fork_in_child() -> None:
    for store in list(_WATCHED):
        store.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
