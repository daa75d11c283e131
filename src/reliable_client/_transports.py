"""RetryTransport and AsyncRetryTransport: retries around any httpx transport."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
import httpx

from . import _observe
from ._budget import RetryBudget
from ._core import OUTER_KEY, RetryCore
from ._idempotency import Idempotency
from ._loop import aretry, finish_first, first_answer, first_error, retry, within
from ._outcome import RECORD_KEY, ClientStats, OnRetry
from ._policy import RetryPolicy
from ._throttle import AdaptiveThrottle

__all__ = ["AsyncRetryTransport", "RetryTransport"]

_DEFAULT_IDEMPOTENCY = Idempotency()


class _RetryTransportBase:
    """What both transports share: configuration, counters and the engine."""

    _core: RetryCore

    @property
    def retry(self) -> RetryPolicy:
        """The default policy of this transport."""
        return self._core.policy

    @property
    def budget(self) -> RetryBudget:
        """The retry budget this transport spends from."""
        return self._core.budget

    @property
    def idempotency(self) -> Idempotency | None:
        return self._core.idempotency

    @property
    def stats(self) -> ClientStats:
        """A snapshot of this transport's counters."""
        return self._core.counters.snapshot()


class RetryTransport(_RetryTransportBase, httpx.BaseTransport):
    """Wraps an ``httpx.BaseTransport`` and retries what is safe to retry.

    Usable with a plain ``httpx.Client(transport=RetryTransport(...))``.  A
    request can override the policy with ``extensions={"retry": policy}`` (or
    ``False``).  Sees responses up to their headers; ``reliable_client.Client``
    also retries failures while reading a body.

    Args:
        transport: the transport to wrap (default ``httpx.HTTPTransport()``).
        retry: the default :class:`RetryPolicy`, or ``False`` for no retries.
        budget: a :class:`RetryBudget` to spend retries from (default: a new
            one for this transport); share one object between transports to
            share the limit.
        idempotency: which requests get keys and ids (:class:`Idempotency`),
            or ``None`` for none.
        on_retry: called with a :class:`RetryEvent` before each retry and when
            retrying is stopped early.
        throttle: an :class:`AdaptiveThrottle` (default ``None``: off).
        clock: monotonic seconds, for deadlines (default ``time.monotonic``).
        sleep: sleeps the given seconds (default ``time.sleep``).
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        retry: RetryPolicy | bool = RetryPolicy(),  # noqa: B008 - immutable
        budget: RetryBudget | None = None,
        idempotency: Idempotency | None = _DEFAULT_IDEMPOTENCY,
        on_retry: OnRetry | None = None,
        throttle: AdaptiveThrottle | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if transport is None:
            transport = httpx.HTTPTransport()
        elif not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                "RetryTransport(transport=...) must be an httpx.BaseTransport, "
                f"got {type(transport).__name__}"
            )
        self._transport = transport
        self._core = RetryCore(
            retry=retry,
            budget=budget,
            idempotency=idempotency,
            on_retry=on_retry,
            clock=clock,
            owner="RetryTransport",
            throttle=throttle,
        )
        self._sleep = sleep or time.sleep

    @property
    def transport(self) -> httpx.BaseTransport:
        """The wrapped transport."""
        return self._transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if OUTER_KEY in request.extensions:
            # A reliable client (or transport) above owns this request's
            # retries and keys: one attempt, as it asked.
            return self._transport.handle_request(request)
        observer = _observe.observer
        if observer is not None and _observe.KEY not in request.extensions:
            return _observe.observed(
                observer.call,
                request,
                self._core.budget,
                # Through the class: an instrumentation wrapping this object
                # (instrument_client) is not entered twice.
                lambda: RetryTransport.handle_request(self, request),
            )
        core = self._core
        transport = self._transport
        try:
            policy, started = core.prepare(request)
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = transport.handle_request(request)
            except Exception as exc:
                if not first_error(core, request, policy, exc):
                    raise
                error = exc
            except BaseException as exc:  # cancelled: the caller gave up
                first_error(core, request, policy, exc)
                raise
            else:
                if first_answer(core, request, policy, response):
                    return finish_first(
                        core, request, policy, started, response, bound=True
                    )
            return retry(
                core,
                request,
                policy,
                started,
                response,
                error,
                partial(transport.handle_request, request),
                self._sleep,
                read=False,
                bound=True,
            )
        finally:
            request.extensions.pop(OUTER_KEY, None)

    def close(self) -> None:
        self._transport.close()


class AsyncRetryTransport(_RetryTransportBase, httpx.AsyncBaseTransport):
    """Wraps an ``httpx.AsyncBaseTransport``; see :class:`RetryTransport`.

    ``sleep`` is an async function (default ``anyio.sleep``, which never blocks
    the event loop and works under asyncio and trio).
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        retry: RetryPolicy | bool = RetryPolicy(),  # noqa: B008 - immutable
        budget: RetryBudget | None = None,
        idempotency: Idempotency | None = _DEFAULT_IDEMPOTENCY,
        on_retry: OnRetry | None = None,
        throttle: AdaptiveThrottle | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if transport is None:
            transport = httpx.AsyncHTTPTransport()
        elif not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                "AsyncRetryTransport(transport=...) must be an "
                f"httpx.AsyncBaseTransport, got {type(transport).__name__}"
            )
        self._transport = transport
        self._core = RetryCore(
            retry=retry,
            budget=budget,
            idempotency=idempotency,
            on_retry=on_retry,
            clock=clock,
            owner="AsyncRetryTransport",
            throttle=throttle,
        )
        self._sleep = sleep or anyio.sleep

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The wrapped transport."""
        return self._transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if OUTER_KEY in request.extensions:
            return await self._transport.handle_async_request(request)
        observer = _observe.observer
        if observer is not None and _observe.KEY not in request.extensions:
            return await _observe.aobserved(
                observer.acall,
                request,
                self._core.budget,
                lambda: AsyncRetryTransport.handle_async_request(self, request),
            )
        core = self._core
        transport = self._transport
        try:
            policy, started = core.prepare(request)
            if policy.deadline is None and core.throttle is None:
                # The common case, inline: no deadline, no throttle.
                try:
                    first = await transport.handle_async_request(request)
                except Exception as exc:
                    if policy.max_attempts == 1:
                        raise
                    return await aretry(
                        core,
                        request,
                        policy,
                        started,
                        None,
                        exc,
                        partial(transport.handle_async_request, request),
                        self._sleep,
                        read=False,
                        bound=True,
                    )
                if (
                    policy.max_attempts == 1
                    or first.status_code not in policy._judged_statuses
                ):
                    first.extensions[RECORD_KEY] = core.first_try
                    return first
                return await aretry(
                    core,
                    request,
                    policy,
                    started,
                    first,
                    None,
                    partial(transport.handle_async_request, request),
                    self._sleep,
                    read=False,
                    bound=True,
                )
            attempt: Callable[[], Awaitable[httpx.Response]] = partial(
                transport.handle_async_request, request
            )
            if policy.deadline is not None:
                attempt = within(
                    attempt, request, started + policy.deadline, core.clock
                )
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await attempt()
            except Exception as exc:
                if not first_error(core, request, policy, exc):
                    raise
                error = exc
            except BaseException as exc:  # cancelled: the caller gave up
                first_error(core, request, policy, exc)
                raise
            else:
                if first_answer(core, request, policy, response):
                    return finish_first(
                        core, request, policy, started, response, bound=True
                    )
            return await aretry(
                core,
                request,
                policy,
                started,
                response,
                error,
                attempt,
                self._sleep,
                read=False,
                bound=True,
            )
        finally:
            request.extensions.pop(OUTER_KEY, None)

    async def aclose(self) -> None:
        await self._transport.aclose()
