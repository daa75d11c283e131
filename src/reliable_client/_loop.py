"""Drivers of the retry loop: the only code that differs between sync and async.

:meth:`reliable_client._core.Call.steps` decides; a driver carries out each
step with blocking or awaitable I/O: make an attempt, read a body, close a
response, sleep (or, in testing mode, record the sleep).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import anyio
import httpx

from . import _testing_state
from ._core import Discard, Read, Step

__all__ = ["aread_body", "arun", "read_body", "run"]


def run(
    steps: Generator[Step, Any, Any],
    attempt: Callable[[], Any],
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    reply: Any = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration as done:
            return done.value
        reply = None
        if isinstance(step, float):
            if not _testing_state.intercept(step):
                sleep(step)
        elif isinstance(step, Read):
            try:
                read_body(step.response, step.request, step.deadline, step.clock)
            except Exception as exc:
                reply = exc
        elif isinstance(step, Discard):
            step.response.close()
        else:  # ATTEMPT
            try:
                reply = (attempt(), None)
            except Exception as exc:
                reply = (None, exc)


async def arun(
    steps: Generator[Step, Any, Any],
    attempt: Callable[[], Awaitable[Any]],
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> Any:
    reply: Any = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration as done:
            return done.value
        reply = None
        if isinstance(step, float):
            if _testing_state.intercept(step):
                await anyio.sleep(0)  # still a checkpoint for cancellation
            else:
                await sleep(step)
        elif isinstance(step, Read):
            try:
                await aread_body(step.response, step.request, step.deadline, step.clock)
            except Exception as exc:
                reply = exc
        elif isinstance(step, Discard):
            await step.response.aclose()
        else:  # ATTEMPT
            try:
                reply = (await attempt(), None)
            except Exception as exc:
                reply = (None, exc)


def read_body(
    response: httpx.Response,
    request: httpx.Request,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Read the raw body into memory, so that a failure mid-body happens here,
    inside the retry loop.  The client then decodes it as usual.  A body
    still arriving at ``deadline`` (a ``clock()`` reading) is a ReadTimeout."""
    stream = response.stream
    if isinstance(stream, httpx.ByteStream):
        return  # already in memory
    assert isinstance(stream, httpx.SyncByteStream)
    chunks = []
    try:
        for chunk in stream:
            chunks.append(chunk)
            _check_deadline(request, deadline, clock)
    finally:
        stream.close()
    response.stream = httpx.ByteStream(b"".join(chunks))


async def aread_body(
    response: httpx.Response,
    request: httpx.Request,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    stream = response.stream
    if isinstance(stream, httpx.ByteStream):
        return
    assert isinstance(stream, httpx.AsyncByteStream)
    chunks = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
            _check_deadline(request, deadline, clock)
    finally:
        await stream.aclose()
    response.stream = httpx.ByteStream(b"".join(chunks))


def _check_deadline(
    request: httpx.Request, deadline: float | None, clock: Callable[[], float]
) -> None:
    # Timeouts bound each read; only this bounds a body that trickles in.
    if deadline is not None and clock() >= deadline:
        raise httpx.ReadTimeout(
            "the retry deadline passed while the body was arriving", request=request
        )
