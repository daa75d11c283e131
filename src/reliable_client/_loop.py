"""Drivers of the retry loop: the only code that differs between sync and async.

:meth:`reliable_client._core.Call.steps` decides; a driver carries out each
step with blocking or awaitable I/O: make an attempt, read a body, discard a
response, sleep (or, in testing mode, record the sleep).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

import anyio
import httpx

from . import _testing_state
from ._core import _POP, THROTTLE_KEY, Call, Discard, Read, RetryCore, Step
from ._deadline import DeadlineStream
from ._outcome import RECORD_KEY, request_label
from ._policy import RetryPolicy
from ._throttle import OVERLOAD_STATUSES, _Host, accepted_error

__all__ = [
    "DRAIN_LIMIT",
    "adiscard",
    "aread_body",
    "aretry",
    "arun",
    "asend_call",
    "discard",
    "finish_first",
    "first_answer",
    "first_error",
    "read_body",
    "retry",
    "run",
    "send_call",
    "within",
]

BeforeRetry = Callable[[httpx.Request, httpx.Response], None]

DRAIN_LIMIT = 64 * 1024
"""Bytes of a discarded response's body read before it is closed, so that its
connection goes back to the pool for the retry (a longer body, or one of
unknown length, is closed unread: the connection is dropped)."""
DRAIN_SECONDS = 0.1
"""The most time spent reading such a body: a server that stalls in it loses
its connection instead of holding the retry up."""

_T = TypeVar("_T")


def first_answer(
    core: RetryCore,
    request: httpx.Request,
    policy: RetryPolicy,
    response: httpx.Response,
) -> bool:
    """A transport's first attempt answered: whether ``response`` is the
    call's answer (the common case, a set lookup) rather than one to retry."""
    status = response.status_code
    if core.throttle is not None:
        tell_first(core, request, status)
    return policy.max_attempts == 1 or status not in policy._judged_statuses


def first_error(
    core: RetryCore, request: httpx.Request, policy: RetryPolicy, exc: BaseException
) -> bool:
    """A call's first attempt raised ``exc``: whether the retry loop takes
    it (else it is the caller's)."""
    if core.throttle is not None:
        core.record_first(request, accepted_error(exc))
    return policy.max_attempts > 1


def finish_first(
    core: RetryCore,
    request: httpx.Request,
    policy: RetryPolicy,
    started: float,
    response: httpx.Response,
    *,
    bound: bool,
) -> httpx.Response:
    """The first attempt's answer, as the caller gets it.  ``bound``: its
    body, read by the caller, ends at the deadline (a transport's answer)."""
    if bound and policy.deadline is not None:
        _bound(response, request, started + policy.deadline, core.clock)
    response.extensions[RECORD_KEY] = core.first_try
    return response


def retry(
    core: RetryCore,
    request: httpx.Request,
    policy: RetryPolicy,
    started: float,
    response: httpx.Response | None,
    error: Exception | None,
    attempt: Callable[[], httpx.Response],
    sleep: Callable[[float], None],
    *,
    read: bool,
    bound: bool,
    before_retry: BeforeRetry | None = None,
) -> httpx.Response:
    """The retry loop of a call whose first attempt gave ``response`` or
    raised ``error``; ``read``: read the body inside the loop."""
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


async def aretry(
    core: RetryCore,
    request: httpx.Request,
    policy: RetryPolicy,
    started: float,
    response: httpx.Response | None,
    error: Exception | None,
    attempt: Callable[[], Awaitable[httpx.Response]],
    sleep: Callable[[float], Awaitable[None]],
    *,
    read: bool,
    bound: bool,
    before_retry: BeforeRetry | None = None,
) -> httpx.Response:
    """:func:`retry` with awaitable I/O."""
    call = Call(
        core,
        request,
        policy,
        started,
        label=request_label(request),
        before_retry=before_retry,
        aio=True,
    )
    result: httpx.Response = await arun(
        call.steps(response, error, read_body=read), attempt, sleep
    )
    if bound:
        _bound(result, request, call.deadline_at, core.clock)
    return result


def tell_first(
    core: RetryCore, request: httpx.Request, status: int, admitted: Any = _POP
) -> None:
    """Tell the throttle how a call's first attempt was answered (``status``,
    its body read unless streamed).  ``admitted``: what the throttle
    answered, if the caller took it off the request already."""
    if admitted is _POP:
        admitted = request.extensions.pop(THROTTLE_KEY, None)
    if admitted.__class__ is not _Host:  # a probe, or not asked
        core.record_first(request, status not in OVERLOAD_STATUSES, admitted)
    elif status not in OVERLOAD_STATUSES:
        admitted.answered.append(True)  # accepted: logged, no lock, no lookup
    else:
        assert core.throttle is not None
        core.throttle.failed(admitted)


