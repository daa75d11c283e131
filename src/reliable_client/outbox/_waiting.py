"""Waiting for an entry's result: woken at once by a relay of this process,
and looking at the store every quarter second for another process's."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from ._model import OutboxEntry

__all__ = ["Waiters"]

#: Seconds between looks at the store while waiting for another process's
#: relay (this process's relays wake waiters at once).
POLL = 0.25


class Waiters:
    """Threads and tasks waiting for entries, by entry id.

    ``final(id)`` reads the entry and returns it once delivered or dead
    (None while pending; it raises KeyError for an unknown id).
    """

    def __init__(self, final: Callable[[str], OutboxEntry | None]) -> None:
        self._final = final
        self._lock = threading.Lock()
        self._waiting: dict[str, list[Callable[[], None]]] = {}

    def waiting(self, key: str) -> bool:
        """Whether anyone waits for entry ``key``."""
        with self._lock:
            return key in self._waiting

    def wake(self, key: str) -> None:
        """A relay of this process recorded the result of entry ``key``."""
        with self._lock:
            waiters = list(self._waiting.get(key, ()))
        for wake in waiters:
            wake()

    def wait(self, key: str, timeout: float | None) -> OutboxEntry:
        event = threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._registered(key, event.set):
            while True:
                entry = self._final(key)
                if entry is not None:
                    return entry
                left = POLL if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(_late(key, timeout))
                event.wait(min(left, POLL))
                event.clear()

    async def await_entry(self, key: str, timeout: float | None) -> OutboxEntry:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(event.set)

        deadline = None if timeout is None else loop.time() + timeout
        with self._registered(key, wake):
            while True:
                entry = await asyncio.to_thread(self._final, key)
                if entry is not None:
                    return entry
                left = POLL if deadline is None else deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(_late(key, timeout))
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, POLL))
                event.clear()

    @contextlib.contextmanager
    def _registered(self, key: str, wake: Callable[[], None]) -> Iterator[None]:
        with self._lock:
            self._waiting.setdefault(key, []).append(wake)
        try:
            yield
        finally:
            with self._lock:
                waiters = self._waiting.get(key, [])
                if wake in waiters:
                    waiters.remove(wake)
                if not waiters:
                    self._waiting.pop(key, None)


def _late(key: str, timeout: float | None) -> str:
    return f"outbox entry {key} was not delivered or dead within {timeout} s"
