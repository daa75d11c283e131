"""The safety rule (contract rules 1-8): what may be retried, and what may not.

Each behaviour is checked through both ``Client`` and ``AsyncClient`` (the
``kind`` fixture), and the pure decision functions are checked directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
import tenacity

import reliable_client as rc
from reliable_client import testing
from reliable_client._decision import Decision, decide, judge_error, judge_response

from .callers import BASE, Caller

NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
MAYBE_SENT = (
    httpx.ReadTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)

pytestmark = pytest.mark.usefixtures("no_sleep")


# -- helpers ---------------------------------------------------------------


class SyncTracked(httpx.SyncByteStream):
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield self.body

    def close(self) -> None:
        self.closed = True


class AsyncTracked(httpx.AsyncByteStream):
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body

    async def aclose(self) -> None:
        self.closed = True


class SyncBroken(httpx.SyncByteStream):
    """A body that fails halfway (the connection drops mid-body)."""

    def __iter__(self) -> Iterator[bytes]:
        yield b"par"
        raise httpx.ReadError("connection lost mid-body")


class AsyncBroken(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"par"
        raise httpx.ReadError("connection lost mid-body")


Step = Any  # int status | (status, headers) | exception class | BaseException


class Script(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A transport playing a script of outcomes, one per attempt (the last one
    repeats), with responses whose streams record being closed.

    An exception class is raised as an instance carrying the request; a
    never-sent error is raised before the body is read, as a real connect
    failure would be; everything else reads the body first.
    """

    def __init__(self, *steps: Step, broken_body: bool = False) -> None:
        self.steps = list(steps)
        self.broken_body = broken_body
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []
        self.streams: list[SyncTracked | AsyncTracked] = []
        self.errors: list[BaseException] = []

    def _step(self, request: httpx.Request) -> Step:
        self.requests.append(request)
        return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]

    def _raise_or_status(
        self, step: Step, request: httpx.Request
    ) -> tuple[int, dict[str, str]]:
        if isinstance(step, type) and issubclass(step, BaseException):
            if issubclass(step, httpx.RequestError):
                error: BaseException = step("scripted", request=request)
            else:
                error = step()
            self.errors.append(error)
            raise error
        if isinstance(step, BaseException):
            self.errors.append(step)
            raise step
        if isinstance(step, tuple):
            return step[0], dict(step[1])
        return int(step), {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        step = self._step(request)
        if not (isinstance(step, type) and issubclass(step, NEVER_SENT)):
            sync_in: Any = request.stream
            self.bodies.append(b"".join(sync_in))
        status, headers = self._raise_or_status(step, request)
        if self.broken_body and status == 200 and len(self.requests) == 1:
            return httpx.Response(status, headers=headers, stream=SyncBroken())
        stream = SyncTracked(f"body {len(self.requests)}".encode())
        self.streams.append(stream)
        return httpx.Response(status, headers=headers, stream=stream)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        step = self._step(request)
        if not (isinstance(step, type) and issubclass(step, NEVER_SENT)):
            stream_in: Any = request.stream
            self.bodies.append(b"".join([chunk async for chunk in stream_in]))
        status, headers = self._raise_or_status(step, request)
        if self.broken_body and status == 200 and len(self.requests) == 1:
            return httpx.Response(status, headers=headers, stream=AsyncBroken())
        stream = AsyncTracked(f"body {len(self.requests)}".encode())
        self.streams.append(stream)
        return httpx.Response(status, headers=headers, stream=stream)


KEYED = rc.Idempotency()


def request(
    method: str, headers: dict[str, str] | None = None, content: Any = None
) -> httpx.Request:
    return httpx.Request(method, f"{BASE}/r", headers=headers, content=content)


def state(attempt_number: int = 1) -> tenacity.RetryCallState:
    retry_state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    retry_state.attempt_number = attempt_number
    return retry_state


# -- the pure decision functions -----------------------------------------

POLICY = rc.RetryPolicy()


@pytest.mark.parametrize(
    ("method", "status", "headers", "keyed", "retryable", "blocked_by"),
    [
        ("GET", 503, {}, False, True, None),
        ("PUT", 500, {}, False, True, None),
        ("DELETE", 502, {}, False, True, None),
        ("POST", 500, {}, False, False, "not_idempotent"),
        ("POST", 504, {}, False, False, "not_idempotent"),
        ("POST", 503, {}, False, False, "not_idempotent"),
        ("POST", 500, {}, True, True, None),
        ("POST", 429, {}, False, True, None),
        ("POST", 429, {"Retry-After": "1"}, False, True, None),
        ("POST", 503, {"Retry-After": "2"}, False, True, None),
        ("POST", 409, {}, True, True, None),
        ("POST", 409, {}, False, False, None),
        ("GET", 409, {}, False, False, None),
        ("GET", 200, {}, False, False, None),
        ("POST", 201, {}, True, False, None),
        ("POST", 303, {}, True, False, None),
        ("POST", 503, {"Idempotent-Replayed": "true"}, True, False, None),
        ("GET", 503, {"Retry-After": "120"}, False, False, "retry_after"),
    ],
)
def test_judge_response_table(
    method: str,
    status: int,
    headers: dict[str, str],
    keyed: bool,
    retryable: bool,
    blocked_by: str | None,
) -> None:
    req = request(method)
    verdict = judge_response(
        req, httpx.Response(status, headers=headers), POLICY, keyed=keyed, now=0.0
    )
    assert verdict.retryable is retryable
    assert verdict.blocked_by == blocked_by
    if retryable:
        assert verdict.reason == f"status {status}"


def test_judge_response_reads_retry_after() -> None:
    verdict = judge_response(
        request("POST"),
        httpx.Response(503, headers={"Retry-After": "2.5"}),
        POLICY,
        keyed=False,
        now=0.0,
    )
    assert verdict.retryable
    assert verdict.retry_after == 2.5


def test_judge_response_keyed_422_is_final_even_when_listed() -> None:
    policy = rc.RetryPolicy(statuses={422, 503})
    keyed = judge_response(
        request("POST"), httpx.Response(422), policy, keyed=True, now=0.0
    )
    assert not keyed.retryable
    # The code's choice: an unkeyed idempotent request with 422 listed is retried.
    unkeyed = judge_response(
        request("PUT"), httpx.Response(422), policy, keyed=False, now=0.0
    )
    assert unkeyed.retryable


def test_judge_response_replayed_409_is_final() -> None:
    """Rule 5 beats rule 4: a replayed result is the same on every attempt."""
    verdict = judge_response(
        request("POST"),
        httpx.Response(409, headers={"Idempotent-Replayed": "true"}),
        POLICY,
        keyed=True,
        now=0.0,
    )
    assert not verdict.retryable


def gen_body() -> Iterator[bytes]:
    yield b"a"
    yield b"b"


@pytest.mark.parametrize("error", NEVER_SENT)
@pytest.mark.parametrize("method", ["POST", "PATCH", "GET"])
def test_judge_error_never_sent_is_retried_for_any_method(
    error: type[Exception], method: str
) -> None:
    verdict = judge_error(request(method), error("x"), POLICY, keyed=False)
    assert verdict.retryable
    assert verdict.reason == error.__name__


@pytest.mark.parametrize("error", MAYBE_SENT)
def test_judge_error_maybe_sent(error: type[Exception]) -> None:
    exc = error("x")
    assert judge_error(request("GET"), exc, POLICY, keyed=False).retryable
    assert judge_error(request("PUT"), exc, POLICY, keyed=False).retryable
    assert judge_error(request("POST"), exc, POLICY, keyed=True).retryable
    unkeyed = judge_error(request("POST"), exc, POLICY, keyed=False)
    assert not unkeyed.retryable
    assert unkeyed.blocked_by == "not_idempotent"


def test_judge_error_body_not_replayable() -> None:
    req = request("PUT", content=gen_body())
    verdict = judge_error(req, httpx.ReadError("x"), POLICY, keyed=False)
    assert not verdict.retryable
    assert verdict.blocked_by == "body_not_replayable"
    assert judge_error(req, httpx.ConnectError("x"), POLICY, keyed=False).retryable


@pytest.mark.parametrize(
    "exc", [ValueError("x"), httpx.UnsupportedProtocol("x"), RuntimeError("x")]
)
def test_judge_error_other_errors_are_final(exc: Exception) -> None:
    verdict = judge_error(request("GET"), exc, POLICY, keyed=True)
    assert not verdict.retryable
    assert verdict.blocked_by is None


class Spend:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.answer


def test_decide_not_retryable_keeps_the_block_and_spends_nothing() -> None:
    verdict = judge_response(
        request("POST"), httpx.Response(500), POLICY, keyed=False, now=0.0
    )
    spend = Spend(True)
    decision = decide(verdict, POLICY, state(), elapsed=0.0, spend_budget=spend)
    assert decision == Decision(None, "not_idempotent")
    assert spend.calls == 0


def test_decide_out_of_attempts() -> None:
    verdict = judge_error(request("GET"), httpx.ReadError("x"), POLICY, keyed=False)
    spend = Spend(True)
    policy = rc.RetryPolicy(max_attempts=2)
    decision = decide(verdict, policy, state(2), elapsed=0.0, spend_budget=spend)
    assert decision == Decision(None, None)
    assert spend.calls == 0


def test_decide_backoff_and_retry_after() -> None:
    policy = rc.RetryPolicy(jitter="none", backoff_initial=0.5, max_attempts=5)
    verdict = judge_error(request("GET"), httpx.ReadError("x"), policy, keyed=False)
    spend = Spend(True)
    assert decide(verdict, policy, state(1), elapsed=0, spend_budget=spend) == (
        Decision(0.5)
    )
    assert decide(verdict, policy, state(3), elapsed=0, spend_budget=spend) == (
        Decision(2.0)
    )
    assert spend.calls == 2
    with_after = judge_response(
        request("GET"),
        httpx.Response(503, headers={"Retry-After": "7"}),
        policy,
        keyed=False,
        now=0.0,
    )
    assert decide(with_after, policy, state(1), elapsed=0, spend_budget=spend) == (
        Decision(7.0)
    )


def test_decide_deadline_and_budget() -> None:
    policy = rc.RetryPolicy(jitter="none", backoff_initial=1.0, deadline=1.2)
    verdict = judge_error(request("GET"), httpx.ReadError("x"), policy, keyed=False)
    refuse = Spend(False)
    assert decide(verdict, policy, state(), elapsed=0.5, spend_budget=refuse) == (
        Decision(None, "deadline")
    )
    assert refuse.calls == 0
    assert decide(verdict, policy, state(), elapsed=0.0, spend_budget=refuse) == (
        Decision(None, "budget")
    )
    assert refuse.calls == 1


# -- rule 1: never sent --------------------------------------------------


@pytest.mark.parametrize("error", NEVER_SENT)
async def test_rule1_never_sent_retried_for_unkeyed_post(
    make: Callable[..., Caller], api: respx.MockRouter, error: type[Exception]
) -> None:
    route = api.post("/orders").mock(
        side_effect=[error("no connection"), httpx.Response(201)]
    )
    caller = make(idempotency=None)
    response = await caller.request("POST", f"{BASE}/orders", json={"a": 1})
    assert response.status_code == 201
    assert route.call_count == 2
    assert "Idempotency-Key" not in route.calls[1].request.headers
    result = rc.outcome(response)
    assert result.attempts == 2
    assert result.retries == (error.__name__,)


# -- rule 2: may have reached the server --------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("error", MAYBE_SENT)
async def test_rule2_errors_retried_for_idempotent_methods(
    make: Callable[..., Caller],
    api: respx.MockRouter,
    method: str,
    error: type[Exception],
) -> None:
    route = api.route(method=method, path="/r").mock(
        side_effect=[error("maybe arrived"), httpx.Response(200)]
    )
    response = await make().request(method, f"{BASE}/r")
    assert response.status_code == 200
    assert route.call_count == 2
    assert rc.outcome(response).retries == (error.__name__,)


@pytest.mark.parametrize("error", MAYBE_SENT)
async def test_rule2_errors_not_retried_for_unkeyed_post(
    make: Callable[..., Caller], api: respx.MockRouter, error: type[Exception]
) -> None:
    route = api.post("/r").mock(
        side_effect=[error("maybe arrived"), httpx.Response(201)]
    )
    caller = make(idempotency=None)
    with pytest.raises(error) as excinfo:
        await caller.request("POST", f"{BASE}/r", json={})
    assert type(excinfo.value) is error
    assert route.call_count == 1
    result = rc.outcome(excinfo.value)
    assert result.attempts == 1
    assert result.retries == ()
    assert result.stopped_by == "not_idempotent"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("status", [500, 502, 504])
async def test_rule2_statuses_retried_for_idempotent_methods(
    make: Callable[..., Caller], api: respx.MockRouter, method: str, status: int
) -> None:
    route = api.route(method=method, path="/r").mock(
        side_effect=[httpx.Response(status), httpx.Response(200, text="ok")]
    )
    response = await make().request(method, f"{BASE}/r")
    assert response.status_code == 200
    assert response.text == "ok"
    assert route.call_count == 2
    assert rc.outcome(response).retries == (f"status {status}",)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_rule2_statuses_not_retried_for_unkeyed_post(
    make: Callable[..., Caller], api: respx.MockRouter, status: int
) -> None:
    route = api.post("/r").mock(
        side_effect=[httpx.Response(status, text="failed"), httpx.Response(201)]
    )
    response = await make(idempotency=None).request("POST", f"{BASE}/r", json={})
    assert response.status_code == status
    assert response.text == "failed"
    assert route.call_count == 1
    assert rc.outcome(response).attempts == 1
    assert rc.outcome(response).stopped_by == "not_idempotent"


async def test_rule2_caller_key_makes_post_retryable_without_idempotency(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/r").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),
            httpx.Response(500),
            httpx.Response(201),
        ]
    )
    caller = make(idempotency=None)
    response = await caller.request(
        "POST", f"{BASE}/r", json={}, headers={"Idempotency-Key": "caller-key"}
    )
    assert response.status_code == 201
    assert route.call_count == 3
    assert [c.request.headers["Idempotency-Key"] for c in route.calls] == [
        "caller-key"
    ] * 3
    assert rc.outcome(response).retries == ("ReadTimeout", "status 500")


