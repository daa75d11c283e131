"""Small ASGI apps that tests put behind ChaosServer or a real ASGI server."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class Effects:
    """Counts the requests its handler ran, per path; a create keyed by the
    client-generated resource id answers 201 the first time, 303 after."""

    def __init__(self) -> None:
        self.ran: Counter[str] = Counter()
        self.created: dict[str, str] = {}  # resource id -> path
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        path = scope["path"]
        rid = header(scope, b"x-client-resource-id")
        with self._lock:
            self.ran[path] += 1
            existed = rid is not None and rid in self.created
            if rid is not None and not existed:
                self.created[rid] = path
        if existed:
            await respond(send, 303, headers=[(b"location", f"{path}/{rid}".encode())])
        else:
            await respond(send, 201, json.dumps({"id": rid}).encode())


class StickyCookie:
    """A 503 that sets a sticky-session cookie; the retry must bring it."""

    def __init__(self) -> None:
        self.cookies: list[str | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        cookie = header(scope, b"cookie")
        self.cookies.append(cookie)
        if len(self.cookies) == 1:
            await respond(
                send, 503, b"busy", [(b"set-cookie", b"sticky=node-2; Path=/")]
            )
        elif cookie is not None and "sticky=node-2" in cookie:
            await respond(send, 200, b"served by node 2")
        else:
            await respond(send, 400, b"the sticky cookie is missing")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class StrictDigest:
    """HTTP Digest auth (RFC 7616, MD5, qop=auth) that refuses a nonce count
    it has seen before, as a strict server does; the first authenticated
    request answers 503 once."""

    realm = "test"

    def __init__(self, user: str, password: str, *, busy_first: bool = True) -> None:
        self.user = user
        self.password = password
        self.busy_first = busy_first
        self.nonce = os.urandom(8).hex()
        self.counts_seen: list[str] = []
        self.answers: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        status = self._check(scope)
        self.answers.append(status)
        if status == 401:
            challenge = (
                f'Digest realm="{self.realm}", nonce="{self.nonce}", qop="auth", '
                "algorithm=MD5"
            )
            await respond(send, 401, b"", [(b"www-authenticate", challenge.encode())])
        else:
            await respond(send, status, b"ok" if status == 200 else b"busy")

    def _check(self, scope: Scope) -> int:
        value = header(scope, b"authorization")
        if value is None or not value.startswith("Digest "):
            return 401
        fields = {}
        for part in value[len("Digest ") :].split(","):
            name, _, raw = part.strip().partition("=")
            fields[name] = raw.strip('"')
        count = fields.get("nc", "")
        if fields.get("nonce") != self.nonce or count in self.counts_seen:
            return 401  # a spent nonce count: refused
        self.counts_seen.append(count)
        ha1 = _md5(f"{self.user}:{self.realm}:{self.password}")
        ha2 = _md5(f"{scope['method']}:{fields.get('uri')}")
        expected = _md5(f"{ha1}:{self.nonce}:{count}:{fields.get('cnonce')}:auth:{ha2}")
        if fields.get("response") != expected:
            return 401
        return 503 if self.busy_first and len(self.counts_seen) == 1 else 200
