"""The client half on real components: each attempt is a request as httpx
would have made it (cookies, DigestAuth, event hooks, respx, pytest-httpx),
keys belong to their request, deadlines bound every phase, retries reuse
their connection, and outcome() is complete."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import respx
from pytest_httpx import HTTPXMock

import reliable_client as rc
from reliable_client import testing
from reliable_client.server import IdempotencyMiddleware, MemoryStore
from reliable_client.testing import ChaosServer, Reply, SlowBody, closed_port

from .apps import Effects, StickyCookie, StrictDigest
from .callers import Caller

FAST = rc.RetryPolicy(backoff_initial=0.01, backoff_max=0.01)

# -- 7. the decorator's keys follow method and URL ---------------------------


def _orders_server() -> tuple[ChaosServer, Effects]:
    effects = Effects()
    app = IdempotencyMiddleware(effects, store=MemoryStore())
    return ChaosServer(app=app, lifetime=60), effects


def test_decorated_retry_keys_follow_method_and_url() -> None:
    server, effects = _orders_server()
    attempt = 0
    with server, rc.Client(base_url=server.url) as client:

        @rc.retry(FAST, on=(RuntimeError,))
        def checkout() -> None:
            nonlocal attempt
            attempt += 1
            if attempt == 1:
                client.post("/orders", json={"cart": 1}).raise_for_status()
                raise RuntimeError("the process lost its answer")
            # The second attempt takes another road: a refund first.
            client.post("/refunds", json={"cart": 1}).raise_for_status()
            client.post("/orders", json={"cart": 1}).raise_for_status()

        checkout()
        sent = server.requests()
    # The order ran once (its second POST was replayed); the refund once.
    assert effects.ran == {"/orders": 1, "/refunds": 1}
    orders = [s.headers["idempotency-key"] for s in sent if s.path == "/orders"]
    refunds = [s.headers["idempotency-key"] for s in sent if s.path == "/refunds"]
    assert len(orders) == 2 and orders[0] == orders[1]
    assert refunds[0] not in orders


async def test_decorated_retry_keys_follow_method_and_url_async() -> None:
    server, effects = _orders_server()
    attempt = 0
    with server:
        async with rc.AsyncClient(base_url=server.url) as client:

            @rc.retry(FAST, on=(RuntimeError,))
            async def checkout() -> None:
                nonlocal attempt
                attempt += 1
                if attempt == 1:
                    (await client.post("/orders", json={})).raise_for_status()
                    (await client.post("/orders", json={})).raise_for_status()
                    raise RuntimeError("lost")
                (await client.post("/refunds", json={})).raise_for_status()
                (await client.post("/orders", json={})).raise_for_status()
                (await client.post("/orders", json={})).raise_for_status()
                (await client.post("/orders", json={})).raise_for_status()

            await checkout()
        sent = server.requests("/orders")
    # Two orders in attempt 1; attempt 2 replays both and makes a third.
    assert effects.ran == {"/orders": 3, "/refunds": 1}
    keys = [s.headers["idempotency-key"] for s in sent]
    assert keys[2:4] == keys[0:2] and keys[4] not in keys[:2]


# -- 8. keys belong to the request, not to a context -------------------------


def test_a_plain_client_inside_a_hook_and_an_auth_flow_keys_its_requests() -> None:
    with ChaosServer(lifetime=60) as server:
        server.script("/orders", Reply(201))
        server.script("/audit", Reply(201))
        server.script("/token", Reply(201))
        nested = httpx.Client(transport=rc.RetryTransport(), base_url=server.url)

        def hook(request: httpx.Request) -> None:
            nested.post("/audit", json={"of": request.url.path}).raise_for_status()

        class TokenAuth(httpx.Auth):
            def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
                nested.post("/token").raise_for_status()
                request.headers["Authorization"] = "Bearer t"
                yield request

        with rc.Client(
            base_url=server.url, event_hooks={"request": [hook]}, auth=TokenAuth()
        ) as client:
            order = client.post("/orders")
        nested.close()
        audit = server.requests("/audit")[0]
        token = server.requests("/token")[0]
    key = rc.outcome(order).idempotency_key
    assert key is not None
    for inner in (audit, token):
        assert "idempotency-key" in inner.headers
        assert inner.headers["idempotency-key"] != key


def test_a_nested_stream_is_not_buffered() -> None:
    with ChaosServer(lifetime=60) as server:
        server.script("/slow", SlowBody(chunks=(b"a",) * 6, delay=0.15))
        server.script("/outer", Reply(200))
        nested = httpx.Client(transport=rc.RetryTransport(), base_url=server.url)
        first_chunk_after: list[float] = []

        def hook(response: httpx.Response) -> None:
            started = time.monotonic()
            with nested.stream("GET", "/slow") as streamed:
                for _ in streamed.iter_raw():
                    first_chunk_after.append(time.monotonic() - started)
                    break

        with rc.Client(base_url=server.url, event_hooks={"response": [hook]}) as c:
            c.get("/outer")
        nested.close()
    # Buffered, the first chunk would come after the whole body (~0.9 s).
    assert first_chunk_after and first_chunk_after[0] < 0.5


# -- 9. each attempt is a request as httpx would have made it ----------------


async def test_a_cookie_set_by_a_discarded_503_reaches_the_retry(
    kind: str,
) -> None:
    app = StickyCookie()
    with ChaosServer(app=app, lifetime=60) as server:
        caller = Caller(kind, base_url=server.url, retry=FAST, cookies={"user": "u1"})
        try:
            response = await caller.request("GET", "/cart")
        finally:
            await caller.close()
        assert caller.client.cookies.get("sticky") == "node-2"
    assert response.status_code == 200
    assert rc.outcome(response).attempts == 2
    assert app.cookies[0] == "user=u1"
    assert app.cookies[1] is not None
    assert sorted(app.cookies[1].split("; ")) == ["sticky=node-2", "user=u1"]


async def test_digest_auth_signs_each_attempt_afresh(kind: str) -> None:
    app = StrictDigest("ada", "lovelace")
    with ChaosServer(app=app, lifetime=60) as server:
        caller = Caller(
            kind,
            base_url=server.url,
            retry=FAST,
            auth=httpx.DigestAuth("ada", "lovelace"),
        )
        try:
            response = await caller.request("GET", "/private")
            stats = caller.client.stats
            budget = caller.client.budget.stats
        finally:
            await caller.close()
    assert response.status_code == 200
    # challenge, signed attempt (503), signed retry with the next count (200)
    assert app.answers == [401, 503, 200]
    assert app.counts_seen == ["00000001", "00000002"]
    assert rc.outcome(response).attempts == 2
    # One call, one deposit, whatever the auth flow sent on the way.
    assert stats.calls == 1 and stats.retries == 1
    assert budget.first_attempts == 1


def test_event_hooks_see_every_attempt() -> None:
    seen: list[tuple[int, int]] = []

    def on_response(response: httpx.Response) -> None:
        seen.append(
            (
                response.request.extensions["reliable_client.attempt"],
                response.status_code,
            )
        )

    with ChaosServer(lifetime=60) as server:
        server.script("/x", Reply(503), Reply(503), Reply(200))
        with rc.Client(
            base_url=server.url, retry=FAST, event_hooks={"response": [on_response]}
        ) as client:
            assert client.get("/x").status_code == 200
    assert seen == [(1, 503), (2, 503), (3, 200)]


@pytest.mark.parametrize("using", ["httpcore", "httpx"])
async def test_respx_sees_our_clients(kind: str, using: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}/orders"  # nothing listens there
    with respx.mock(using=using, assert_all_called=True) as router:
        route = router.post(url)
        route.side_effect = [httpx.Response(503), httpx.Response(201)]
        caller = Caller(kind, retry=FAST)
        try:
            response = await caller.request("POST", url, json={})
        finally:
            await caller.close()
    assert response.status_code == 201
    assert route.call_count == 2
    keys = {call.request.headers["Idempotency-Key"] for call in route.calls}
    assert len(keys) == 1


def test_pytest_httpx_sees_the_client(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url="http://api.test/items", status_code=503)
    httpx_mock.add_response(url="http://api.test/items", json={"ok": True})
    with rc.Client(retry=FAST) as client:
        response = client.get("http://api.test/items")
    assert response.json() == {"ok": True}
    assert len(httpx_mock.get_requests()) == 2


async def test_pytest_httpx_sees_the_async_client(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url="http://api.test/items", status_code=201)
    async with rc.AsyncClient() as client:
        response = await client.post("http://api.test/items", json={})
    assert response.status_code == 201
    assert "Idempotency-Key" in httpx_mock.get_requests()[0].headers


# -- 10. the deadline bounds every phase, the body included ------------------


class TrickleServer:
    """Answers headers after ``header_delay`` s, then one body byte every
    ``interval`` s (1,000 bytes announced)."""

    def __init__(self, header_delay: float, interval: float) -> None:
        self.header_delay = header_delay
        self.interval = interval
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                if self.stop.wait(self.header_delay):
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                for _ in range(1000):
                    if self.stop.wait(self.interval):
                        return
                    conn.sendall(b"x")
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("header_delay, interval", [(0.0, 0.45), (0.5, 0.45)])
async def test_deadline_ends_a_trickling_body_in_time(
    kind: str, header_delay: float, interval: float
) -> None:
    server = TrickleServer(header_delay, interval)
    caller = Caller(kind, timeout=10.0)
    started = time.monotonic()
    try:
        with pytest.raises(httpx.ReadTimeout) as info:
            await caller.request("GET", server.url, retry=rc.RetryPolicy(deadline=1.0))
        elapsed = time.monotonic() - started
    finally:
        await caller.close()
        server.close()
    assert elapsed < 1.2, f"the call took {elapsed:.2f} s for a 1 s deadline"
    assert rc.outcome(info.value).stopped_by == "deadline"


def test_deadline_bounds_a_plain_client_with_the_transport() -> None:
    server = TrickleServer(0.0, 0.45)
    policy = rc.RetryPolicy(deadline=1.0)
    started = time.monotonic()
    try:
        with (
            httpx.Client(transport=rc.RetryTransport(retry=policy), timeout=10) as c,
            pytest.raises(httpx.ReadTimeout),
        ):
            c.get(server.url)
    finally:
        server.close()
    assert time.monotonic() - started < 1.2


def test_a_decorator_deadline_bounds_a_trickling_body() -> None:
    server = TrickleServer(0.0, 0.45)

    @rc.retry(rc.RetryPolicy(deadline=1.0))
    def fetch(client: rc.Client) -> bytes:
        return client.get(server.url).content

    started = time.monotonic()
    try:
        with rc.Client(timeout=10.0) as client, pytest.raises(httpx.ReadTimeout):
            fetch(client)
    finally:
        server.close()
    assert time.monotonic() - started < 1.2


# -- 11. a retry reuses the connection ---------------------------------------


async def test_a_retry_reuses_the_connection_of_a_small_5xx(kind: str) -> None:
    with ChaosServer(lifetime=60) as server:
        server.script("/x", Reply(503, {}, b"busy " * 100), Reply(200))
        caller = Caller(kind, base_url=server.url, retry=FAST)
        try:
            response = await caller.request("GET", "/x")
        finally:
            await caller.close()
        sent = server.requests("/x")
    assert response.status_code == 200
    assert [s.connection for s in sent] == [1, 1]


async def test_a_large_discarded_body_is_not_read(kind: str) -> None:
    big = b"x" * (256 * 1024)
    with ChaosServer(lifetime=60) as server:
        server.script("/x", Reply(503, {}, big), Reply(200))
        caller = Caller(kind, base_url=server.url, retry=FAST)
        try:
            response = await caller.request("GET", "/x")
        finally:
            await caller.close()
        sent = server.requests("/x")
    assert response.status_code == 200
    assert [s.connection for s in sent] == [1, 2]  # closed unread: a new one


# -- 12. outcome() is complete -------------------------------------------------


async def test_outcome_finds_a_resource_id_sent_only_in_the_body(kind: str) -> None:
    idempotency = rc.Idempotency(resource_id_header=None, resource_id_field="id")
    with respx.mock() as router:
        route = router.post("http://api.test/orders").respond(201)
        caller = Caller(kind, idempotency=idempotency)
        try:
            response = await caller.request(
                "POST", "http://api.test/orders", json={"total": 5}
            )
        finally:
            await caller.close()
    body_id = __import__("json").loads(route.calls[0].request.content)["id"]
    assert rc.outcome(response).resource_id == body_id


async def test_outcome_of_an_unretried_error_names_a_custom_key_header(
    kind: str,
) -> None:
    idempotency = rc.Idempotency(header="X-Request-Key")
    caller = Caller(kind, idempotency=idempotency, retry=False)
    try:
        with pytest.raises(httpx.ConnectError) as info:
            await caller.request("POST", f"http://127.0.0.1:{closed_port()}/orders")
    finally:
        await caller.close()
    result = rc.outcome(info.value)
    assert result.idempotency_key is not None
    assert result.idempotency_key == info.value.request.headers["X-Request-Key"]
    assert result.resource_id == info.value.request.headers["X-Client-Resource-Id"]


async def test_outcome_says_a_final_409_is_in_progress(kind: str) -> None:
    with ChaosServer(lifetime=60) as server:
        server.script("/orders", Reply(409, {"Retry-After": "0"}))
        caller = Caller(kind, base_url=server.url, retry=FAST)
        try:
            response = await caller.request("POST", "/orders", json={})
            plain = await caller.request("GET", "/orders")
        finally:
            await caller.close()
    assert response.status_code == 409
    assert rc.outcome(response).in_progress
    assert rc.outcome(response).attempts == 3
    assert not rc.outcome(plain).in_progress  # an unkeyed 409 is a plain 409


# -- 13. smaller points --------------------------------------------------------


def test_retry_refuses_on_types_that_are_not_exceptions() -> None:
    for kind in (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
        with pytest.raises(TypeError, match=kind.__name__):
            rc.retry(on=(kind,))  # type: ignore[arg-type]


def test_retry_strategy_is_built_once() -> None:
    policy = rc.RetryPolicy()
    assert policy.retry_strategy is policy.retry_strategy


def test_a_per_host_budget_forgets_idle_hosts() -> None:
    now = [0.0]
    budget = rc.RetryBudget(per_host=True, ttl=10.0, clock=lambda: now[0])
    for index in range(100_000):
        budget.deposit(f"host-{index}.test")
    now[0] = 12.0  # every one of them idle for longer than ttl
    budget.deposit("fresh.test")
    assert budget.try_spend("fresh.test")
    assert len(budget._windows) < 100
    started = time.perf_counter()
    balance = budget.balance
    assert time.perf_counter() - started < 0.05
    assert balance == pytest.approx(budget.reserve + budget.ratio - 1)


def test_a_per_host_budget_keeps_live_hosts() -> None:
    now = [0.0]
    budget = rc.RetryBudget(
        per_host=True, ttl=10.0, min_per_second=0.1, clock=lambda: now[0]
    )
    assert budget.try_spend("busy.test")  # the reserve: one retry
    for index in range(200):
        budget.deposit(f"host-{index}.test")
    now[0] = 5.0
    for index in range(200):
        budget.deposit(f"other-{index}.test")
    # busy.test spent its reserve 5 s ago: still spent, not forgotten.
    assert not budget.try_spend("busy.test")


# -- every httpx argument is ours too ----------------------------------------


def _public_methods(cls: type) -> list[str]:
    names = ["__init__"]
    for name in dir(cls):
        if not name.startswith("_") and inspect.isfunction(getattr(cls, name)):
            names.append(name)
    return names


@pytest.mark.parametrize(
    "ours, theirs", [(rc.Client, httpx.Client), (rc.AsyncClient, httpx.AsyncClient)]
)
def test_every_httpx_argument_is_accepted(ours: type, theirs: type) -> None:
    methods = _public_methods(theirs)
    assert {"request", "stream", "send", "get", "post"} <= set(methods)
    for name in methods:
        their_params = inspect.signature(getattr(theirs, name)).parameters
        our_params = inspect.signature(getattr(ours, name)).parameters
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in our_params.values())
        for param in their_params.values():
            where = f"{ours.__name__}.{name}({param.name})"
            if param.name in our_params:
                mine = our_params[param.name]
                assert mine.kind == param.kind, where
                assert mine.default == param.default, where
            else:
                assert takes_kwargs and param.kind is param.KEYWORD_ONLY, where


def test_every_httpx_constructor_argument_builds_a_client() -> None:
    params = inspect.signature(httpx.Client.__init__).parameters
    values = {
        name: param.default
        for name, param in params.items()
        if name != "self" and param.default is not param.empty
    }
    with rc.Client(**values) as client:
        assert client.retry == rc.RetryPolicy()


def test_testing_mode_still_caps_a_client_call() -> None:
    with ChaosServer(lifetime=60) as server, testing.testing_mode(attempts=2) as mode:
        server.script("/x", Reply(503))
        with rc.Client(base_url=server.url) as client:
            assert client.get("/x").status_code == 503
    assert mode.retries == 1


# -- found in review: each has a failing run on the earlier tree -------------


class RawServer:
    """A raw-socket HTTP/1.1 server: ``handler(conn, number)`` per connection."""

    def __init__(self, handler: Callable[[socket.socket, int], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.connections = 0
        self.stop = threading.Event()
        self.handler = handler
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            number = self.connections
            threading.Thread(target=self._run, args=(conn, number), daemon=True).start()

    def _run(self, conn: socket.socket, number: int) -> None:
        with conn, contextlib.suppress(OSError):
            self.handler(conn, number)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def read_head(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    return True


async def test_async_deadline_bounds_trickling_headers() -> None:
    def handler(conn: socket.socket, number: int) -> None:
        read_head(conn)
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100:
            conn.sendall(bytes([byte]))
            time.sleep(0.2)

    server = RawServer(handler)
    started = time.monotonic()
    try:
        async with rc.AsyncClient(timeout=10.0) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(server.url, retry=rc.RetryPolicy(deadline=1.0))
    finally:
        server.close()
    assert time.monotonic() - started < 1.3


def test_a_stalled_discarded_body_does_not_hold_the_retry() -> None:
    def handler(conn: socket.socket, number: int) -> None:
        while read_head(conn):
            if number == 1:
                # A 503 that announces 100 bytes, sends 10, then stalls.
                conn.sendall(b"HTTP/1.1 503 x\r\nContent-Length: 100\r\n\r\n0123456789")
                time.sleep(5)
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = RawServer(handler)
    started = time.monotonic()
    try:
        with rc.Client(timeout=10.0, retry=FAST) as client:
            response = client.get(server.url)
    finally:
        server.close()
    assert response.status_code == 200
    assert time.monotonic() - started < 1.0  # drained for 0.1 s at most


def test_no_retry_is_sent_once_the_deadline_has_passed() -> None:
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        return httpx.Response(503, headers={"Retry-After": "0"})

    def slow_sleep(seconds: float) -> None:
        time.sleep(0.3)  # a wait longer than it said (a busy machine)

    policy = rc.RetryPolicy(deadline=0.2, max_attempts=5)
    transport = rc.RetryTransport(
        httpx.MockTransport(handler), retry=policy, sleep=slow_sleep
    )
    with httpx.Client(transport=transport) as client:
        response = client.get("http://api.test/")
    assert response.status_code == 503
    assert len(seen) == 1
    assert rc.outcome(response).stopped_by == "deadline"


def test_the_same_request_sent_twice_is_two_calls() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return httpx.Response(201)

    with rc.Client(transport=httpx.MockTransport(handler)) as client:
        request = client.build_request("POST", "http://api.test/orders", json={})
        client.send(request, retry=rc.RetryPolicy(deadline=0.05))
        time.sleep(0.1)  # the first call's deadline is long gone
        assert client.send(request).status_code == 201
    assert len(keys) == 2 and keys[0] != keys[1]


def test_a_raise_for_status_hook_keeps_status_retries() -> None:
    statuses = iter([503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses))

    with rc.Client(
        transport=httpx.MockTransport(handler),
        retry=FAST,
        event_hooks={"response": [lambda r: r.raise_for_status()]},
    ) as client:
        response = client.get("http://api.test/")
    assert response.status_code == 200
    assert rc.outcome(response).attempts == 2


def test_a_callers_own_cookie_header_is_sent_as_is_on_retries() -> None:
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("Cookie"))
        if len(sent) == 1:
            return httpx.Response(503, headers={"Set-Cookie": "sid=server; Path=/"})
        return httpx.Response(200)

    with rc.Client(transport=httpx.MockTransport(handler), retry=FAST) as client:
        client.get("http://api.test/", headers={"Cookie": "sid=mine; theme=dark"})
    assert sent == ["sid=mine; theme=dark", "sid=mine; theme=dark"]


def test_a_client_adopting_a_transport_uses_its_sleep() -> None:
    slept: list[float] = []
    transport = rc.RetryTransport(
        httpx.MockTransport(lambda request: httpx.Response(503)),
        retry=rc.RetryPolicy(backoff_initial=1.0, jitter="none"),
        sleep=slept.append,
    )
    started = time.monotonic()
    with rc.Client(transport=transport) as client:
        client.get("http://api.test/")
    assert slept == [1.0, 2.0]
    assert time.monotonic() - started < 0.5
