"""Regressions from review: each test pins a behaviour that was once wrong."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Generator, Iterator

import httpx
import pytest

import reliable_client as rc
from reliable_client import testing

from .loopback import LoopbackServer, Reply, SlowBody, Stall


def _recording(responses: list[httpx.Response]) -> httpx.MockTransport:
    """A transport answering from ``responses`` in order, reading the body."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return responses[min(len(seen) - 1, len(responses) - 1)]

    transport = httpx.MockTransport(handler)
    transport.seen = seen  # type: ignore[attr-defined]
    return transport


def test_unreplayable_body_is_not_resent_after_a_status(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    # A real transport consumes the stream (a mock that reads the request
    # would turn it into bytes, and so replayable).
    server.script("/doc", Reply(503), Reply(200))
    with rc.Client(base_url=server.url) as client:
        response = client.put("/doc", content=io.BytesIO(b"file contents"))
    assert response.status_code == 503
    assert len(server.requests("/doc")) == 1
    assert rc.outcome(response).stopped_by == "body_not_replayable"


def test_unreplayable_body_not_resent_after_429(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    def body() -> Iterator[bytes]:
        yield b"chunk"

    server.script("/upload", Reply(429), Reply(200))
    with rc.Client(base_url=server.url, idempotency=None) as client:
        response = client.post("/upload", content=body())
    assert response.status_code == 429
    assert len(server.requests("/upload")) == 1


async def test_decorator_keys_follow_their_url_across_task_order(
    no_sleep: testing.TestingMode,
) -> None:
    keys: dict[str, list[str]] = {"/a": [], "/b": []}
    attempt = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        keys[request.url.path].append(request.headers["Idempotency-Key"])
        return httpx.Response(201)

    client = rc.AsyncClient(transport=httpx.MockTransport(handler))

    @rc.retry(on=(RuntimeError,))
    async def create_both() -> None:
        nonlocal attempt
        attempt += 1
        order = ["/a", "/b"] if attempt == 1 else ["/b", "/a"]

        async def post(path: str, delay: float) -> None:
            await asyncio.sleep(delay)
            await client.post(f"http://x{path}", json={"item": path})

        await asyncio.gather(post(order[0], 0.0), post(order[1], 0.01))
        if attempt == 1:
            raise RuntimeError("first attempt fails after both posts")

    await create_both()
    await client.aclose()
    assert len(set(keys["/a"])) == 1 and len(keys["/a"]) == 2
    assert len(set(keys["/b"])) == 1 and len(keys["/b"]) == 2
    assert keys["/a"][0] != keys["/b"][0]


def test_auth_flows_and_request_hooks_see_the_key() -> None:
    seen_by_auth: list[str | None] = []
    seen_by_hook: list[str | None] = []

    class SigningAuth(httpx.Auth):
        def auth_flow(
            self, request: httpx.Request
        ) -> Generator[httpx.Request, httpx.Response, None]:
            seen_by_auth.append(request.headers.get("Idempotency-Key"))
            yield request

    def hook(request: httpx.Request) -> None:
        seen_by_hook.append(request.headers.get("Idempotency-Key"))

    transport = httpx.MockTransport(lambda request: httpx.Response(201))
    with rc.Client(
        transport=transport, auth=SigningAuth(), event_hooks={"request": [hook]}
    ) as client:
        response = client.post("http://x/orders", json={})
    key = response.request.headers["Idempotency-Key"]
    assert seen_by_auth == [key] and seen_by_hook == [key]


def test_followed_303_reports_already_existed_and_drops_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(303, headers={"Location": "/orders/1"})
        return httpx.Response(200, json={"id": 1})

    with rc.Client(
        transport=httpx.MockTransport(handler), follow_redirects=True
    ) as client:
        response = client.post("http://x/orders", json={})
    assert response.status_code == 200
    result = rc.outcome(response)
    assert result.already_existed
    assert (
        result.idempotency_key == response.history[0].request.headers["Idempotency-Key"]
    )
    assert "Idempotency-Key" not in response.request.headers
    assert "X-Client-Resource-Id" not in response.request.headers


def test_client_given_a_retry_transport_uses_its_settings(
    no_sleep: testing.TestingMode,
) -> None:
    transport = _recording([httpx.Response(503)])
    wrapped = rc.RetryTransport(transport, retry=rc.RetryPolicy(max_attempts=5))
    with rc.Client(transport=wrapped) as client:
        assert client.get("http://x/").status_code == 503
        assert client.stats.attempts == 5 and client.retry.max_attempts == 5
    assert len(transport.seen) == 5  # type: ignore[attr-defined]


def test_client_settings_override_those_of_its_retry_transport(
    no_sleep: testing.TestingMode,
) -> None:
    # The client's own retry= wins; what it was not given (the budget) comes
    # from the transport; the transport then adds no attempts of its own.
    transport = _recording([httpx.Response(503)])
    budget = rc.RetryBudget()
    wrapped = rc.RetryTransport(
        transport, retry=rc.RetryPolicy(max_attempts=5), budget=budget
    )
    with rc.Client(transport=wrapped, retry=rc.RetryPolicy(max_attempts=2)) as client:
        assert client.get("http://x/").status_code == 503
        assert client.retry.max_attempts == 2 and client.budget is budget
        assert client.stats.attempts == 2
    assert len(transport.seen) == 2  # type: ignore[attr-defined]
    assert budget.stats.retries == 1


def test_decorator_sees_a_custom_key_header(no_sleep: testing.TestingMode) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(201)

    client = rc.Client(
        transport=httpx.MockTransport(handler),
        idempotency=rc.Idempotency(header="X-Idem"),
    )

    @rc.retry
    def create() -> int:
        return client.post("http://x/orders", json={}).status_code

    assert create() == 201
    assert calls == 3


def test_a_raising_on_retry_callback_leaks_nothing(
    no_sleep: testing.TestingMode, caplog: pytest.LogCaptureFixture
) -> None:
    discarded: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        response = httpx.Response(
            503 if not discarded else 200, stream=httpx.ByteStream(b"")
        )
        if not discarded:
            discarded.append(response)
        return response

    def broken(event: rc.RetryEvent) -> None:
        raise RuntimeError("callback bug")

    with rc.Client(transport=httpx.MockTransport(handler), on_retry=broken) as client:
        assert client.get("http://x/").status_code == 200
    assert discarded[0].is_closed
    assert any("on_retry" in r.getMessage() for r in caplog.records)


def test_deadline_bounds_a_body_that_trickles(server: LoopbackServer) -> None:
    server.script("/slow", SlowBody(200, chunks=(b"x",) * 12, delay=0.25))
    policy = rc.RetryPolicy(deadline=1.0)
    started = time.monotonic()
    with (
        rc.Client(base_url=server.url, retry=policy, timeout=5.0) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get("/slow")
    assert time.monotonic() - started < 2.0
    assert len(server.requests("/slow")) == 1


def test_library_logger_is_silent_by_default() -> None:
    logger = logging.getLogger("reliable_client")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


@pytest.mark.parametrize("value", [None, "", 7.5, 42, "caller-id"])
def test_header_and_body_id_always_agree(value: object) -> None:
    transport = _recording([httpx.Response(201)])
    idempotency = rc.Idempotency(resource_id_field="id")
    with rc.Client(transport=transport, idempotency=idempotency) as client:
        client.post("http://x/orders", json={"id": value, "amount": 1})
    (request,) = transport.seen  # type: ignore[attr-defined]
    sent = json.loads(request.content)["id"]
    assert str(sent) == request.headers["X-Client-Resource-Id"]
    if value not in (None, ""):
        assert sent == value  # the caller's id is kept


def test_keyed_status_retry_with_server(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/o", Reply(409), Reply(201, body=b"made"))
    with rc.Client(base_url=server.url) as client:
        assert client.post("/o", json={}).text == "made"
    keys = {s.headers["idempotency-key"] for s in server.requests("/o")}
    assert len(keys) == 1


def test_decorator_deadline_bounds_the_requests_inside(server: LoopbackServer) -> None:
    server.script("/stall", Stall(5.0))
    client = rc.Client(base_url=server.url, timeout=10.0)

    @rc.retry(rc.RetryPolicy(deadline=0.6))
    def fetch() -> int:
        return client.get("/stall").status_code

    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout) as raised:
        fetch()
    elapsed = time.monotonic() - started
    client.close()
    assert elapsed < 1.5  # not the client's 10 s timeout
    assert len(server.requests("/stall")) == 1
    assert rc.outcome(raised.value).stopped_by == "deadline"
