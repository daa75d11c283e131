"""Client and AsyncClient: httpx clients that retry what is safe to retry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal, cast

import anyio
import httpx
from httpx import URL, Headers, Request, Response
from httpx._client import USE_CLIENT_DEFAULT, UseClientDefault
from httpx._types import (
    AuthTypes,
    CookieTypes,
    HeaderTypes,
    QueryParamTypes,
    RequestContent,
    RequestData,
    RequestExtensions,
    RequestFiles,
    TimeoutTypes,
)

from . import _observe
from ._budget import RetryBudget
from ._cookies import refresh_cookie_header
from ._core import OUTER_KEY, RETRY_KEY, RetryCore, resolve_policy
from ._idempotency import Idempotency
from ._loop import asend_call, send_call
from ._outcome import ClientStats, OnRetry
from ._policy import RetryPolicy
from ._throttle import AdaptiveThrottle
from ._transports import AsyncRetryTransport, RetryTransport

__all__ = ["AsyncClient", "Client"]

_DEFAULT_IDEMPOTENCY = Idempotency()
_DEFAULT_POLICY = RetryPolicy()


def _with_retry(
    extensions: RequestExtensions | None,
    retry: RetryPolicy | Literal[False] | None,
) -> RequestExtensions | None:
    if retry is None:
        return extensions
    resolve_policy(retry, "retry=")  # a clear TypeError before anything is sent
    return {**(extensions or {}), RETRY_KEY: retry}


class _RetryClientMixin:
    """What both clients add to httpx's: the retry engine and its counters."""

    _retry_core: RetryCore

    def _set_up_retries(
        self,
        owner: str,
        retry: RetryPolicy | bool,
        budget: RetryBudget | None,
        idempotency: Idempotency | None,
        on_retry: OnRetry | None,
        throttle: AdaptiveThrottle | None,
    ) -> None:
        """Build the retry engine (a bad value raises before httpx builds
        anything)."""
        self._retry_core = RetryCore(
            retry=retry,
            budget=budget,
            idempotency=idempotency,
            on_retry=on_retry,
            clock=None,
            owner=owner,
            throttle=throttle,
        )
        self._given = (retry, budget, idempotency, on_retry, throttle)

    def _adopt(self, owner: str) -> None:
        """Given a RetryTransport as ``transport=``, the client takes that
        transport's settings for those it was not given itself; the transport
        then makes one attempt per request (the client owns the retries)."""
        transport = self._transport  # type: ignore[attr-defined]
        retry, budget, idempotency, on_retry, throttle = self._given
        del self._given
        if not isinstance(transport, self._retry_transport_class):
            return
        self._retry_sleep = transport._sleep  # a sleep= given to the transport
        theirs = transport._core
        if (
            retry is _DEFAULT_POLICY
            and budget is None
            and idempotency is _DEFAULT_IDEMPOTENCY
            and on_retry is None
            and throttle is None
        ):
            self._retry_core = theirs  # the same engine: one set of counters
            return
        self._retry_core = RetryCore(
            retry=theirs.policy if retry is _DEFAULT_POLICY else retry,
            budget=theirs.budget if budget is None else budget,
            idempotency=(
                theirs.idempotency
                if idempotency is _DEFAULT_IDEMPOTENCY
                else idempotency
            ),
            on_retry=theirs.on_retry if on_retry is None else on_retry,
            clock=theirs.clock,
            owner=owner,
            throttle=theirs.throttle if throttle is None else throttle,
        )

    def _redirect_headers(self, request: Request, url: URL, method: str) -> Headers:
        headers: Headers = cast(Any, super())._redirect_headers(request, url, method)
        idempotency = self._retry_core.idempotency
        if idempotency is not None and method != request.method:
            # A 303 turns a keyed create into a GET of the result: that GET is
            # another request, and the key must not travel to it.
            headers.pop(idempotency.header, None)
            if idempotency.resource_id_header is not None:
                headers.pop(idempotency.resource_id_header, None)
        return headers

    def _cookies_for_retry(self, request: Request, replaced: Response) -> None:
        """Before a retry: the cookies that ``replaced`` (a discarded
        response) set are in the jar now; send the jar's values for them."""
        refresh_cookie_header(request, self.cookies, replaced)  # type: ignore[attr-defined]

    _retry_transport_class: Any

    @property
    def retry(self) -> RetryPolicy:
        """The client's default policy."""
        return self._retry_core.policy

    @property
    def budget(self) -> RetryBudget:
        """The retry budget this client spends from."""
        return self._retry_core.budget

    @property
    def idempotency(self) -> Idempotency | None:
        return self._retry_core.idempotency

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the client's counters: calls, attempts, retries,
        refused_by_budget, gave_up."""
        return self._retry_core.counters.snapshot()


class Client(_RetryClientMixin, httpx.Client):
    """A drop-in ``httpx.Client`` that retries what is safe to retry.

    Takes every argument of ``httpx.Client``, plus:

    Args:
        retry: the default :class:`RetryPolicy` (default ``RetryPolicy()``), or
            ``False`` for no retries.  Every request method also takes
            ``retry=`` to override it for one call.
        budget: a :class:`RetryBudget` to spend retries from (default: a new
            one for this client); share one object between clients to share it.
        idempotency: which requests get an Idempotency-Key and a
            client-generated resource id (default ``Idempotency()``: POST and
            PATCH), or ``None`` for none.
        on_retry: called with a :class:`RetryEvent` before each retry and when
            retrying is stopped early.
        throttle: an :class:`AdaptiveThrottle` that refuses requests locally
            while the server is overloaded (default ``None``: off); share one
            object between clients to share what they learn.

    Retries wrap the client's transport (``transport=`` included) and every
    mounted transport.  For a non-streamed response a failure while reading
    the body is retried too, under the same rules, key and budget.
    """

    _retry_transport_class = RetryTransport
    _retry_sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(
        self,
        *,
        retry: RetryPolicy | bool = _DEFAULT_POLICY,
        budget: RetryBudget | None = None,
        idempotency: Idempotency | None = _DEFAULT_IDEMPOTENCY,
        on_retry: OnRetry | None = None,
        throttle: AdaptiveThrottle | None = None,
        **kwargs: Any,
    ) -> None:
        # Checked first, so that a bad value builds nothing.
        self._set_up_retries("Client", retry, budget, idempotency, on_retry, throttle)
        super().__init__(**kwargs)
        self._adopt("Client")

    def request(
        self,
        method: str,
        url: URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Build and send a request; ``retry`` overrides the policy for this call."""
        return super().request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions if retry is None else _with_retry(extensions, retry),
        )

    @contextmanager
    def stream(
        self,
        method: str,
        url: URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Iterator[Response]:
        """Send a request and stream its response; ``retry`` overrides the policy.

        Failures up to the response headers are retried; the body is the
        caller's to read, and a failure while reading it is not retried.
        """
        with super().stream(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions if retry is None else _with_retry(extensions, retry),
        ) as response:
            yield response

    def send(
        self,
        request: Request,
        *,
        stream: bool = False,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a request; ``retry`` overrides the policy for this call.

        Each attempt is sent as httpx sends a request (auth flow, redirects,
        event hooks, cookies); a non-streamed body is read inside the retry
        loop, so that a failure mid-body is retried too (rule 8).
        """
        observer = _observe.observer
        if observer is not None and _observe.KEY not in request.extensions:
            # Telemetry runs the call (this method again, marked) in its span.
            return _observe.observed(
                observer.call,
                request,
                self._retry_core.budget,
                lambda: self.send(
                    request,
                    stream=stream,
                    auth=auth,
                    follow_redirects=follow_redirects,
                    retry=retry,
                ),
            )
        core = self._retry_core
        send = super().send

        def attempt() -> Response:
            return send(
                request, stream=True, auth=auth, follow_redirects=follow_redirects
            )

        try:
            policy, started = core.prepare(request, retry)
            return send_call(
                core,
                request,
                policy,
                started,
                attempt,
                self._retry_sleep,
                stream=stream,
                before_retry=self._cookies_for_retry,
            )
        finally:
            request.extensions.pop(OUTER_KEY, None)

    def get(
        self,
        url: URL | str,
        *,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``GET`` request; ``retry`` overrides the policy for this call."""
        return self.request(
            "GET",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    def options(
        self,
        url: URL | str,
        *,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``OPTIONS`` request; ``retry`` overrides the policy for this call."""
        return self.request(
            "OPTIONS",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    def head(
        self,
        url: URL | str,
        *,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``HEAD`` request; ``retry`` overrides the policy for this call."""
        return self.request(
            "HEAD",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    def post(
        self,
        url: URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``POST`` request; ``retry`` overrides the policy for this call."""
        return self.request(
            "POST",
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    def put(
        self,
        url: URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``PUT`` request; ``retry`` overrides the policy for this call."""
        return self.request(
            "PUT",
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    def patch(
        self,
        url: URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``PATCH`` request; ``retry`` overrides the policy for this call."""
        return self.request(
            "PATCH",
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    def delete(
        self,
        url: URL | str,
        *,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``DELETE`` request; ``retry`` overrides the policy for this call."""
        return self.request(
            "DELETE",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )


class AsyncClient(_RetryClientMixin, httpx.AsyncClient):
    """A drop-in ``httpx.AsyncClient`` that retries what is safe to retry.

    Takes every argument of ``httpx.AsyncClient``, plus:

    Args:
        retry: the default :class:`RetryPolicy` (default ``RetryPolicy()``), or
            ``False`` for no retries.  Every request method also takes
            ``retry=`` to override it for one call.
        budget: a :class:`RetryBudget` to spend retries from (default: a new
            one for this client); share one object between clients to share it.
        idempotency: which requests get an Idempotency-Key and a
            client-generated resource id (default ``Idempotency()``: POST and
            PATCH), or ``None`` for none.
        on_retry: called with a :class:`RetryEvent` before each retry and when
            retrying is stopped early.
        throttle: an :class:`AdaptiveThrottle` that refuses requests locally
            while the server is overloaded (default ``None``: off); share one
            object between clients to share what they learn.

    Retries wrap the client's transport (``transport=`` included) and every
    mounted transport.  For a non-streamed response a failure while reading
    the body is retried too, under the same rules, key and budget.
    """

    _retry_transport_class = AsyncRetryTransport
    _retry_sleep: Callable[[float], Awaitable[None]] = staticmethod(anyio.sleep)

    def __init__(
        self,
        *,
        retry: RetryPolicy | bool = _DEFAULT_POLICY,
        budget: RetryBudget | None = None,
        idempotency: Idempotency | None = _DEFAULT_IDEMPOTENCY,
        on_retry: OnRetry | None = None,
        throttle: AdaptiveThrottle | None = None,
        **kwargs: Any,
    ) -> None:
        # Checked first, so that a bad value builds nothing.
        self._set_up_retries(
            "AsyncClient", retry, budget, idempotency, on_retry, throttle
        )
        super().__init__(**kwargs)
        self._adopt("AsyncClient")

    async def request(
        self,
        method: str,
        url: URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Build and send a request; ``retry`` overrides the policy for this call."""
        return await super().request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions if retry is None else _with_retry(extensions, retry),
        )

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> AsyncIterator[Response]:
        """Send a request and stream its response; ``retry`` overrides the policy.

        Failures up to the response headers are retried; the body is the
        caller's to read, and a failure while reading it is not retried.
        """
        async with super().stream(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions if retry is None else _with_retry(extensions, retry),
        ) as response:
            yield response

    async def send(
        self,
        request: Request,
        *,
        stream: bool = False,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a request; ``retry`` overrides the policy for this call.

        Each attempt is sent as httpx sends a request (auth flow, redirects,
        event hooks, cookies); a non-streamed body is read inside the retry
        loop, so that a failure mid-body is retried too (rule 8).
        """
        observer = _observe.observer
        if observer is not None and _observe.KEY not in request.extensions:
            return await _observe.aobserved(
                observer.acall,
                request,
                self._retry_core.budget,
                lambda: self.send(
                    request,
                    stream=stream,
                    auth=auth,
                    follow_redirects=follow_redirects,
                    retry=retry,
                ),
            )
        core = self._retry_core
        send = super().send

        def attempt() -> Awaitable[Response]:
            return send(
                request, stream=True, auth=auth, follow_redirects=follow_redirects
            )

        try:
            policy, started = core.prepare(request, retry)
            return await asend_call(
                core,
                request,
                policy,
                started,
                attempt,
                self._retry_sleep,
                stream=stream,
                before_retry=self._cookies_for_retry,
            )
        finally:
            request.extensions.pop(OUTER_KEY, None)

    async def get(
        self,
        url: URL | str,
        *,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``GET`` request; ``retry`` overrides the policy for this call."""
        return await self.request(
            "GET",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    async def options(
        self,
        url: URL | str,
        *,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``OPTIONS`` request; ``retry`` overrides the policy for this call."""
        return await self.request(
            "OPTIONS",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    async def head(
        self,
        url: URL | str,
        *,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``HEAD`` request; ``retry`` overrides the policy for this call."""
        return await self.request(
            "HEAD",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    async def post(
        self,
        url: URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``POST`` request; ``retry`` overrides the policy for this call."""
        return await self.request(
            "POST",
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    async def put(
        self,
        url: URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``PUT`` request; ``retry`` overrides the policy for this call."""
        return await self.request(
            "PUT",
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    async def patch(
        self,
        url: URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``PATCH`` request; ``retry`` overrides the policy for this call."""
        return await self.request(
            "PATCH",
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )

    async def delete(
        self,
        url: URL | str,
        *,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
    ) -> Response:
        """Send a ``DELETE`` request; ``retry`` overrides the policy for this call."""
        return await self.request(
            "DELETE",
            url,
            params=params,
            headers=headers,
            cookies=cookies,
            auth=auth,
            follow_redirects=follow_redirects,
            timeout=timeout,
            extensions=extensions,
            retry=retry,
        )
