"""RetryTransport and AsyncRetryTransport: retries around any httpx transport."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import httpx

from ._budget import RetryBudget
from ._core import Call, RetryCore, client_send
from ._idempotency import Idempotency
from ._loop import aread_body, arun, read_body, run
from ._outcome import RECORD_KEY, ClientStats, OnRetry, request_label
from ._policy import RetryPolicy

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
        )
        self._sleep = sleep or time.sleep

    @property
    def transport(self) -> httpx.BaseTransport:
        """The wrapped transport."""
        return self._transport

    @classmethod
    def _around(cls, transport: httpx.BaseTransport, core: RetryCore) -> RetryTransport:
        """Wrap ``transport`` with an existing engine (a client's, shared by
        all the transports it mounts)."""
        wrapper = object.__new__(cls)
        wrapper._transport = transport
        wrapper._core = core
        wrapper._sleep = time.sleep
        return wrapper

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        sending = client_send.get()
        policy, started = core.prepare(request, sending)
        try:
            response = self._transport.handle_request(request)
        except Exception as exc:
            if policy.max_attempts == 1:
                raise
            return self._retry(request, policy, started, None, exc, sending)
        if policy.max_attempts > 1:
            if response.status_code in policy._judged_statuses:
                return self._retry(request, policy, started, response, None, sending)
            # The first attempt answered: the common case, kept cheap.
            if sending and not isinstance(response.stream, httpx.ByteStream):
                try:
                    read_body(response, request, _deadline(policy, started), core.clock)
                except Exception as exc:
                    return self._retry(request, policy, started, None, exc, sending)
        response.extensions[RECORD_KEY] = core.first_try
        return response

    def _retry(
        self,
        request: httpx.Request,
        policy: RetryPolicy,
        started: float,
        response: httpx.Response | None,
        error: Exception | None,
        sending: bool | None,
    ) -> httpx.Response:
        call = Call(self._core, request, policy, started, label=request_label(request))
        steps = call.steps(response, error, read_body=sending is True)
        result: httpx.Response = run(
            steps, lambda: self._transport.handle_request(request), self._sleep
        )
        return result

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
        )
        self._sleep = sleep or anyio.sleep

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The wrapped transport."""
        return self._transport

    @classmethod
    def _around(
        cls, transport: httpx.AsyncBaseTransport, core: RetryCore
    ) -> AsyncRetryTransport:
        """Wrap ``transport`` with an existing engine (a client's, shared by
        all the transports it mounts)."""
        wrapper = object.__new__(cls)
        wrapper._transport = transport
        wrapper._core = core
        wrapper._sleep = anyio.sleep
        return wrapper

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        sending = client_send.get()
        policy, started = core.prepare(request, sending)
        try:
            response = await self._transport.handle_async_request(request)
        except Exception as exc:
            if policy.max_attempts == 1:
                raise
            return await self._retry(request, policy, started, None, exc, sending)
        if policy.max_attempts > 1:
            if response.status_code in policy._judged_statuses:
                return await self._retry(
                    request, policy, started, response, None, sending
                )
            # The first attempt answered: the common case, kept cheap.
            if sending and not isinstance(response.stream, httpx.ByteStream):
                try:
                    await aread_body(
                        response, request, _deadline(policy, started), core.clock
                    )
                except Exception as exc:
                    return await self._retry(
                        request, policy, started, None, exc, sending
                    )
        response.extensions[RECORD_KEY] = core.first_try
        return response

    async def _retry(
        self,
        request: httpx.Request,
        policy: RetryPolicy,
        started: float,
        response: httpx.Response | None,
        error: Exception | None,
        sending: bool | None,
    ) -> httpx.Response:
        call = Call(self._core, request, policy, started, label=request_label(request))
        steps = call.steps(response, error, read_body=sending is True)
        result: httpx.Response = await arun(
            steps, lambda: self._transport.handle_async_request(request), self._sleep
        )
        return result

    async def aclose(self) -> None:
        await self._transport.aclose()


def _deadline(policy: RetryPolicy, started: float) -> float | None:
    return None if policy.deadline is None else started + policy.deadline
