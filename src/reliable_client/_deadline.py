"""A deadline over every phase of an attempt: connect, write, each read.

httpx's timeouts bound each network operation on its own, so an attempt made
of several phases (connect, send the request, read the headers, read a body
that trickles in) could take several times the time left.  Two pieces keep a
call inside its deadline:

- :class:`Remaining`, the request's ``"timeout"`` extension while a deadline
  applies: every ``get`` returns the configured timeout cut to the time left
  *now*, and httpcore reads it afresh at the start of each phase;
- :class:`DeadlineStream` around a response body: each chunk is checked
  against the deadline and, on an HTTP/1.1 connection made by httpcore, each
  network read is given no more than the time left, so a body that trickles
  one byte at a time still ends at the deadline.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import httpx

__all__ = ["DeadlineStream", "Remaining", "bound_timeouts"]

Clock = Callable[[], float]
_PHASES = ("connect", "read", "write", "pool")
# The least time a phase is given, so that a timeout of 0 never means "none".
_FLOOR = 0.001


class Remaining(dict[str, Any]):
    """Timeouts (seconds) cut to the time left before ``deadline`` (a
    ``clock()`` reading) each time one is read."""

    __slots__ = ("clock", "configured", "deadline")

    def __init__(
        self, timeouts: Mapping[str, Any], deadline: float, clock: Clock
    ) -> None:
        super().__init__(timeouts)
        for name in _PHASES:
            self.setdefault(name, None)
        self.configured = dict(timeouts)
        """The timeouts as configured, before the deadline cut them."""
        self.deadline = deadline
        self.clock = clock

    def left(self) -> float:
        return max(self.deadline - self.clock(), _FLOOR)

    def get(self, name: str, default: Any = None) -> Any:
        value = super().get(name, default)
        if name not in _PHASES:
            return value
        left = self.left()
        return left if value is None else min(value, left)

    def __getitem__(self, name: str) -> Any:
        if name not in self:
            raise KeyError(name)
        return self.get(name)


def bound_timeouts(request: httpx.Request, deadline: float, clock: Clock) -> None:
    """Make ``request``'s timeouts end at ``deadline`` (a ``clock()``
    reading)."""
    timeouts = request.extensions.get("timeout") or {}
    if isinstance(timeouts, Remaining):
        timeouts = timeouts.configured
    request.extensions["timeout"] = Remaining(timeouts, deadline, clock)


def _past(request: httpx.Request, deadline: float, clock: Clock) -> None:
    if clock() >= deadline:
        raise httpx.ReadTimeout(
            "the retry deadline passed while the body was arriving", request=request
        )


def _capped_reads(
    response: httpx.Response, deadline: float, clock: Clock
) -> Callable[[], None] | None:
    """Give each network read of ``response``'s body no more than the time
    left; return what undoes it, or ``None`` where it cannot be done.

    Only for HTTP/1.1, where the connection serves this one response while its
    body is read (an HTTP/2 connection is shared by other requests).
    """
    if response.http_version != "HTTP/1.1":
        return None
    network = response.extensions.get("network_stream")
    read = getattr(network, "read", None)
    if read is None:
        return None
    if inspect.iscoroutinefunction(read):

        async def aread(max_bytes: int, timeout: float | None = None) -> bytes:
            left = max(deadline - clock(), _FLOOR)
            data: bytes = await read(
                max_bytes, left if timeout is None else min(timeout, left)
            )
            return data

        capped: Any = aread
    else:

        def capped(max_bytes: int, timeout: float | None = None) -> bytes:
            left = max(deadline - clock(), _FLOOR)
            return read(max_bytes, left if timeout is None else min(timeout, left))  # type: ignore[no-any-return]

    try:
        network.read = capped  # type: ignore[union-attr]
    except (AttributeError, TypeError):  # a stream class with __slots__
        return None

    def undo() -> None:
        del network.read  # type: ignore[union-attr]

    return undo


class DeadlineStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that ends, as a ``ReadTimeout``, at ``deadline``."""

    def __init__(
        self,
        stream: Any,
        response: httpx.Response,
        request: httpx.Request,
        deadline: float,
        clock: Clock,
    ) -> None:
        self._stream = stream
        self._response = response
        self._request = request
        self._deadline = deadline
        self._clock = clock

    def __iter__(self) -> Iterator[bytes]:
        request = self._request
        undo = _capped_reads(self._response, self._deadline, self._clock)
        try:
            _past(request, self._deadline, self._clock)
            for chunk in self._stream:
                _past(request, self._deadline, self._clock)
                yield chunk
        finally:
            if undo is not None:
                undo()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        request = self._request
        undo = _capped_reads(self._response, self._deadline, self._clock)
        try:
            _past(request, self._deadline, self._clock)
            async for chunk in self._stream:
                _past(request, self._deadline, self._clock)
                yield chunk
        finally:
            if undo is not None:
                undo()

    def close(self) -> None:
        self._stream.close()

    async def aclose(self) -> None:
        await self._stream.aclose()
