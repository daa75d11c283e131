"""Client and AsyncClient: httpx clients that retry what is safe to retry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal, cast

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

from ._budget import RetryBudget
from ._core import RETRY_KEY, RetryCore, client_send, resolve_policy
from ._idempotency import Idempotency
from ._outcome import ClientStats, OnRetry
from ._policy import RetryPolicy
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
    _retrying: dict[int, Any]

    def _set_up_retries(
        self,
        owner: str,
        retry: RetryPolicy | bool,
        budget: RetryBudget | None,
        idempotency: Idempotency | None,
        on_retry: OnRetry | None,
    ) -> bool:
        """Build the retry engine (a bad value raises before httpx builds
        anything); return whether any retry setting was given."""
        self._retry_core = RetryCore(
            retry=retry,
            budget=budget,
            idempotency=idempotency,
            on_retry=on_retry,
            clock=None,
            owner=owner,
        )
        # httpx's own transports and mounts stay as they are (their tests look
        # at them); each is wrapped, once, when one of our sends picks it.
        self._retrying = {}
        return (
            retry is not _DEFAULT_POLICY
            or budget is not None
            or idempotency is not _DEFAULT_IDEMPOTENCY
            or on_retry is not None
        )

    def _adopt(self, owner: str, configured: bool) -> None:
        """Given a RetryTransport as ``transport=``, the client uses its engine
        (policy, budget, keys, counters) rather than wrapping it again."""
        transport = self._transport  # type: ignore[attr-defined]
        if not isinstance(transport, self._retry_transport_class):
            return
        if configured:
            raise TypeError(
                f"{owner}(transport={type(transport).__name__}(...)) takes its "
                "retry settings from that transport: pass retry=, budget=, "
                "idempotency= and on_retry= to the transport, not the client"
            )
        self._retry_core = transport._core

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

    def _prepare_send(
        self, request: Request, retry: RetryPolicy | Literal[False] | None
    ) -> None:
        """What both sends do first: a per-call policy, and the keys (before
        auth flows and event hooks, so that they see them)."""
        if retry is not None:
            request.extensions = dict(_with_retry(request.extensions, retry) or {})
        idempotency = self._retry_core.idempotency
        if idempotency is not None and request.method in idempotency._methods:
            idempotency.apply(request)

    _retry_transport_class: Any

    _httpx_transport_for_url: Any

    def _transport_for_url(self, url: URL) -> Any:
        transport = self._httpx_transport_for_url(url)
        kind = self._retry_transport_class
        if client_send.get() is None or isinstance(transport, kind):
            # Not one of our sends, or retrying already: wrapping it again
            # would multiply attempts.
            return transport
        wrapper = self._retrying.get(id(transport))
        if wrapper is None:
            wrapper = kind._around(transport, self._retry_core)
            self._retrying[id(transport)] = wrapper
        return wrapper

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

    Retries wrap the client's transport (``transport=`` included) and every
    mounted transport.  For a non-streamed response a failure while reading
    the body is retried too, under the same rules, key and budget.
    """

    _retry_transport_class = RetryTransport
    _httpx_transport_for_url = httpx.Client._transport_for_url

    def __init__(
        self,
        *,
        retry: RetryPolicy | bool = _DEFAULT_POLICY,
        budget: RetryBudget | None = None,
        idempotency: Idempotency | None = _DEFAULT_IDEMPOTENCY,
        on_retry: OnRetry | None = None,
        **kwargs: Any,
    ) -> None:
        # Checked first, so that a bad value builds nothing.
        configured = self._set_up_retries(
            "Client", retry, budget, idempotency, on_retry
        )
        super().__init__(**kwargs)
        self._adopt("Client", configured)

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
        """Send a request; ``retry`` overrides the policy for this call."""
        self._prepare_send(request, retry)
        # Non-streamed bodies are read inside the retry loop (rule 8).
        token = client_send.set(not stream)
        try:
            return super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        finally:
            client_send.reset(token)

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

    Retries wrap the client's transport (``transport=`` included) and every
    mounted transport.  For a non-streamed response a failure while reading
    the body is retried too, under the same rules, key and budget.
    """

    _retry_transport_class = AsyncRetryTransport
    _httpx_transport_for_url = httpx.AsyncClient._transport_for_url

    def __init__(
        self,
        *,
        retry: RetryPolicy | bool = _DEFAULT_POLICY,
        budget: RetryBudget | None = None,
        idempotency: Idempotency | None = _DEFAULT_IDEMPOTENCY,
        on_retry: OnRetry | None = None,
        **kwargs: Any,
    ) -> None:
        # Checked first, so that a bad value builds nothing.
        configured = self._set_up_retries(
            "AsyncClient", retry, budget, idempotency, on_retry
        )
        super().__init__(**kwargs)
        self._adopt("AsyncClient", configured)

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
        """Send a request; ``retry`` overrides the policy for this call."""
        self._prepare_send(request, retry)
        # Non-streamed bodies are read inside the retry loop (rule 8).
        token = client_send.set(not stream)
        try:
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        finally:
            client_send.reset(token)

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
