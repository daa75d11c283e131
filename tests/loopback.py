"""The fault server of the test suite: reliable_client.testing.ChaosServer.

Kept under its old names so the tests read as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from reliable_client.testing import (
    Action,
    BrokenBody,
    ChaosServer,
    Close,
    Reply,
    Reset,
    Seen,
    SlowBody,
    Stall,
    closed_port,
)

__all__ = [
    "Action",
    "BrokenBody",
    "Close",
    "LoopbackServer",
    "Reply",
    "Reset",
    "Seen",
    "SlowBody",
    "Stall",
    "closed_port",
    "serve",
]

LoopbackServer = ChaosServer


@contextmanager
def serve() -> Iterator[ChaosServer]:
    with ChaosServer(lifetime=300.0) as server:
        yield server
