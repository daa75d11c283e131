"""The Idempotency-Key middleware over bare ASGI, Starlette and FastAPI apps."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import reliable_client
from reliable_client import testing
from reliable_client.server import (
    IdempotencyMiddleware,
    IdempotencyStore,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    StoredResponse,
)

from .conftest import FakeClock, RedisServer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

KEY = "Idempotency-Key"


class Payments:
    """A bare ASGI app that creates a payment per call (and counts them)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.gate: asyncio.Event | None = None  # when set: wait for it
        self.entered = asyncio.Event()
        self.statuses: list[int] = []  # scripted statuses, then 201
        self.fail_next = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("handler crashed")
        status = self.statuses.pop(0) if self.statuses else 201
        payload = json.dumps({"payment": self.calls, "body": body.decode("latin-1")})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"location", f"/payments/{self.calls}".encode()),
                    (b"set-cookie", b"session=secret"),
                    (b"x-internal", b"not replayed"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload.encode()})


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    )


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["detail"]


@pytest.fixture
def payments() -> Payments:
    return Payments()


@pytest.fixture
def memory(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


# --- The race of the essay: exactly once, on every store ---------------------


async def test_fifty_concurrent_requests_with_one_key_run_once(
    store: IdempotencyStore,
) -> None:
    app = Payments(delay=0.05)  # a slow handler widens the race
    async with client_for(IdempotencyMiddleware(app, store=store)) as client:
        responses = await asyncio.gather(
            *(
                client.post("/payments", json={"amount": 5}, headers={KEY: "k1"})
                for _ in range(50)
            )
        )
        after = await client.post("/payments", json={"amount": 5}, headers={KEY: "k1"})
    assert app.calls == 1
    original = [r for r in responses if r.status_code == 201]
    assert len(original) == 1 and "idempotent-replayed" not in original[0].headers
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "key-in-flight")
            # The holder's lease left, in whole seconds (lease 5 s).
            assert 1 <= int(response.headers["retry-after"]) <= 5
        elif response is not original[0]:
            assert response.headers["idempotent-replayed"] == "true"
    assert after.headers["idempotent-replayed"] == "true"
    assert after.content == original[0].content