def send_call(
    core: RetryCore,
    request: httpx.Request,
    policy: RetryPolicy,
    started: float,
    attempt: Callable[[], httpx.Response],
    sleep: Callable[[float], None],
    *,
    stream: bool = False,
    before_retry: BeforeRetry | None = None,
) -> httpx.Response:
    """A client's call: the first attempt, its body read inside the loop
    (rule 8) unless the caller ``stream``s it, and the retry loop if either
    failed."""
    read = not stream
    deadline = None if policy.deadline is None else started + policy.deadline
    throttle = core.throttle
    try:
        response = attempt()
        status = response.status_code
        final = policy.max_attempts == 1 or status not in policy._judged_statuses
        if final and read:
            read_body(response, request, deadline, core.clock)
        if throttle is not None:
            admitted = request.extensions.pop(THROTTLE_KEY, None)
            if admitted.__class__ is _Host and status not in OVERLOAD_STATUSES:
                admitted.answered.append(True)  # the common case: no call
            else:
                tell_first(core, request, status, admitted)
        if final:
            response.extensions[RECORD_KEY] = core.first_try
            return response
        error = None
    except Exception as exc:
        if not first_error(core, request, policy, exc):
            raise
        response, error = None, exc
    except BaseException as exc:
        # Cancelled (the caller's own timeout, say), or interrupted: not an
        # accept, and no answer either.
        first_error(core, request, policy, exc)
        raise
    return retry(
        core,
        request,
        policy,
        started,
        response,
        error,
        attempt,
        sleep,
        read=read,
        bound=False,
        before_retry=before_retry,
    )


async def asend_call(
    core: RetryCore,
    request: httpx.Request,
    policy: RetryPolicy,
    started: float,
    attempt: Callable[[], Awaitable[httpx.Response]],
    sleep: Callable[[float], Awaitable[None]],
    *,
    stream: bool = False,
    before_retry: BeforeRetry | None = None,
) -> httpx.Response:
    """:func:`send_call` with awaitable I/O.  With a deadline, each attempt
    (and each body read) is cancelled when it comes, whatever phase it is in."""
    read = not stream
    deadline = None if policy.deadline is None else started + policy.deadline
    if deadline is not None:
        attempt = within(attempt, request, deadline, core.clock)
    throttle = core.throttle
    try:
        response = await attempt()
        status = response.status_code
        final = policy.max_attempts == 1 or status not in policy._judged_statuses
        if final and read:
            await aread_body(response, request, deadline, core.clock)
        if throttle is not None:
            admitted = request.extensions.pop(THROTTLE_KEY, None)
            if admitted.__class__ is _Host and status not in OVERLOAD_STATUSES:
                admitted.answered.append(True)  # the common case: no call
            else:
                tell_first(core, request, status, admitted)
        if final:
            response.extensions[RECORD_KEY] = core.first_try
            return response
        error = None
    except Exception as exc:
        if not first_error(core, request, policy, exc):
            raise
        response, error = None, exc
    except BaseException as exc:
        # Cancelled (the caller's own timeout, say), or interrupted: not an
        # accept, and no answer either.
        first_error(core, request, policy, exc)
        raise
    return await aretry(
        core,
        request,
        policy,
        started,
        response,
        error,
        attempt,
        sleep,
        read=read,
        bound=False,
        before_retry=before_retry,
    )


def run(
    steps: Generator[Step, Any, Any],
    attempt: Callable[[], Any],
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    reply: Any = None
    try:
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
                discard(step.response, step.request)
            else:  # ATTEMPT
                try:
                    reply = (attempt(), None)
                except Exception as exc:
                    reply = (None, exc)
    except BaseException:
        steps.close()  # interrupted: the steps tell what was out
        raise


async def arun(
    steps: Generator[Step, Any, Any],
    attempt: Callable[[], Awaitable[Any]],
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> Any:
    reply: Any = None
    try:
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
                    await aread_body(
                        step.response, step.request, step.deadline, step.clock
                    )
                except Exception as exc:
                    reply = exc
            elif isinstance(step, Discard):
                await adiscard(step.response)
            else:  # ATTEMPT
                try:
                    reply = (await attempt(), None)
                except Exception as exc:
                    reply = (None, exc)
    except BaseException:
        steps.close()  # interrupted: the steps tell what was out
        raise


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
        if deadline is None:
            await response.aread()
        else:
            await within(response.aread, request, deadline, clock)()
    except BaseException:
        await response.aclose()
        raise


def within(
    work: Callable[[], Awaitable[_T]],
    request: httpx.Request,
    deadline: float,
    clock: Callable[[], float],
) -> Callable[[], Awaitable[_T]]:
    """``work``, cancelled at ``deadline`` (a ``clock()`` reading) as a
    ``ReadTimeout``: an async attempt ends in time in every phase, a
    trickle of header bytes included."""

    async def bounded() -> _T:
        try:
            with anyio.fail_after(max(deadline - clock(), 0.0)):
                return await work()
        except TimeoutError:
            raise httpx.ReadTimeout(
                "the retry deadline passed during the attempt", request=request
            ) from None

    return bounded


def _drainable(response: httpx.Response) -> bool:
    if hasattr(response, "_content"):
        return False  # read already
    length = response.headers.get("Content-Length", "")
    return length.isdigit() and int(length) <= DRAIN_LIMIT


def discard(response: httpx.Response, request: httpx.Request | None = None) -> None:
    """Close a response that a retry replaces, reading a small body of known
    length first (for at most DRAIN_SECONDS) so that the retry can reuse its
    connection (rule 7)."""
    try:
        if _drainable(response):
            if request is not None:
                drained_by = time.monotonic() + DRAIN_SECONDS
                _bound(response, request, drained_by, time.monotonic)
            response.read()
    except Exception:
        pass  # a broken or stalled body: closing drops the connection
    finally:
        response.close()


async def adiscard(response: httpx.Response) -> None:
    try:
        if _drainable(response):
            with anyio.move_on_after(DRAIN_SECONDS):
                await response.aread()
    except Exception:
        pass
    finally:
        await response.aclose()
