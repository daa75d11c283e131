"""The fault-injecting server users get from reliable_client.testing."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from typing import Any

import httpx
import pytest

import reliable_client as rc
from reliable_client.testing import (
    ChaosServer,
    FaultMix,
    Forward,
    ForwardThenDrop,
    ForwardThenTruncate,
    Reply,
    TestingMode,
)


class CountingApp:
    """A tiny ASGI app that counts the requests it processed."""

    def __init__(self) -> None:
        self.processed: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.processed.append(
            f"{scope['method']} {scope['path']}?{scope['query_string'].decode()}"
        )
        payload = json.dumps({"n": len(self.processed), "echo": body.decode()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"x-app", b"yes")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def test_forwards_to_an_asgi_app() -> None:
    app = CountingApp()
    with ChaosServer(app=app) as server:
        response = httpx.post(server.url + "/things?x=1", content=b"hello")
    assert response.status_code == 200
    assert response.headers["x-app"] == "yes"
    assert response.json() == {"n": 1, "echo": "hello"}
    assert app.processed == ["POST /things?x=1"]
    (seen,) = server.requests("/things")
    assert (seen.method, seen.query, seen.body, seen.action) == (
        "POST",
        "x=1",
        b"hello",
        "Forward",
    )


def test_forward_then_drop_processes_but_loses_the_response() -> None:
    app = CountingApp()
    with ChaosServer(app=app) as server:
        server.script("/pay", ForwardThenDrop(), ForwardThenDrop(reset=True), Forward())
        with httpx.Client(base_url=server.url) as client:
            for _ in range(2):
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                    client.post("/pay", content=b"{}")
            assert client.post("/pay", content=b"{}").json()["n"] == 3
    assert len(app.processed) == 3  # the app did the work every time


def test_truncated_response_after_processing() -> None:
    app = CountingApp()
    with ChaosServer(app=app) as server:
        server.script("/t", ForwardThenTruncate(), Forward())
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(server.url + "/t")
        assert httpx.get(server.url + "/t").status_code == 200
    assert len(app.processed) == 2


def test_reliable_client_survives_lost_responses_with_one_key(
    no_sleep: TestingMode,
) -> None:
    app = CountingApp()
    with ChaosServer(app=app) as server:
        server.script("/orders", ForwardThenDrop(), Reply(503), Forward())
        with rc.Client(base_url=server.url) as client:
            response = client.post("/orders", json={"item": 1})
    assert response.status_code == 200
    keys = {seen.headers["idempotency-key"] for seen in server.requests("/orders")}
    assert len(keys) == 1 and len(server.requests("/orders")) == 3


def test_fault_mix_rates_are_seeded_and_close_to_asked() -> None:
    mix = FaultMix(drop_after=0.1, unavailable=0.2, retry_after=1.5, reset=0.05)
    rng_a, rng_b = random.Random(11), random.Random(11)
    first = [mix.pick(rng_a) for _ in range(2000)]
    assert first == [mix.pick(rng_b) for _ in range(2000)]  # repeatable
    kinds = Counter(type(a).__name__ for a in first)
    assert 150 < kinds["ForwardThenDrop"] < 250
    assert 330 < kinds["Reply"] < 470
    assert 60 < kinds["Reset"] < 140
    replies = [a for a in first if isinstance(a, Reply)]
    assert all(dict(r.headers)["Retry-After"] == "1.5" for r in replies)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"drop_after": -0.1}, {"reset": 1.5}, {"drop_after": 0.6, "unavailable": 0.6}],
)
def test_fault_mix_rejects_bad_rates(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="FaultMix"):
        FaultMix(**kwargs)


def test_faults_on_a_prefix_against_a_real_app() -> None:
    app = CountingApp()
    with ChaosServer(app=app, seed=5) as server:
        server.faults("/api/*", FaultMix(unavailable=0.5))
        statuses = Counter(
            httpx.get(server.url + f"/api/{i}").status_code for i in range(60)
        )
        assert httpx.get(server.url + "/other").status_code == 200  # not faulted
    assert statuses[503] > 10 and statuses[200] > 10
    assert len(app.processed) == statuses[200] + 1


def test_outage_window() -> None:
    with ChaosServer() as server:
        server.script("/x", Reply(200, {"A": "b"}, b"up"))
        server.outage(0.3, start_in=0.2, retry_after=2)
        before = httpx.get(server.url + "/x")
        time.sleep(0.25)
        during = httpx.get(server.url + "/x")
        time.sleep(0.35)
        after = httpx.get(server.url + "/x")
    assert (before.status_code, during.status_code, after.status_code) == (
        200,
        503,
        200,
    )
    assert during.headers["retry-after"] == "2"
    assert before.headers["a"] == "b"


def test_script_needs_an_action_and_unknown_paths_are_404() -> None:
    with ChaosServer() as server:
        with pytest.raises(ValueError):
            server.script("/x")
        assert httpx.get(server.url + "/nothing").status_code == 404


def test_lifetime_bounds_the_server() -> None:
    server = ChaosServer(lifetime=0.3).start()
    try:
        time.sleep(0.8)
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url + "/", timeout=1.0)
    finally:
        server.stop()


def test_pytest_plugin_fixture(chaos_server: ChaosServer) -> None:
    chaos_server.script("/ping", Reply(200, body=b"pong"))
    assert httpx.get(chaos_server.url + "/ping").text == "pong"
    assert chaos_server.url.startswith("http://127.0.0.1:")


def test_pytest_plugin_testing_mode(retry_testing_mode: TestingMode) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    with rc.Client(transport=transport) as client:
        assert client.get("http://x/").status_code == 503
    assert retry_testing_mode.retries == 2


def test_forward_answers_when_the_app_has_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Background work after the last body message neither delays the answer
    # nor, when it fails, turns it into a 500 (as under a real ASGI server).
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"made"})
        await asyncio.sleep(1.0)
        raise RuntimeError("a background task failed")

    with ChaosServer(app=app) as server:
        started = time.monotonic()
        response = httpx.post(server.url + "/orders")
        elapsed = time.monotonic() - started
        time.sleep(1.2)
    assert response.status_code == 201 and response.text == "made"
    assert elapsed < 0.5
    assert any("after its response was sent" in r.getMessage() for r in caplog.records)


def test_seen_requests_name_their_connection() -> None:
    with ChaosServer() as server:
        server.script("/x", Reply(200))
        with httpx.Client() as client:
            client.get(server.url + "/x")
            client.get(server.url + "/x")
        httpx.get(server.url + "/x")
        assert [seen.connection for seen in server.requests("/x")] == [1, 1, 2]
        assert server.connections == 2


def test_a_request_cut_short_never_reaches_the_app() -> None:
    import socket

    calls: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with ChaosServer(app=app) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as conn:
            # 100 bytes announced, 10 sent: the client dies mid-body.
            conn.sendall(
                b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                b"0123456789"
            )
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(5)
            assert conn.recv(100) == b""  # dropped, not answered
        assert httpx.post(server.url + "/orders", content=b"whole").status_code == 204
    assert calls == [b"whole"]