async def test_handler_killed_mid_flight_is_taken_over_after_the_lease(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    app = Payments()
    app.gate = asyncio.Event()  # never set: the first handler hangs
    wrapped = IdempotencyMiddleware(app, store=store, lease=30.0)
    async with client_for(wrapped) as client:
        first = asyncio.create_task(client.post("/p", content=b"x", headers={KEY: "k"}))
        await app.entered.wait()
        first.cancel()  # the worker dies; its claim is left behind
        with pytest.raises(asyncio.CancelledError):
            await first
        busy = await client.post("/p", content=b"x", headers={KEY: "k"})
        assert_problem(busy, 409, "key-in-flight")
        clock.advance(31.0)
        app.gate = None
        retried = await client.post("/p", content=b"x", headers={KEY: "k"})
        assert retried.status_code == 201
        replay = await client.post("/p", content=b"x", headers={KEY: "k"})
    assert replay.headers["idempotent-replayed"] == "true"
    assert app.calls == 2


async def test_a_running_handler_renews_its_lease(
    payments: Payments, memory: MemoryStore, clock: FakeClock
) -> None:
    payments.gate = asyncio.Event()
    wrapped = IdempotencyMiddleware(payments, store=memory, lease=0.15)
    async with client_for(wrapped) as client:
        first = asyncio.create_task(client.post("/p", headers={KEY: "k"}))
        await payments.entered.wait()
        clock.advance(10.0)  # far past the first lease...
        for _ in range(200):  # ...until the renewer (every 0.05 s) extends it
            if all(r.expires_at > clock.now for r in memory._records.values()):
                break
            await asyncio.sleep(0.01)
        second = await client.post("/p", headers={KEY: "k"})
        payments.gate.set()
        assert (await first).status_code == 201
    assert_problem(second, 409, "key-in-flight")  # alive: not taken over
    assert payments.calls == 1


# --- Replay, conflicts, mismatch ---------------------------------------------


async def test_replay_marks_the_response_and_never_sends_set_cookie(
    payments: Payments, memory: MemoryStore
) -> None:
    async with client_for(IdempotencyMiddleware(payments, store=memory)) as client:
        first = await client.post("/payments", json={"a": 1}, headers={KEY: "k"})
        again = await client.post("/payments", json={"a": 1}, headers={KEY: "k"})
    assert first.headers["set-cookie"] == "session=secret"  # live answer untouched
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == "/payments/1"
    assert again.headers["content-type"] == "application/json"
    assert "set-cookie" not in again.headers and "x-internal" not in again.headers
    assert again.content == first.content
    assert payments.calls == 1
    stored = [r.response for r in memory._records.values()]
    assert stored and all(
        "set-cookie" not in dict(s.headers) for s in stored if s is not None
    )


async def test_in_flight_answers_409_with_retry_after(
    payments: Payments, clock: FakeClock
) -> None:
    # Retry-After: the seconds left of the holder's lease, so that a retry
    # comes when it could take over the key of a holder that died.
    payments.gate = asyncio.Event()
    store = MemoryStore(clock=clock)
    async with client_for(IdempotencyMiddleware(payments, store=store)) as c:
        first = asyncio.create_task(c.post("/p", headers={KEY: "k"}))
        await payments.entered.wait()
        clock.advance(1.5)
        busy = await c.post("/p", headers={KEY: "k"})
        clock.advance(3.4)
        late = await c.post("/p", headers={KEY: "k"})
        payments.gate.set()
        assert (await first).status_code == 201
    assert_problem(busy, 409, "key-in-flight")
    assert busy.headers["retry-after"] == "4"  # 3.5 s left, rounded up
    assert late.headers["retry-after"] == "1"  # 0.1 s left: at least 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/payments", b'{"amount": 6}'),
        ("/refunds", b'{"amount": 5}'),
        ("/payments?x=1", b'{"amount": 5}'),
    ],
    ids=["body", "path", "query"],
)
async def test_key_reused_with_another_request_is_422(
    payments: Payments, path: str, body: bytes
) -> None:
    async with client_for(IdempotencyMiddleware(payments, store=MemoryStore())) as c:
        await c.post("/payments", content=b'{"amount": 5}', headers={KEY: "k"})
        reused = await c.post(path, content=body, headers={KEY: "k"})
    assert_problem(reused, 422, "key-reused")
    assert payments.calls == 1


async def test_key_reused_while_in_flight_is_still_422(payments: Payments) -> None:
    payments.gate = asyncio.Event()
    async with client_for(IdempotencyMiddleware(payments, store=MemoryStore())) as c:
        first = asyncio.create_task(c.post("/p", content=b"a", headers={KEY: "k"}))
        await payments.entered.wait()
        reused = await c.post("/p", content=b"b", headers={KEY: "k"})
        payments.gate.set()
        await first
    assert_problem(reused, 422, "key-reused")


# --- Keys: missing, hostile, quoted ------------------------------------------


async def test_missing_key_is_400_when_required(payments: Payments) -> None:
    wrapped = IdempotencyMiddleware(payments, store=MemoryStore(), required=True)
    async with client_for(wrapped) as client:
        missing = await client.post("/p", json={})
        read = await client.get("/p")  # other methods never need a key
    assert_problem(missing, 400, "key-missing")
    assert "Idempotency-Key" in missing.json()["detail"]
    assert read.status_code == 201 and payments.calls == 1


async def test_unkeyed_and_other_methods_pass_through(payments: Payments) -> None:
    async with client_for(IdempotencyMiddleware(payments, store=MemoryStore())) as c:
        for _ in range(2):
            assert (await c.post("/p")).status_code == 201
            assert (await c.put("/p", headers={KEY: "k"})).status_code == 201
    assert payments.calls == 4  # not keyed-and-protected: each one ran


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"   ",
        b'""',
        b"x" * 10_240,
        b'"' + b"x" * 10_240 + b'"',
        b"x" * 256,
        "ключ".encode(),
        "caf\u00e9".encode("latin-1"),
        b"a\x01b",
        b'"abc',
        b'"a"b"',
        b'"abc";param=1',
        b'"a\\qb"',
        b"a b",
        b'a"b',
    ],
    ids=[
        "empty",
        "blank",
        "empty-quoted",
        "10KB",
        "10KB-quoted",
        "256-chars",
        "non-ascii-utf8",
        "non-ascii-latin1",
        "control-char",
        "unclosed-quote",
        "stray-quote",
        "parameters",
        "bad-escape",
        "unquoted-space",
        "unquoted-quote",
    ],
)
async def test_hostile_keys_get_a_clear_400(payments: Payments, value: bytes) -> None:
    async with client_for(IdempotencyMiddleware(payments, store=MemoryStore())) as c:
        response = await c.post("/p", content=b"{}", headers=[(KEY.encode(), value)])
    assert_problem(response, 400, "key-malformed")
    assert payments.calls == 0


