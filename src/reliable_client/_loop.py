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
                read_body(step.response)
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
                await aread_body(step.response)
            except Exception as exc:
                reply = exc
        elif isinstance(step, Discard):
            await step.response.aclose()
        else:  # ATTEMPT
            try:
                reply = (await attempt(), None)
            except Exception as exc:
                reply = (None, exc)


def read_body(response: httpx.Response) -> None:
    """Read the raw body into memory, so that a failure mid-body happens here,
    inside the retry loop.  The client then decodes it as usual."""
    stream = response.stream
    if isinstance(stream, httpx.ByteStream):
        return  # already in memory
    assert isinstance(stream, httpx.SyncByteStream)
    try:
        content = b"".join(stream)
    finally:
        stream.close()
    response.stream = httpx.ByteStream(content)


async def aread_body(response: httpx.Response) -> None:
    stream = response.stream
    if isinstance(stream, httpx.ByteStream):
        return
    assert isinstance(stream, httpx.AsyncByteStream)
    try:
        content = b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()
    response.stream = httpx.ByteStream(content)
