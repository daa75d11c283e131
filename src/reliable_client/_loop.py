"""Drivers of the retry loop: the only code that differs between sync and async.

:meth:`reliable_client._core.Call.steps` decides; a driver carries out each
step with blocking or awaitable I/O: make an attempt, read a body, discard a
response, sleep (or, in testing mode, record the sleep).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import anyio
import httpx

from . import _testing_state
from ._core import Call, Discard, Read, RetryCore, Step
from ._deadline import DeadlineStream
from ._outcome import RECORD_KEY, request_label
from ._policy import RetryPolicy
from ._throttle import accepted_error, accepted_status

__all__ = [
    "DRAIN_LIMIT",
    "adiscard",
    "aread_body",
    "arun",
    "asend_call",
    "discard",
    "read_body",
    "run",
    "send_call",
]

BeforeRetry = Callable[[httpx.Request, httpx.Response], None]

DRAIN_LIMIT = 64 * 1024
"""Bytes of a discarded response's body read before it is closed, so that its
connection goes back to the pool for the retry (a longer body, or one of
unknown length, is closed unread: the connection is dropped)."""


def send_call(
    core: RetryCore,
    request: httpx.Request,
    policy: RetryPolicy,
    started: float,
    attempt: Callable[[], httpx.Response],
    sleep: Callable[[float], None],
    *,
    read: bool,
    bound: bool = False,
    before_retry: BeforeRetry | None = None,
) -> httpx.Response:
    """One call: its first attempt and, if that failed, the retry loop.

    ``read``: read the body inside the loop (a client's non-streamed
    response).  ``bound``: make the body the caller reads end at the deadline
    (what a transport returns).  A first attempt that answers is the common
    case, and costs a set lookup.
    """
    retrying = policy.max_attempts > 1
    throttle = core.throttle
    response = None
    try:
        response = attempt()
        if throttle is not None:
            core.record_first(request, accepted_status(response.status_code))
        if not retrying or response.status_code not in policy._judged_statuses:
            deadline = None if policy.deadline is None else started + policy.deadline
            if read:
                read_body(response, request, deadline, core.clock)
            elif bound:
                _bound(response, request, deadline, core.clock)
            response.extensions[RECORD_KEY] = core.first_try
            return response
        error = None
    except Exception as exc:
        if throttle is not None and response is None:
            core.record_first(request, accepted_error(exc))
        if not retrying:
            raise
        response, error = None, exc
    call = Call(
        core,
        request,
        policy,
        started,
        label=request_label(request),
        before_retry=before_retry,
    )
    result: httpx.Response = run(
        call.steps(response, error, read_body=read), attempt, sleep
    )
    if bound:
        _bound(result, request, call.deadline_at, core.clock)
    return result


async def asend_call(
    core: RetryCore,
    request: httpx.Request,
    policy: RetryPolicy,
    started: float,
    attempt: Callable[[], Awaitable[httpx.Response]],
    sleep: Callable[[float], Awaitable[None]],
    *,
    read: bool,
    bound: bool = False,
    before_retry: BeforeRetry | None = None,
) -> httpx.Response:
    """:func:`send_call` with awaitable I/O."""
    retrying = policy.max_attempts > 1
    throttle = core.throttle
    response = None
    try:
        response = await attempt()
        if throttle is not None:
            core.record_first(request, accepted_status(response.status_code))
        if not retrying or response.status_code not in policy._judged_statuses:
            deadline = None if policy.deadline is None else started + policy.deadline
            if read:
                await aread_body(response, request, deadline, core.clock)
            elif bound:
                _bound(response, request, deadline, core.clock)
            response.extensions[RECORD_KEY] = core.first_try
            return response
        error = None
    except Exception as exc:
        if throttle is not None and response is None:
            core.record_first(request, accepted_error(exc))
        if not retrying:
            raise
        response, error = None, exc
    call = Call(
        core,
        request,
        policy,
        started,
        label=request_label(request),
        before_retry=before_retry,
    )
    result: httpx.Response = await arun(
        call.steps(response, error, read_body=read), attempt, sleep
    )
    if bound:
        _bound(result, request, call.deadline_at, core.clock)
    return result


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
            discard(step.response)
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
            await adiscard(step.response)
        else:  # ATTEMPT
            try:
                reply = (await attempt(), None)
            except Exception as exc:
                reply = (None, exc)


def _bound(
    response: httpx.Response,
    request: httpx.Request,
    deadline: float | None,
    clock: Callable[[], float],
) -> None:
    if deadline is not None:
        response.stream = DeadlineStream(
            response.stream, response, request, deadline, clock
        )


def read_body(
    response: httpx.Response,
    request: httpx.Request,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Read the body of a non-streamed response, as httpx's ``send`` would,
    but inside the retry loop so that a failure mid-body can be retried.  A
    body still arriving at ``deadline`` (a ``clock()`` reading) is a
    ``ReadTimeout``; on any failure the response is closed."""
    _bound(response, request, deadline, clock)
    try:
        response.read()
    except BaseException:
        response.close()
        raise


async def aread_body(
    response: httpx.Response,
    request: httpx.Request,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    _bound(response, request, deadline, clock)
    try:
        await response.aread()
    except BaseException:
        await response.aclose()
        raise


def _drainable(response: httpx.Response) -> bool:
    if hasattr(response, "_content"):
        return False  # read already
    length = response.headers.get("Content-Length", "")
    return length.isdigit() and int(length) <= DRAIN_LIMIT


def discard(response: httpx.Response) -> None:
    """Close a response that a retry replaces, reading a small body of known
    length first so that the retry can reuse its connection (rule 7)."""
    try:
        if _drainable(response):
            response.read()
    except Exception:
        pass  # a broken body: closing drops the connection, as it must
    finally:
        response.close()


async def adiscard(response: httpx.Response) -> None:
    try:
        if _drainable(response):
            await response.aread()
    except Exception:
        pass
    finally:
        await response.aclose()