async def test_two_key_fields_are_refused(payments: Payments) -> None:
    async with client_for(IdempotencyMiddleware(payments, store=MemoryStore())) as c:
        response = await c.post("/p", headers=[(KEY, "a"), (KEY, "b")])
    assert_problem(response, 400, "key-malformed")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("abc", '"abc"'),
        ('"abc"', "abc"),
        (' "abc" ', "abc"),
        ("x" * 255, f'"{"x" * 255}"'),
        ('"a \\"quoted\\" \\\\ key"', '"a \\"quoted\\" \\\\ key"'),
        (
            "0190d7c2-3b1a-7cc4-9d3e-4f6a8b1c2d3e",
            '"0190d7c2-3b1a-7cc4-9d3e-4f6a8b1c2d3e"',
        ),
    ],
    ids=[
        "bare-then-quoted",
        "quoted-then-bare",
        "padded",
        "255-chars",
        "escapes",
        "uuid7",
    ],
)
async def test_quoted_and_bare_forms_are_one_key(
    payments: Payments, first: str, second: str
) -> None:
    async with client_for(IdempotencyMiddleware(payments, store=MemoryStore())) as c:
        one = await c.post("/p", content=b"{}", headers={KEY: first})
        two = await c.post("/p", content=b"{}", headers={KEY: second})
    assert one.status_code == 201 and "idempotent-replayed" not in one.headers
    assert two.headers["idempotent-replayed"] == "true"
    assert payments.calls == 1


async def test_header_name_and_methods_are_configurable(payments: Payments) -> None:
    wrapped = IdempotencyMiddleware(
        payments, store=MemoryStore(), header="X-Request-Key", methods={"PUT"}
    )
    async with client_for(wrapped) as c:
        for _ in range(2):
            await c.put("/p", headers={"x-request-key": "k"})
            await c.post("/p", headers={"x-request-key": "k"})
    assert payments.calls == 3  # the PUT ran once, both POSTs ran


# --- Bodies ------------------------------------------------------------------


async def test_binary_and_empty_bodies_are_fingerprinted(payments: Payments) -> None:
    async with client_for(IdempotencyMiddleware(payments, store=MemoryStore())) as c:
        for _ in range(2):
            await c.post("/p", content=b"\xff\xfe\x00not json", headers={KEY: "bin"})
            await c.post("/p", headers={KEY: "empty"})
        other = await c.post("/p", content=b"\xff\xfe\x00", headers={KEY: "bin"})
    assert payments.calls == 2
    assert other.status_code == 422


async def test_too_large_body_is_413_and_nothing_runs(payments: Payments) -> None:
    wrapped = IdempotencyMiddleware(payments, store=MemoryStore(), max_body=10)
    async with client_for(wrapped) as client:
        declared = await client.post("/p", content=b"x" * 11, headers={KEY: "k"})

        async def chunks() -> Any:  # no Content-Length: counted while read
            for _ in range(3):
                yield b"x" * 5

        streamed = await client.post("/p", content=chunks(), headers={KEY: "k"})
        fits = await client.post("/p", content=b"x" * 10, headers={KEY: "k"})
    assert_problem(declared, 413, "body-too-large")
    assert_problem(streamed, 413, "body-too-large")
    assert fits.status_code == 201 and payments.calls == 1