async def test_rule2_our_key_makes_post_retryable(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/r").mock(
        side_effect=[
            httpx.RemoteProtocolError("bad"),
            httpx.Response(502),
            httpx.Response(201),
        ]
    )
    response = await make().request("POST", f"{BASE}/r", json={})
    assert response.status_code == 201
    assert route.call_count == 3
    keys = {c.request.headers["Idempotency-Key"] for c in route.calls}
    assert len(keys) == 1
    assert rc.outcome(response).idempotency_key in keys


async def test_rule2_patch_keyed_by_default(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.patch("/r").mock(
        side_effect=[httpx.ReadError("x"), httpx.Response(200)]
    )
    response = await make().request("PATCH", f"{BASE}/r", json={})
    assert response.status_code == 200
    assert route.call_count == 2


# -- rule 3: the server says it did not process it ------------------------


@pytest.mark.parametrize(
    ("status", "headers", "sleep"),
    [
        (429, {}, None),
        (429, {"Retry-After": "1"}, 1.0),
        (503, {"Retry-After": "2"}, 2.0),
        (503, {"Retry-After": "0.25"}, 0.25),
    ],
)
async def test_rule3_not_processed_retried_for_unkeyed_post(
    make: Callable[..., Caller],
    api: respx.MockRouter,
    no_sleep: testing.TestingMode,
    status: int,
    headers: dict[str, str],
    sleep: float | None,
) -> None:
    route = api.post("/r").mock(
        side_effect=[httpx.Response(status, headers=headers), httpx.Response(201)]
    )
    response = await make(idempotency=None).request("POST", f"{BASE}/r", json={})
    assert response.status_code == 201
    assert route.call_count == 2
    assert rc.outcome(response).retries == (f"status {status}",)
    assert len(no_sleep.sleeps) == 1
    if sleep is not None:
        assert no_sleep.sleeps == [sleep]


async def test_rule3_retry_after_http_date_in_the_past_means_now(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    route = api.post("/r").mock(
        side_effect=[
            httpx.Response(
                503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
            ),
            httpx.Response(201),
        ]
    )
    response = await make(idempotency=None).request("POST", f"{BASE}/r")
    assert response.status_code == 201
    assert route.call_count == 2
    assert no_sleep.sleeps == [0.0]


async def test_rule5_retry_after_longer_than_max_is_not_waited(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    route = api.get("/r").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": "61"}),
            httpx.Response(200),
        ]
    )
    response = await make().request("GET", f"{BASE}/r")
    assert response.status_code == 503
    assert route.call_count == 1
    assert rc.outcome(response).stopped_by == "retry_after"
    assert no_sleep.sleeps == []


# -- rule 4: 409 only when keyed ------------------------------------------


async def test_rule4_409_retried_when_keyed(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/r").mock(side_effect=[httpx.Response(409), httpx.Response(201)])
    response = await make().request("POST", f"{BASE}/r", json={})
    assert response.status_code == 201
    assert route.call_count == 2
    assert rc.outcome(response).retries == ("status 409",)


@pytest.mark.parametrize("method", ["POST", "GET", "PUT"])
async def test_rule4_409_not_retried_when_unkeyed(
    make: Callable[..., Caller], api: respx.MockRouter, method: str
) -> None:
    route = api.route(method=method, path="/r").mock(
        side_effect=[httpx.Response(409), httpx.Response(200)]
    )
    response = await make(idempotency=None).request(method, f"{BASE}/r")
    assert response.status_code == 409
    assert route.call_count == 1


async def test_rule4_409_retried_for_caller_keyed_request(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.put("/r").mock(side_effect=[httpx.Response(409), httpx.Response(200)])
    response = await make(idempotency=None).request(
        "PUT", f"{BASE}/r", headers={"Idempotency-Key": "k"}
    )
    assert response.status_code == 200
    assert route.call_count == 2


# -- rule 5: never retried -------------------------------------------------


async def test_rule5_keyed_422_not_retried_even_when_listed(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/r").mock(side_effect=[httpx.Response(422), httpx.Response(201)])
    caller = make(retry=rc.RetryPolicy(statuses={422, 500, 503}))
    response = await caller.request("POST", f"{BASE}/r", json={})
    assert response.status_code == 422
    assert route.call_count == 1
    assert rc.outcome(response).attempts == 1


@pytest.mark.parametrize("status", [500, 503, 409])
async def test_rule5_replayed_response_not_retried(
    make: Callable[..., Caller], api: respx.MockRouter, status: int
) -> None:
    route = api.post("/r").mock(
        side_effect=[
            httpx.Response(status, headers={"Idempotent-Replayed": "true"}),
            httpx.Response(201),
        ]
    )
    response = await make().request("POST", f"{BASE}/r", json={})
    assert response.status_code == status
    assert route.call_count == 1
    result = rc.outcome(response)
    assert result.replayed is True
    assert result.attempts == 1


async def test_rule5_replayed_response_not_retried_for_get(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    """The contract says never, whatever the method."""
    route = api.get("/r").mock(
        side_effect=[
            httpx.Response(503, headers={"Idempotent-Replayed": "true"}),
            httpx.Response(200),
        ]
    )
    response = await make().request("GET", f"{BASE}/r")
    assert response.status_code == 503
    assert route.call_count == 1


def sync_gen() -> Iterator[bytes]:
    yield b"chunk1-"
    yield b"chunk2"


async def async_gen() -> AsyncIterator[bytes]:
    yield b"chunk1-"
    yield b"chunk2"


def streaming_body(kind: str) -> Any:
    return sync_gen() if kind == "sync" else async_gen()


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.WriteError])
async def test_rule5_generator_body_not_resent_once_sending_began(
    make: Callable[..., Caller], kind: str, error: type[Exception]
) -> None:
    script = Script(error, 200)
    caller = make(transport=script)
    with pytest.raises(error) as excinfo:
        await caller.request("PUT", f"{BASE}/r", content=streaming_body(kind))
    assert len(script.requests) == 1
    assert script.bodies == [b"chunk1-chunk2"]
    result = rc.outcome(excinfo.value)
    assert result.stopped_by == "body_not_replayable"
    assert result.attempts == 1


async def test_rule5_generator_body_not_resent_with_respx(
    make: Callable[..., Caller], api: respx.MockRouter, kind: str
) -> None:
    route = api.put("/r").mock(side_effect=[httpx.ReadError("x"), httpx.Response(200)])
    with pytest.raises(httpx.ReadError) as excinfo:
        await make().request("PUT", f"{BASE}/r", content=streaming_body(kind))
    assert route.call_count == 1
    assert rc.outcome(excinfo.value).stopped_by == "body_not_replayable"


@pytest.mark.parametrize("error", NEVER_SENT)
async def test_rule5_generator_body_retried_after_never_sent_error(
    make: Callable[..., Caller], kind: str, error: type[Exception]
) -> None:
    script = Script(error, 200)
    caller = make(transport=script, idempotency=None)
    response = await caller.request("POST", f"{BASE}/r", content=streaming_body(kind))
    assert response.status_code == 200
    assert len(script.requests) == 2
    # The body was never read on the failed attempt, so the retry sends it whole.
    assert script.bodies == [b"chunk1-chunk2"]
    assert rc.outcome(response).retries == (error.__name__,)


async def test_rule5_cancellation_from_transport_propagates() -> None:
    script = Script(asyncio.CancelledError, 200)
    async with rc.AsyncClient(transport=script) as client:
        with pytest.raises(asyncio.CancelledError):
            await client.get(f"{BASE}/r")
    assert len(script.requests) == 1


def test_rule5_keyboard_interrupt_propagates() -> None:
    script = Script(KeyboardInterrupt, 200)
    with rc.Client(transport=script) as client, pytest.raises(KeyboardInterrupt):
        client.get(f"{BASE}/r")
    assert len(script.requests) == 1


async def test_rule5_cancelling_a_task_during_a_retry_sleep() -> None:
    sleeping = asyncio.Event()
    never = asyncio.Event()

    async def sleep(delay: float) -> None:
        sleeping.set()
        await never.wait()

    script = Script(httpx.ConnectError, 200)
    testing.set_testing(False)  # the transport's own sleep must run here
    try:
        transport = rc.AsyncRetryTransport(script, sleep=sleep)
        async with httpx.AsyncClient(transport=transport) as client:
            task = asyncio.create_task(client.get(f"{BASE}/r"))
            await asyncio.wait_for(sleeping.wait(), timeout=5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        testing.set_testing(True)  # no_sleep restores the previous mode after
    assert len(script.requests) == 1


# -- rule 6: what the caller gets when retries end -----------------------


async def test_rule6_last_response_returned_after_max_attempts(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.get("/r").mock(
        side_effect=[
            httpx.Response(503, text="first"),
            httpx.Response(502, text="second"),
            httpx.Response(503, text="third"),
            httpx.Response(200),
        ]
    )
    response = await make().request("GET", f"{BASE}/r")
    assert response.status_code == 503
    assert response.text == "third"
    assert route.call_count == 3
    result = rc.outcome(response)
    assert result.attempts == 3
    assert result.retries == ("status 503", "status 502")
    assert result.stopped_by is None


async def test_rule6_last_exception_reraised_with_its_type(
    make: Callable[..., Caller],
) -> None:
    script = Script(httpx.ConnectError, httpx.ReadTimeout, httpx.ConnectTimeout, 200)
    caller = make(transport=script, retry=rc.RetryPolicy(max_attempts=3))
    with pytest.raises(httpx.ConnectTimeout) as excinfo:
        await caller.request("GET", f"{BASE}/r")
    assert type(excinfo.value) is httpx.ConnectTimeout
    assert excinfo.value is script.errors[-1]
    assert len(script.requests) == 3
    result = rc.outcome(excinfo.value)
    assert result.attempts == 3
    assert result.retries == ("ConnectError", "ReadTimeout")


async def test_rule6_mixed_errors_and_statuses(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.delete("/r").mock(
        side_effect=[httpx.ReadTimeout("x"), httpx.Response(504), httpx.Response(204)]
    )
    response = await make().request("DELETE", f"{BASE}/r")
    assert response.status_code == 204
    assert route.call_count == 3
    assert rc.outcome(response).retries == ("ReadTimeout", "status 504")
    assert rc.outcome(response).attempts == 3


async def test_rule6_first_try_success_has_a_clean_record(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    api.get("/r").mock(return_value=httpx.Response(200))
    response = await make().request("GET", f"{BASE}/r")
    result = rc.outcome(response)
    assert (result.attempts, result.retries, result.stopped_by) == (1, (), None)


# -- rule 7: discarded responses are closed -------------------------------


async def test_rule7_discarded_responses_are_closed(
    make: Callable[..., Caller],
) -> None:
    script = Script(503, 502, 200)
    caller = make(transport=script)
    response = await caller.request("GET", f"{BASE}/r")
    assert response.status_code == 200
    assert response.content == b"body 3"
    assert len(script.streams) == 3
    assert [s.closed for s in script.streams[:2]] == [True, True]


async def test_rule7_discarded_responses_closed_when_streaming(kind: str) -> None:
    script = Script(500, 200)
    if kind == "sync":
        with (
            rc.Client(transport=script) as client,
            client.stream("GET", f"{BASE}/r") as response,
        ):
            assert not script.streams[1].closed
            assert response.read() == b"body 2"
    else:
        async with (
            rc.AsyncClient(transport=script) as aclient,
            aclient.stream("GET", f"{BASE}/r") as response,
        ):
            assert not script.streams[1].closed
            assert await response.aread() == b"body 2"
    assert script.streams[0].closed
    assert script.streams[1].closed


async def test_rule7_kept_response_still_readable_when_retries_end(
    make: Callable[..., Caller],
) -> None:
    script = Script(503)
    response = await make(transport=script).request("GET", f"{BASE}/r")
    assert response.status_code == 503
    assert response.content == b"body 3"
    assert [s.closed for s in script.streams] == [True, True, True]


def test_rule7_is_closed_on_discarded_responses_sync() -> None:
    kept: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        response = httpx.Response(503 if len(kept) < 2 else 200, content=b"x")
        kept.append(response)
        return response

    with rc.Client(transport=httpx.MockTransport(handler)) as client:
        response = client.get(f"{BASE}/r")
    assert response.status_code == 200
    assert [r.is_closed for r in kept[:2]] == [True, True]


# -- rule 8: a failure while reading the body -----------------------------


async def test_rule8_failure_mid_body_is_retried(make: Callable[..., Caller]) -> None:
    script = Script(200, broken_body=True)
    response = await make(transport=script).request("GET", f"{BASE}/r")
    assert response.status_code == 200
    assert response.content == b"body 2"
    assert len(script.requests) == 2
    assert rc.outcome(response).retries == ("ReadError",)


async def test_rule8_failure_mid_body_not_retried_for_unkeyed_post(
    make: Callable[..., Caller],
) -> None:
    script = Script(200, broken_body=True)
    caller = make(transport=script, idempotency=None)
    with pytest.raises(httpx.ReadError):
        await caller.request("POST", f"{BASE}/r", content=b"x")
    assert len(script.requests) == 1


# -- methods, statuses and turning retries off ----------------------------


async def test_extension_method_retried_when_listed(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.route(method="PROPFIND", path="/dav").mock(
        side_effect=[httpx.ReadError("x"), httpx.Response(503), httpx.Response(207)]
    )
    policy = rc.RetryPolicy(methods={"GET", "PROPFIND"})
    response = await make(retry=policy).request("PROPFIND", f"{BASE}/dav")
    assert response.status_code == 207
    assert route.call_count == 3


async def test_extension_method_not_retried_by_default(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.route(method="PROPFIND", path="/dav").mock(
        side_effect=[httpx.Response(503), httpx.Response(207)]
    )
    response = await make().request("PROPFIND", f"{BASE}/dav")
    assert response.status_code == 503
    assert route.call_count == 1


async def test_methods_exclude_get_when_not_listed(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.get("/r").mock(side_effect=[httpx.ReadError("x"), httpx.Response(200)])
    caller = make(retry=rc.RetryPolicy(methods={"PUT"}))
    with pytest.raises(httpx.ReadError):
        await caller.request("GET", f"{BASE}/r")
    assert route.call_count == 1


async def test_custom_statuses(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    policy = rc.RetryPolicy(statuses={418})
    teapot = api.get("/teapot").mock(
        side_effect=[httpx.Response(418), httpx.Response(200)]
    )
    unavailable = api.get("/down").mock(
        side_effect=[httpx.Response(503), httpx.Response(200)]
    )
    caller = make(retry=policy)
    response = await caller.request("GET", f"{BASE}/teapot")
    assert response.status_code == 200
    assert teapot.call_count == 2
    assert rc.outcome(response).retries == ("status 418",)
    # 503 is no longer in the statuses: returned as it is.
    response = await caller.request("GET", f"{BASE}/down")
    assert response.status_code == 503
    assert unavailable.call_count == 1


@pytest.mark.parametrize("retry", [False, rc.RetryPolicy(max_attempts=1)])
async def test_retries_off_on_the_client(
    make: Callable[..., Caller], api: respx.MockRouter, retry: Any
) -> None:
    failing = api.get("/fail").mock(
        side_effect=[httpx.ConnectError("x"), httpx.Response(200)]
    )
    status = api.get("/status").mock(
        side_effect=[httpx.Response(503), httpx.Response(200)]
    )
    caller = make(retry=retry)
    with pytest.raises(httpx.ConnectError):
        await caller.request("GET", f"{BASE}/fail")
    assert failing.call_count == 1
    response = await caller.request("GET", f"{BASE}/status")
    assert response.status_code == 503
    assert status.call_count == 1


@pytest.mark.parametrize("retry", [False, rc.RetryPolicy(max_attempts=1)])
async def test_retries_off_per_call(
    make: Callable[..., Caller], api: respx.MockRouter, retry: Any
) -> None:
    route = api.get("/r").mock(
        side_effect=[httpx.ConnectError("x"), httpx.Response(200), httpx.Response(200)]
    )
    caller = make()
    with pytest.raises(httpx.ConnectError):
        await caller.request("GET", f"{BASE}/r", retry=retry)
    assert route.call_count == 1


async def test_per_call_policy_turns_retries_on(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.get("/r").mock(
        side_effect=[httpx.ConnectError("x"), httpx.Response(200)]
    )
    caller = make(retry=False)
    response = await caller.request("GET", f"{BASE}/r", retry=rc.RetryPolicy())
    assert response.status_code == 200
    assert route.call_count == 2


def test_per_request_extension_on_plain_httpx_client() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503 if len(calls) <= 2 else 200)

    transport = rc.RetryTransport(httpx.MockTransport(handler), retry=False)
    with httpx.Client(transport=transport) as client:
        assert client.get(f"{BASE}/r").status_code == 503
        assert len(calls) == 1
        response = client.get(f"{BASE}/r", extensions={"retry": rc.RetryPolicy()})
        assert response.status_code == 200
        assert len(calls) == 3
        assert rc.outcome(response).retries == ("status 503",)


def test_per_request_extension_false_on_plain_httpx_client() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503)

    with httpx.Client(
        transport=rc.RetryTransport(httpx.MockTransport(handler))
    ) as client:
        response = client.get(f"{BASE}/r", extensions={"retry": False})
    assert response.status_code == 503
    assert len(calls) == 1


async def test_per_request_extension_on_plain_async_client() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("x", request=request)
        return httpx.Response(200)

    transport = rc.AsyncRetryTransport(httpx.MockTransport(handler), retry=False)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"{BASE}/r", extensions={"retry": rc.RetryPolicy()})
    assert response.status_code == 200
    assert len(calls) == 2


@pytest.mark.parametrize("bad", [3, "yes", None, True])
def test_wrong_type_in_retry_extension(bad: object) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    with (
        httpx.Client(transport=rc.RetryTransport(httpx.MockTransport(handler))) as c,
        pytest.raises(TypeError, match="retry"),
    ):
        c.get(f"{BASE}/r", extensions={"retry": bad})
    assert calls == []


@pytest.mark.parametrize("bad", ["yes", 3, None])
def test_client_rejects_wrong_retry_type(bad: object) -> None:
    with pytest.raises(TypeError, match="retry"):
        rc.Client(retry=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry"):
        rc.AsyncClient(retry=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry"):
        rc.RetryTransport(httpx.MockTransport(lambda r: httpx.Response(200)), retry=bad)  # type: ignore[arg-type]


async def test_per_call_wrong_retry_type_sends_nothing(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.get("/r").mock(return_value=httpx.Response(200))
    with pytest.raises(TypeError, match="retry"):
        await make().request("GET", f"{BASE}/r", retry="yes")
    assert route.call_count == 0


# -- 303 See Other to a keyed create --------------------------------------


async def test_303_to_keyed_post_is_returned_and_marked(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/orders").mock(
        side_effect=[
            httpx.Response(303, headers={"Location": f"{BASE}/orders/1"}),
            httpx.Response(201),
        ]
    )
    caller = make(retry=rc.RetryPolicy(statuses={303, 500, 503}))
    response = await caller.request("POST", f"{BASE}/orders", json={"a": 1})
    assert response.status_code == 303
    assert route.call_count == 1
    result = rc.outcome(response)
    assert result.already_existed is True
    assert result.attempts == 1
    assert result.idempotency_key is not None


async def test_303_with_default_policy_is_marked(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/orders").mock(
        return_value=httpx.Response(303, headers={"Location": f"{BASE}/orders/1"})
    )
    response = await make().request("POST", f"{BASE}/orders", json={})
    assert response.status_code == 303
    assert route.call_count == 1
    assert rc.outcome(response).already_existed is True


async def test_303_to_unkeyed_request_is_not_marked(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    api.post("/orders").mock(
        return_value=httpx.Response(303, headers={"Location": f"{BASE}/orders/1"})
    )
    response = await make(idempotency=None).request("POST", f"{BASE}/orders")
    assert rc.outcome(response).already_existed is False
