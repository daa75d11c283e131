"""The server half on real components: FastAPI/Starlette apps with
background tasks, GZipMiddleware, trailing-slash redirects, DigestAuth and
streaming responses, behind IdempotencyMiddleware, served by uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import StreamingResponse

import reliable_client as rc
from reliable_client.server import IdempotencyMiddleware, MemoryStore

from .apps import StrictDigest
from .asgi_server import UvicornThread

KEY = "Idempotency-Key"


def orders_api(
    ran: Counter[str], *, task_seconds: float = 0.0, task_fails: bool = False
) -> FastAPI:
    app = FastAPI()

    async def slow_task() -> None:
        await asyncio.sleep(task_seconds)

    def failing_task() -> None:
        raise RuntimeError("the e-mail server is down")

    @app.post("/orders/", status_code=201)
    async def create(payload: dict[str, Any], tasks: BackgroundTasks) -> dict[str, Any]:
        ran["orders"] += 1
        if task_seconds:
            tasks.add_task(slow_task)
        if task_fails:
            tasks.add_task(failing_task)
        return {"order": ran["orders"], "lines": ["a line of the order"] * 40}

    return app


# -- 1. answer when the app has answered --------------------------------------


def test_a_slow_background_task_does_not_delay_the_answer() -> None:
    ran: Counter[str] = Counter()
    app = IdempotencyMiddleware(orders_api(ran, task_seconds=1.5), store=MemoryStore())
    with (
        UvicornThread(app) as server,
        rc.Client(base_url=server.url, timeout=1.0) as client,
    ):
        started = time.monotonic()
        response = client.post("/orders/", json={"cart": 1})
        elapsed = time.monotonic() - started
    assert response.status_code == 201
    assert rc.outcome(response).attempts == 1
    assert elapsed < 0.8, f"the 201 took {elapsed:.2f} s behind a 1.5 s task"
    assert ran["orders"] == 1


async def test_a_failing_background_task_keeps_the_answer_and_the_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: Counter[str] = Counter()
    app = IdempotencyMiddleware(orders_api(ran, task_fails=True), store=MemoryStore())
    caplog.set_level(logging.ERROR, logger="reliable_client.server")
    with UvicornThread(app) as server:
        async with rc.AsyncClient(base_url=server.url) as client:
            first = await client.post("/orders/", json={"cart": 1})
            key = first.request.headers[KEY]
            await asyncio.sleep(0.2)  # the background task has failed by now
            again = await client.post("/orders/", json={"cart": 1}, headers={KEY: key})
    assert first.status_code == 201
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert ran["orders"] == 1
    assert any("after its response was sent" in r.getMessage() for r in caplog.records)


# -- 2. replay what is needed to read the body ---------------------------------


def test_a_gzipped_answer_is_replayed_readable() -> None:
    ran: Counter[str] = Counter()
    api = orders_api(ran)
    api.add_middleware(GZipMiddleware, minimum_size=100)
    app = IdempotencyMiddleware(api, store=MemoryStore())
    with UvicornThread(app) as server, rc.Client(base_url=server.url) as client:
        first = client.post("/orders/", json={"cart": 1})
        again = client.post(
            "/orders/", json={"cart": 1}, headers={KEY: first.request.headers[KEY]}
        )
    assert first.headers["content-encoding"] == "gzip"
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-encoding"] == "gzip"
    assert again.json() == first.json()
    assert ran["orders"] == 1


# -- 3. "not done here" is not stored -------------------------------------------


def test_a_trailing_slash_redirect_is_not_stored() -> None:
    ran: Counter[str] = Counter()
    app = IdempotencyMiddleware(orders_api(ran), store=MemoryStore())
    with (
        UvicornThread(app) as server,
        rc.Client(base_url=server.url, follow_redirects=True) as client,
    ):
        response = client.post("/orders", json={"cart": 1})  # FastAPI: 307 to /orders/
    assert [hop.status_code for hop in response.history] == [307]
    assert response.status_code == 201
    assert response.request.headers[KEY] == response.history[0].request.headers[KEY]
    assert ran["orders"] == 1


async def test_a_digest_challenge_is_not_replayed_to_the_signed_request() -> None:
    digest = StrictDigest("ada", "lovelace", busy_first=False)
    app = IdempotencyMiddleware(digest, store=MemoryStore())
    with UvicornThread(app) as server:
        async with rc.AsyncClient(
            base_url=server.url, auth=httpx.DigestAuth("ada", "lovelace")
        ) as client:
            response = await client.post("/payments", json={"amount": 5})
    assert response.status_code == 200
    assert digest.answers == [401, 200]
    assert "idempotent-replayed" not in response.headers


@pytest.mark.parametrize(
    "status", [301, 302, 307, 308, 401, 407, 408, 425, 429, 500, 503]
)
async def test_not_done_answers_release_the_key(status: int) -> None:
    runs: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        runs.append(status)
        answer = status if len(runs) == 1 else 201
        headers = [(b"content-length", b"0")]
        if 300 <= answer < 400:
            headers.append((b"location", b"/elsewhere"))
        await send(
            {"type": "http.response.start", "status": answer, "headers": headers}
        )
        await send({"type": "http.response.body", "body": b""})

    guarded = IdempotencyMiddleware(app, store=MemoryStore())
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        first = await client.post("/p", headers={KEY: "k"})
        second = await client.post("/p", headers={KEY: "k"})
    assert first.status_code == status
    assert second.status_code == 201 and "idempotent-replayed" not in second.headers
    assert len(runs) == 2


async def test_a_303_is_stored_and_replayed() -> None:
    runs = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal runs
        await receive()
        runs += 1
        headers = [(b"content-length", b"0"), (b"location", b"/orders/1")]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    guarded = IdempotencyMiddleware(app, store=MemoryStore())
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        await client.post("/orders", headers={KEY: "k"})
        again = await client.post("/orders", headers={KEY: "k"})
    assert again.status_code == 303 and again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == "/orders/1"
    assert runs == 1


# -- 6. streaming endpoints ---------------------------------------------------


def streaming_api(runs: list[str], chunks: int, delay: float) -> Any:
    async def route(request: Request) -> StreamingResponse:
        runs.append(request.url.path)

        async def events() -> AsyncIterator[bytes]:
            for index in range(chunks):
                yield f"data: {index}\n\n".encode()
                await asyncio.sleep(delay)

        return StreamingResponse(events(), media_type="text/event-stream")

    from starlette.applications import Starlette
    from starlette.routing import Route

    return Starlette(routes=[Route("/completions", route, methods=["POST"])])


def test_a_streamed_answer_passes_through_and_a_short_one_is_replayed() -> None:
    runs: list[str] = []
    app = IdempotencyMiddleware(streaming_api(runs, 5, 0.2), store=MemoryStore())
    with UvicornThread(app) as server, rc.Client(base_url=server.url) as client:
        started = time.monotonic()
        chunks: list[bytes] = []
        with client.stream("POST", "/completions", json={"q": "hi"}) as streamed:
            for chunk in streamed.iter_raw():
                if not chunks:
                    first_after = time.monotonic() - started
                chunks.append(chunk)
        body = b"".join(chunks)
        key = streamed.request.headers[KEY]
        again = client.post("/completions", json={"q": "hi"}, headers={KEY: key})
    assert first_after < 0.5, f"the first event took {first_after:.2f} s: buffered"
    assert body == b"".join(f"data: {i}\n\n".encode() for i in range(5))
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == body
    assert runs == ["/completions"]


def test_a_stream_too_long_to_keep_is_not_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[str] = []
    app = IdempotencyMiddleware(
        streaming_api(runs, 3, 0.0), store=MemoryStore(), max_response_body=10
    )
    caplog.set_level(logging.WARNING, logger="reliable_client.server")
    with UvicornThread(app) as server, rc.Client(base_url=server.url) as client:
        first = client.post("/completions", json={})
        again = client.post(
            "/completions", json={}, headers={KEY: first.request.headers[KEY]}
        )
    assert first.status_code == 200 and again.status_code == 200
    assert "idempotent-replayed" not in again.headers
    assert len(runs) == 2  # not kept: the key ran again, as logged
    assert any("not stored" in r.getMessage() for r in caplog.records)


# -- found in review ------------------------------------------------------------


def test_a_long_response_with_a_length_passes_through_unstored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    size = 64 * 1024

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        runs.append(1)
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(4 * size).encode())],
        }
        await send(start)
        for index in range(4):
            await send(
                {
                    "type": "http.response.body",
                    "body": b"x" * size,
                    "more_body": index < 3,
                }
            )
            await asyncio.sleep(0.1)

    store = MemoryStore()
    guarded = IdempotencyMiddleware(app, store=store, max_response_body=size)
    caplog.set_level(logging.WARNING, logger="reliable_client.server")
    with UvicornThread(guarded) as server, rc.Client(base_url=server.url) as client:
        started = time.monotonic()
        chunks: list[bytes] = []
        with client.stream("POST", "/export", json={}) as streamed:
            for chunk in streamed.iter_raw():
                if not chunks:
                    first_after = time.monotonic() - started
                chunks.append(chunk)
        first, rest = chunks[0], b"".join(chunks[1:])
        again = client.post(
            "/export", json={}, headers={KEY: streamed.request.headers[KEY]}
        )
    assert len(first) + len(rest) == 4 * size
    assert first_after < 0.25  # not held until the end (0.4 s)
    assert len(store) == 0  # not stored: it could not be replayed
    assert "idempotent-replayed" not in again.headers and len(runs) == 2
    assert any(
        "longer than max_response_body" in r.getMessage() for r in caplog.records
    )


async def test_file_responses_are_sent_as_body_messages() -> None:
    # A server offering http.response.pathsend: FileResponse would send the
    # path, which the middleware cannot keep; it is hidden from the app.
    import tempfile

    from starlette.responses import FileResponse

    with tempfile.NamedTemporaryFile(delete=False) as handle:
        handle.write(b"the invoice")
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        assert "http.response.pathsend" not in scope.get("extensions", {})
        await FileResponse(handle.name)(scope, receive, send)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/invoice",
        "raw_path": b"/invoice",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"idempotency-key", b"k1")],
        "extensions": {"http.response.pathsend": {}},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    store = MemoryStore()
    await IdempotencyMiddleware(app, store=store)(scope, receive, send)
    os.unlink(handle.name)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["body"] == b"the invoice"
    assert len(store) == 1