async def test_client_gone_while_sending_the_body_runs_nothing(
    payments: Payments, memory: MemoryStore
) -> None:
    wrapped = IdempotencyMiddleware(payments, store=memory)
    messages = [
        {"type": "http.request", "body": b"part", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/p",
        "query_string": b"",
        "headers": [(b"idempotency-key", b"k")],
    }
    await wrapped(scope, receive, send)
    assert sent == [] and payments.calls == 0 and len(memory) == 0


# --- Failures of the handler -------------------------------------------------


async def test_handler_exception_releases_the_claim(payments: Payments) -> None:
    payments.fail_next = True
    async with client_for(IdempotencyMiddleware(payments, store=MemoryStore())) as c:
        with pytest.raises(RuntimeError, match="handler crashed"):
            await c.post("/p", headers={KEY: "k"})
        retried = await c.post("/p", headers={KEY: "k"})
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    assert payments.calls == 2


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_not_done_answers_are_released_not_stored(
    payments: Payments, status: int
) -> None:
    payments.statuses = [status]
    async with client_for(IdempotencyMiddleware(payments, store=MemoryStore())) as c:
        failed = await c.post("/p", headers={KEY: "k"})
        retried = await c.post("/p", headers={KEY: "k"})
    assert failed.status_code == status
    assert retried.status_code == 201 and payments.calls == 2


async def test_client_errors_are_stored_and_replayed(payments: Payments) -> None:
    payments.statuses = [400]
    async with client_for(IdempotencyMiddleware(payments, store=MemoryStore())) as c:
        first = await c.post("/p", headers={KEY: "k"})
        again = await c.post("/p", headers={KEY: "k"})
    assert first.status_code == again.status_code == 400
    assert again.headers["idempotent-replayed"] == "true" and payments.calls == 1


async def test_app_without_a_complete_response_releases(memory: MemoryStore) -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async with client_for(IdempotencyMiddleware(silent, store=memory)) as c:
        with pytest.raises(RuntimeError, match="without a complete response"):
            await c.post("/p", headers={KEY: "k"})
    assert len(memory) == 0


async def test_non_http_scopes_pass_through(memory: MemoryStore) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def never() -> Message:
        raise AssertionError

    async def ignore(message: Message) -> None:
        raise AssertionError

    await IdempotencyMiddleware(app, store=memory)({"type": "lifespan"}, never, ignore)
    assert seen == ["lifespan"]


# --- Scope, expiry -----------------------------------------------------------


async def test_keys_are_scoped_per_principal(payments: Payments) -> None:
    def tenant(scope: Scope) -> str:
        return dict(scope["headers"]).get(b"x-tenant", b"").decode()

    wrapped = IdempotencyMiddleware(payments, store=MemoryStore(), scope=tenant)
    async with client_for(wrapped) as c:
        alice = await c.post("/p", headers={KEY: "k", "x-tenant": "alice"})
        bob = await c.post("/p", headers={KEY: "k", "x-tenant": "bob"})
        alice_again = await c.post("/p", headers={KEY: "k", "x-tenant": "alice"})
    assert "idempotent-replayed" not in bob.headers
    assert alice_again.content == alice.content != bob.content
    assert payments.calls == 2


async def test_completed_keys_expire(
    payments: Payments, memory: MemoryStore, clock: FakeClock
) -> None:
    wrapped = IdempotencyMiddleware(payments, store=memory, expiry=60.0)
    async with client_for(wrapped) as c:
        await c.post("/p", headers={KEY: "k"})
        clock.advance(59.0)
        replay = await c.post("/p", headers={KEY: "k"})
        clock.advance(2.0)
        fresh = await c.post("/p", headers={KEY: "k"})
    assert replay.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in fresh.headers and payments.calls == 2


# --- A store that is down ----------------------------------------------------


class BrokenStore(MemoryStore):
    def __init__(self, *, broken: str) -> None:
        super().__init__()
        self.broken = broken

    async def claim(self, key: str, fingerprint: str, *, lease: float) -> Any:
        if self.broken == "claim":
            raise ConnectionError("store down")
        return await super().claim(key, fingerprint, lease=lease)

    async def complete(
        self, key: str, token: str, response: StoredResponse, *, expiry: float
    ) -> bool:
        if self.broken == "complete":
            raise ConnectionError("store down")
        if self.broken == "lost-lease":
            return False
        return await super().complete(key, token, response, expiry=expiry)

    async def release(self, key: str, token: str) -> bool:
        if self.broken == "release":
            raise ConnectionError("store down")
        return await super().release(key, token)

    async def extend(self, key: str, token: str, *, lease: float) -> bool:
        if self.broken == "extend":
            raise ConnectionError("store down")
        return await super().extend(key, token, lease=lease)


async def test_store_down_at_claim_is_503_and_nothing_runs(payments: Payments) -> None:
    wrapped = IdempotencyMiddleware(payments, store=BrokenStore(broken="claim"))
    async with client_for(wrapped) as c:
        response = await c.post("/p", headers={KEY: "k"})
    assert_problem(response, 503, "store-unavailable")
    assert response.headers["retry-after"] == "1"
    assert payments.calls == 0


@pytest.mark.parametrize("broken", ["complete", "lost-lease"])
async def test_store_failing_after_the_handler_still_answers(
    payments: Payments, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrapped = IdempotencyMiddleware(payments, store=BrokenStore(broken=broken))
    with caplog.at_level(logging.WARNING, logger="reliable_client.server"):
        async with client_for(wrapped) as c:
            response = await c.post("/p", headers={KEY: "k"})
    assert response.status_code == 201
    assert caplog.records


async def test_store_failing_to_release_keeps_the_handler_error(
    payments: Payments, caplog: pytest.LogCaptureFixture
) -> None:
    payments.fail_next = True
    wrapped = IdempotencyMiddleware(payments, store=BrokenStore(broken="release"))
    async with client_for(wrapped) as c:
        with pytest.raises(RuntimeError, match="handler crashed"):
            await c.post("/p", headers={KEY: "k"})
    assert "failed to release" in caplog.text


async def test_store_failing_to_renew_is_survived(
    payments: Payments, caplog: pytest.LogCaptureFixture
) -> None:
    payments.delay = 0.1
    store = BrokenStore(broken="extend")
    wrapped = IdempotencyMiddleware(payments, store=store, lease=0.09)
    async with client_for(wrapped) as c:
        assert (await c.post("/p", headers={KEY: "k"})).status_code == 201
    assert "failed to renew" in caplog.text


async def test_redis_stopped_mid_test_is_503_and_nothing_runs(
    private_redis_server: RedisServer, payments: Payments
) -> None:
    store = RedisStore(private_redis_server.url)
    async with client_for(IdempotencyMiddleware(payments, store=store)) as c:
        assert (await c.post("/p", headers={KEY: "a"})).status_code == 201
        private_redis_server.stop()
        down = await c.post("/p", headers={KEY: "b"})
        replay_down = await c.post("/p", headers={KEY: "a"})
    await store.aclose()
    assert_problem(down, 503, "store-unavailable")
    assert_problem(replay_down, 503, "store-unavailable")
    assert down.headers["retry-after"] == "1"
    assert payments.calls == 1


# --- Frameworks --------------------------------------------------------------


async def test_starlette_app(tmp_path: Any) -> None:
    created: list[str] = []

    async def create(request: Request) -> Response:
        created.append((await request.body()).decode())
        await asyncio.sleep(0.02)
        response = JSONResponse({"id": len(created)}, status_code=201)
        response.set_cookie("session", "secret")
        response.headers["location"] = f"/payments/{len(created)}"
        return response

    store = SQLiteStore(tmp_path / "keys.db")
    app = Starlette(
        routes=[Route("/payments", create, methods=["POST"])],
        middleware=[Middleware(IdempotencyMiddleware, store=store)],
    )
    async with client_for(app) as client:
        answers = await asyncio.gather(
            *(
                client.post("/payments", json={"n": 1}, headers={KEY: "k"})
                for _ in range(5)
            )
        )
        replay = await client.post("/payments", json={"n": 1}, headers={KEY: "k"})
    await store.aclose()
    assert len(created) == 1
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409]
    assert replay.json() == {"id": 1} and replay.headers["location"] == "/payments/1"
    assert replay.headers["idempotent-replayed"] == "true"
    assert "set-cookie" not in replay.headers


class Payment(BaseModel):
    amount: int


async def test_fastapi_app_with_malformed_bodies() -> None:
    app = FastAPI()
    created: list[int] = []

    @app.post("/payments", status_code=201)
    async def create(payment: Payment) -> dict[str, int]:
        created.append(payment.amount)
        return {"id": len(created)}

    app.add_middleware(IdempotencyMiddleware, store=MemoryStore(), required=True)
    async with client_for(app) as client:
        ok = await client.post("/payments", json={"amount": 5}, headers={KEY: "a"})
        again = await client.post("/payments", json={"amount": 5}, headers={KEY: "a"})
        broken = b'{"amount": 5'
        bad = await client.post("/payments", content=broken, headers={KEY: "b"})
        bad_again = await client.post("/payments", content=broken, headers={KEY: "b"})
        missing = await client.post("/payments", json={"amount": 5})
    assert ok.status_code == 201 and again.json() == ok.json() == {"id": 1}
    assert again.headers["idempotent-replayed"] == "true"
    assert bad.status_code == 422 and "detail" in bad.json()  # FastAPI's own 422
    assert bad_again.headers["idempotent-replayed"] == "true"
    assert_problem(missing, 400, "key-missing")
    assert created == [5]


# --- End to end with reliable_client -----------------------------------------


async def test_reliable_client_retries_a_409_and_gets_the_replay(
    payments: Payments, no_sleep: testing.TestingMode
) -> None:
    payments.gate = asyncio.Event()
    protected = IdempotencyMiddleware(payments, store=MemoryStore())
    first_done = asyncio.Event()

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        # When the 409 goes out, let the first request finish first, so the
        # client's retry finds the stored response (no timing guesses).
        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 409:
                assert payments.gate is not None
                payments.gate.set()
                await first_done.wait()
            await send(message)

        await protected(scope, receive, watch)

    async with (
        client_for(front) as plain,
        reliable_client.AsyncClient(
            transport=httpx.ASGITransport(app=front), base_url="http://test"
        ) as client,
    ):
        first = asyncio.create_task(
            plain.post("/payments", json={"amount": 5}, headers={KEY: "shared"})
        )
        first.add_done_callback(lambda _: first_done.set())
        await payments.entered.wait()
        retried = await client.post(
            "/payments", json={"amount": 5}, headers={KEY: "shared"}
        )
        original = await first
    record = reliable_client.outcome(retried)
    assert payments.calls == 1
    assert retried.status_code == 201 and retried.content == original.content
    assert record.attempts == 2 and record.replayed
    assert len(record.retries) == 1 and "409" in record.retries[0]
    assert len(no_sleep.sleeps) == 1  # one retry, slept without real time


async def test_reliable_client_keys_make_retries_safe(memory: MemoryStore) -> None:
    app = Payments()
    app.statuses = [503]  # the first attempt fails: released, the retry runs
    async with reliable_client.AsyncClient(
        transport=httpx.ASGITransport(app=IdempotencyMiddleware(app, store=memory)),
        base_url="http://test",
    ) as client:
        with testing.testing_mode():
            response = await client.post("/payments", json={"amount": 5})
    assert response.status_code == 201 and app.calls == 2
    key = reliable_client.outcome(response).idempotency_key
    assert key and response.request.headers[KEY] == key


# --- Construction ------------------------------------------------------------


def test_defaults_and_bad_arguments(payments: Payments) -> None:
    default = IdempotencyMiddleware(payments)
    assert isinstance(default.store, SQLiteStore)
    assert default.methods == {"POST", "PATCH"} and default.expiry == 86400.0
    assert default.lease == 5.0 and default.max_key_length == 255
    with pytest.raises(ValueError, match="Set-Cookie"):
        IdempotencyMiddleware(payments, replay_headers={"Set-Cookie"})
    with pytest.raises(TypeError, match="replay_headers"):
        IdempotencyMiddleware(payments, replay_headers="location")
    with pytest.raises(TypeError, match="store"):
        IdempotencyMiddleware(payments, store=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scope"):
        IdempotencyMiddleware(payments, scope="tenant")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease"):
        IdempotencyMiddleware(payments, lease=0)
    with pytest.raises(ValueError, match="methods"):
        IdempotencyMiddleware(payments, methods={"post"})
    with pytest.raises(ValueError, match="max_key_length"):
        IdempotencyMiddleware(payments, max_key_length=0)
    with pytest.raises(ValueError, match="header"):
        IdempotencyMiddleware(payments, header="Bad Header")
