"""The ASGI middleware: claim the key atomically, run once, replay after."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from .._validation import check_bool, check_int, check_methods, check_number
from .._validation import check_token as check_header_name
from ._problem import BadKey, parse_key, send_problem
from ._stores import (
    Claimed,
    Completed,
    IdempotencyStore,
    InFlight,
    SQLiteStore,
    StoredResponse,
)

__all__ = ["DEFAULT_REPLAY_HEADERS", "IdempotencyMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("reliable_client.server")

#: Response headers stored and replayed by default (lower case).
DEFAULT_REPLAY_HEADERS: frozenset[str] = frozenset(
    {
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-location",
        "content-type",
        "etag",
        "expires",
        "last-modified",
        "link",
        "location",
        "vary",
        "x-client-resource-id",
    }
)

# Answers that say "not done here": released, never stored, so a retry (or
# the redirected or authenticated request) runs the handler instead of
# getting the refusal replayed for 24 hours.  5xx too, see _not_done.
_NOT_DONE = frozenset(
    {
        300, 301, 302, 305, 307, 308,  # redirects, but 303 ("see the result")
        401, 407,  # auth challenges
        408, 425, 429,  # "try again"
    }
)  # fmt: skip
# Seconds a client should wait before retrying a 503 of ours.
_RETRY_AFTER = 1


class IdempotencyMiddleware:
    """Run each keyed request at most once; replay its response afterwards.

    Args:
        app: the ASGI application to protect.
        store: where records live; default ``SQLiteStore()`` (a private file
            of this user's, shared by the workers of this app on this host).
        methods: methods that honour the key; default ``{"POST", "PATCH"}``.
            Other methods pass through untouched.
        header: the request header carrying the key; default
            ``"Idempotency-Key"``.
        required: answer 400 when a request of ``methods`` has no key;
            default ``False`` (such requests pass through, unprotected).
        expiry: seconds a completed response is replayed; default 86400.0.
        lease: seconds a claim survives without its worker; default 5.0.
            A running handler renews it every ``lease / 3`` seconds, so only
            a dead worker's claim runs out and can be taken over, within
            ``lease`` seconds.  A ``409`` answering a key in flight carries
            ``Retry-After``: the seconds left of the holder's lease (at least
            1), so a retry comes when it can take over a dead worker's key.
            Short enough for a client's retries to reach that moment; a
            handler that blocks the event loop for longer than ``lease``
            loses its claim (make creates idempotent by resource id too).
        scope: ``callable(asgi_scope) -> str`` naming the principal (tenant,
            user, API key) keys belong to; two principals never share a key.
            Default: one global scope.  It is hashed, never stored in clear.
        replay_headers: response headers stored and replayed (case-insensitive);
            default ``DEFAULT_REPLAY_HEADERS``.  ``Set-Cookie`` is refused.
        max_key_length: longest key accepted, in characters; default 255.
        max_body: largest request body buffered, in bytes; default 1 MiB.
            Larger keyed requests get 413.
        max_response_body: the longest response body kept for replay, in
            bytes; default 1 MiB.  Responses are held until their last body
            message and stored whole, except streamed ones
            (``text/event-stream``, no Content-Length and several body
            messages, or longer than this): those are forwarded as they come,
            and one longer than this is not stored (its claim is released,
            and logged).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: IdempotencyStore | None = None,
        methods: Iterable[str] = frozenset({"POST", "PATCH"}),
        header: str = "Idempotency-Key",
        required: bool = False,
        expiry: float = 86400.0,
        lease: float = 5.0,
        scope: Callable[[Scope], str] | None = None,
        replay_headers: Iterable[str] = DEFAULT_REPLAY_HEADERS,
        max_key_length: int = 255,
        max_body: int = 1024 * 1024,
        max_response_body: int = 1024 * 1024,
    ) -> None:
        owner = "IdempotencyMiddleware"
        if store is not None and not isinstance(store, IdempotencyStore):
            raise TypeError(f"{owner}.store must be an IdempotencyStore")
        if scope is not None and not callable(scope):
            raise TypeError(f"{owner}.scope must be a callable or None")
        if isinstance(replay_headers, (str, bytes)):
            raise TypeError(f"{owner}.replay_headers must be a collection of names")
        replay = frozenset(
            check_header_name(owner, "replay_headers", name).lower()
            for name in replay_headers
        )
        if "set-cookie" in replay:
            raise ValueError(f"{owner}.replay_headers: Set-Cookie is never replayed")
        self.app = app
        self.store = store if store is not None else SQLiteStore()
        self.methods = check_methods(owner, "methods", methods)
        self.header = check_header_name(owner, "header", header)
        self.required = check_bool(owner, "required", required)
        self.expiry = check_number(owner, "expiry", expiry, allow_minimum=False)
        self.lease = check_number(owner, "lease", lease, allow_minimum=False)
        self.replay_headers = replay
        self.max_key_length = check_int(
            owner, "max_key_length", max_key_length, minimum=1
        )
        self.max_body = check_int(owner, "max_body", max_body, minimum=0)
        self.max_response_body = check_int(
            owner, "max_response_body", max_response_body, minimum=0
        )
        self._principal = scope
        self._header_bytes = self.header.lower().encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.methods:
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope["headers"] if k.lower() == self._header_bytes]
        if not values:
            if self.required:
                detail = f"this request needs an {self.header} header"
                await send_problem(send, 400, detail, code="key-missing")
            else:
                await self.app(scope, receive, send)
            return
        try:
            key = parse_key(values, header=self.header, max_length=self.max_key_length)
        except BadKey as exc:
            await send_problem(send, 400, str(exc), code="key-malformed")
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return  # answered already, or the client left: nothing ran
        principal = self._principal(scope) if self._principal is not None else ""
        record = _digest(json.dumps([principal, key]).encode())
        try:
            claim = await self.store.claim(
                record, _fingerprint(scope, body), lease=self.lease
            )
        except Exception:
            # Without the store we cannot tell whether it already ran: refuse.
            logger.exception("idempotency store failed to claim a key")
            detail = "the idempotency store is unavailable; retry later"
            await send_problem(
                send, 503, detail, code="store-unavailable", retry_after=_RETRY_AFTER
            )
            return
        if isinstance(claim, Claimed):
            await self._run(scope, receive, send, record, claim.token, body)
        elif isinstance(claim, Completed):
            await self._replay(send, claim.response)
        elif isinstance(claim, InFlight):
            detail = f"a request with this {self.header} is still being processed"
            # When the holder's lease runs out, a retry learns the result, or
            # takes the key over if the holder has died: ask for that wait.
            wait = max(1, math.ceil(claim.lease_left))
            await send_problem(
                send, 409, detail, code="key-in-flight", retry_after=wait
            )
        else:
            detail = f"this {self.header} was used for a different request"
            await send_problem(send, 422, detail, code="key-reused")

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send
    ) -> bytes | None:
        too_large = f"a keyed request body is limited to {self.max_body} bytes"
        for name, value in scope["headers"]:
            if (
                name.lower() == b"content-length"
                and value.strip().isdigit()
                and int(value) > self.max_body
            ):
                await send_problem(send, 413, too_large, code="body-too-large")
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await send_problem(send, 413, too_large, code="body-too-large")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        record: str,
        token: str,
        body: bytes,
    ) -> None:
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # e.g. http.disconnect
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        answer = _Answer(self, record, token, send)
        try:
            await self.app(_plain_scope(scope), replay_body, answer.send)
        except Exception:
            if answer.finished:
                # A background task (or any code after the response) failed:
                # the answer was sent and stored, and it stands.
                logger.exception(
                    "the app raised after its response was sent; the stored "
                    "response and the claim stand"
                )
            else:
                # The handler failed before answering: a retry may run it again.
                await answer.release()
            raise
        finally:
            # A cancelled (or killed) handler keeps its claim until the lease
            # runs out: we cannot tell how far it got.
            answer.stop_renewing()
        if not answer.finished:
            await answer.release()
            raise RuntimeError("the ASGI app returned without a complete response")

    async def _replay(self, send: Send, response: StoredResponse) -> None:
        headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers
            if name in self.replay_headers
        ]
        headers += [
            (b"content-length", str(len(response.body)).encode()),
            (b"idempotent-replayed", b"true"),
        ]
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _renew(self, record: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                if not await self.store.extend(record, token, lease=self.lease):
                    return
            except Exception:
                logger.warning(
                    "idempotency store failed to renew a lease", exc_info=True
                )

    async def _store(self, record: str, token: str, stored: StoredResponse) -> None:
        try:
            owned = await self.store.complete(record, token, stored, expiry=self.expiry)
        except Exception:
            # It ran; answering is still right.  A retry after the lease may
            # run it again: the store was down, nothing can prevent it.
            logger.exception("idempotency store failed to save a response")
            return
        if not owned:
            logger.warning(
                "idempotency lease was lost before the response was saved"
                " (renewals failed, or the worker stalled past the lease)"
            )

    async def _release(self, record: str, token: str) -> None:
        try:
            await self.store.release(record, token)
        except Exception:
            # The lease will free the key instead.
            logger.exception("idempotency store failed to release a claim")


class _Answer:
    """The app's response on its way to the client: held back until its last
    body message, then stored (or released) and forwarded at once, so that
    nothing the app does afterwards (background tasks) delays or changes it.

    A response that streams (``text/event-stream``; no Content-Length and
    several body messages; or longer than ``max_response_body``) is
    forwarded as it comes instead, and a copy is kept while it stays within
    ``max_response_body``: stored when it ends.  A longer one cannot be
    replayed: it is not stored, and its claim is released.
    """

    def __init__(
        self, middleware: IdempotencyMiddleware, record: str, token: str, send: Send
    ) -> None:
        self._middleware = middleware
        self._limit = middleware.max_response_body
        self._record = record
        self._token = token
        self._send = send
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self._held: list[bytes] = []  # not forwarded yet
        self._kept: list[bytes] | None = []  # the copy to store; None: too long
        self._later: list[Message] = []  # other messages, after the body
        self.size = 0
        self.streaming = False
        self.finished = False
        self._length_known = False
        self._renewer: asyncio.Task[None] | None = asyncio.create_task(
            middleware._renew(record, token)
        )

    def stop_renewing(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None

    async def send(self, message: Message) -> None:
        if self.finished:
            # After the last body message; ASGI servers ignore it too.
            return
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            names = {name.lower(): value for name, value in self.headers}
            length = names.get(b"content-length", b"").strip()
            self._length_known = bool(length)
            media = names.get(b"content-type", b"").split(b";")[0].strip().lower()
            too_long = length.isdigit() and int(length) > self._limit
            if media == b"text/event-stream" or too_long:
                await self._start_streaming()
        elif kind == "http.response.body":
            await self._body(
                bytes(message.get("body", b"")), bool(message.get("more_body", False))
            )
        elif self.streaming:
            await self._send(message)
        else:
            self._later.append(message)  # once the held answer has gone

    async def _body(self, chunk: bytes, more: bool) -> None:
        self.size += len(chunk)
        if self._kept is not None:
            if self.size <= self._limit:
                self._kept.append(chunk)
            else:
                self._kept = None  # too long to replay: not kept
        if not self.streaming and (
            (more and not self._length_known) or self._kept is None
        ):
            await self._start_streaming()
        if not more:
            await self._finish(chunk)
        elif self.streaming:
            if chunk:
                await self._send(
                    {"type": "http.response.body", "body": chunk, "more_body": True}
                )
        else:
            self._held.append(chunk)

    async def _start_streaming(self) -> None:
        self.streaming = True
        await self._send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": self.headers,
            }
        )
        held, self._held = self._held, []
        for chunk in held:
            await self._send(
                {"type": "http.response.body", "body": chunk, "more_body": True}
            )

    async def _finish(self, last: bytes) -> None:
        """The last body message: settle the record, then answer."""
        self.finished = True
        self.stop_renewing()
        assert self.status is not None
        middleware = self._middleware
        if _not_done(self.status):
            await self.release()
        elif self._kept is None:
            logger.warning(
                "a response of %d bytes to a keyed request is longer than "
                "max_response_body (%d): passed through, not stored, and a "
                "retry with this key runs the handler again",
                self.size,
                self._limit,
            )
            await self.release()
        else:
            await middleware._store(
                self._record,
                self._token,
                StoredResponse(
                    self.status,
                    tuple(
                        (name.decode("latin-1").lower(), value.decode("latin-1"))
                        for name, value in self.headers
                        if name.decode("latin-1").lower() in middleware.replay_headers
                    ),
                    b"".join(self._kept),
                ),
            )
        if self.streaming:
            await self._send({"type": "http.response.body", "body": last})
        else:
            await self._send(
                {
                    "type": "http.response.start",
                    "status": self.status,
                    "headers": self.headers,
                }
            )
            await self._send(
                {"type": "http.response.body", "body": b"".join([*self._held, last])}
            )
        for message in self._later:
            await self._send(message)

    async def release(self) -> None:
        await self._middleware._release(self._record, self._token)


# ASGI extensions an app may use only when the server offers them; a response
# held for storing needs plain body messages (pathsend and zerocopysend send a
# file the middleware cannot keep; trailers would follow a held body).
_HIDDEN_EXTENSIONS = (
    "http.response.pathsend",
    "http.response.zerocopysend",
    "http.response.trailers",
)


def _plain_scope(scope: Scope) -> Scope:
    extensions = scope.get("extensions")
    if not extensions or not any(name in extensions for name in _HIDDEN_EXTENSIONS):
        return scope
    kept = {k: v for k, v in extensions.items() if k not in _HIDDEN_EXTENSIONS}
    return {**scope, "extensions": kept}


def _not_done(status: int) -> bool:
    """An answer that says the request was not done here (see _NOT_DONE)."""
    return status >= 500 or status in _NOT_DONE


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fingerprint(scope: Scope, body: bytes) -> str:
    """sha256 over method, path, query and body, each length-prefixed."""
    digest = hashlib.sha256()
    path = scope.get("root_path", "") + scope["path"]
    for part in (
        scope["method"].encode("ascii", "backslashreplace"),
        path.encode("utf-8", "backslashreplace"),
        bytes(scope.get("query_string", b"")),
        body,
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
