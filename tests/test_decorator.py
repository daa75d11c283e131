"""The @retry decorator: forms, the safety rule, layers that never multiply,
key replay against a real server, the budget, the deadline, testing mode and
cancellation."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any

import httpx
import pytest
import trio

import reliable_client as rc
from reliable_client import testing

from .loopback import LoopbackServer, Reply, Stall

TIMEOUT = httpx.Timeout(2.0)
KEY = "idempotency-key"  # the server records header names in lower case
RID = "x-client-resource-id"
URL = "http://x.test/y"


class MyError(Exception):
    pass


class MySubError(MyError):
    pass


def connect_error(method: str = "GET") -> httpx.ConnectError:
    return httpx.ConnectError("refused", request=httpx.Request(method, URL))


def read_timeout(
    method: str, headers: dict[str, str] | None = None
) -> httpx.ReadTimeout:
    return httpx.ReadTimeout(
        "slow", request=httpx.Request(method, URL, headers=headers)
    )


def status_error(
    method: str,
    status: int,
    *,
    response_headers: dict[str, str] | None = None,
    request_headers: dict[str, str] | None = None,
) -> httpx.HTTPStatusError:
    """The error raise_for_status() raises for such a response."""
    request = httpx.Request(method, URL, headers=request_headers)
    response = httpx.Response(status, headers=response_headers, request=request)
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        return exc
    raise AssertionError("raise_for_status() did not raise")


class Failing:
    """A function that raises ``errors`` in turn (the last repeats), then
    returns "done" once they run out if ``then_succeed``."""

    def __init__(self, *errors: BaseException, then_succeed: bool = False) -> None:
        self.errors = list(errors)
        self.then_succeed = then_succeed
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.then_succeed and self.calls > len(self.errors):
            return "done"
        raise self.errors[min(self.calls, len(self.errors)) - 1]


# -- forms -------------------------------------------------------------------


def add(a: int, b: int = 2, *, scale: float = 1.0) -> float:
    """Add, then scale."""
    return (a + b) * scale


async def add_async(a: int, b: int = 2, *, scale: float = 1.0) -> float:
    """Add, then scale (async)."""
    await asyncio.sleep(0)
    return (a + b) * scale


def forms() -> list[Any]:
    events: list[rc.RetryEvent] = []
    return [
        rc.retry,
        rc.retry(),
        rc.retry(
            rc.RetryPolicy(max_attempts=2),
            budget=rc.RetryBudget(),
            on=(MyError,),
            on_retry=events.append,
        ),
    ]


@pytest.mark.parametrize("form", range(3), ids=["bare", "called", "configured"])
def test_forms_on_def_keep_name_doc_and_signature(form: int) -> None:
    wrapped = forms()[form](add)
    assert wrapped.__name__ == "add"
    assert wrapped.__doc__ == "Add, then scale."
    assert wrapped.__wrapped__ is add
    assert inspect.signature(wrapped) == inspect.signature(add)
    assert str(inspect.signature(wrapped)) == str(inspect.signature(add))
    assert not inspect.iscoroutinefunction(wrapped)
    assert wrapped(1) == 3.0
    assert wrapped(1, 4, scale=0.5) == 2.5


@pytest.mark.parametrize("form", range(3), ids=["bare", "called", "configured"])
async def test_forms_on_async_def_keep_name_doc_and_signature(form: int) -> None:
    wrapped = forms()[form](add_async)
    assert wrapped.__name__ == "add_async"
    assert wrapped.__doc__ == "Add, then scale (async)."
    assert inspect.signature(wrapped) == inspect.signature(add_async)
    assert inspect.iscoroutinefunction(wrapped)
    assert await wrapped(1, 4, scale=0.5) == 2.5


@pytest.mark.parametrize(
    "kwargs",
    [{"on": "x"}, {"on": MyError}, {"on": (int,)}, {"on": [MyError]}],
    ids=["str", "bare-type", "not-exception", "list"],
)
def test_bad_on_is_a_type_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="on"):
        rc.retry(**kwargs)


def test_bad_policy_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="policy"):
        rc.retry("fast")  # type: ignore[call-overload]


# -- the safety rule ---------------------------------------------------------


def test_connect_error_is_retried_for_any_method(no_sleep: testing.TestingMode) -> None:
    for method in ("GET", "POST"):
        fn = Failing(connect_error(method), then_succeed=True)
        assert rc.retry(fn)() == "done"
        assert fn.calls == 2
    fn = Failing(connect_error("POST"))
    with pytest.raises(httpx.ConnectError) as info:
        rc.retry(fn)()
    assert info.value is fn.errors[0]
    assert fn.calls == 3
    assert rc.outcome(info.value).attempts == 3
    assert rc.outcome(info.value).retries == ("ConnectError",) * 2
    assert len(no_sleep.sleeps) == 2 + 2


@pytest.mark.parametrize(
    ("method", "headers", "calls"),
    [
        ("GET", None, 3),
        ("POST", None, 1),
        ("POST", {"Idempotency-Key": "k-1"}, 3),
        ("PATCH", None, 1),
        ("PUT", None, 3),
    ],
    ids=["get", "post-unkeyed", "post-keyed", "patch-unkeyed", "put"],
)
def test_read_timeout_only_when_idempotent(
    no_sleep: testing.TestingMode,
    method: str,
    headers: dict[str, str] | None,
    calls: int,
) -> None:
    error = read_timeout(method, headers)
    fn = Failing(error)
    with pytest.raises(httpx.ReadTimeout) as info:
        rc.retry(fn)()
    assert info.value is error
    assert fn.calls == calls
    assert len(no_sleep.sleeps) == calls - 1


def test_status_503_is_retried_for_get(no_sleep: testing.TestingMode) -> None:
    fn = Failing(status_error("GET", 503), status_error("GET", 502), then_succeed=True)
    assert rc.retry(fn)() == "done"
    assert fn.calls == 3


def test_status_404_is_not_retried(no_sleep: testing.TestingMode) -> None:
    error = status_error("GET", 404)
    fn = Failing(error)
    with pytest.raises(httpx.HTTPStatusError) as info:
        rc.retry(fn)()
    assert info.value is error
    assert fn.calls == 1
    assert no_sleep.sleeps == []


def test_status_503_honours_retry_after(no_sleep: testing.TestingMode) -> None:
    error = status_error("GET", 503, response_headers={"Retry-After": "2"})
    fn = Failing(error)
    with pytest.raises(httpx.HTTPStatusError) as info:
        rc.retry(rc.RetryPolicy(backoff_initial=0.01))(fn)()
    assert fn.calls == 3
    assert no_sleep.sleeps == [2.0, 2.0]
    assert rc.outcome(info.value).retries == ("status 503", "status 503")


def test_unkeyed_post_503_only_with_retry_after(no_sleep: testing.TestingMode) -> None:
    plain = Failing(status_error("POST", 503))
    with pytest.raises(httpx.HTTPStatusError):
        rc.retry(plain)()
    assert plain.calls == 1
    assert no_sleep.sleeps == []

    told = Failing(
        status_error("POST", 503, response_headers={"Retry-After": "3"}),
        then_succeed=True,
    )
    assert rc.retry(told)() == "done"
    assert told.calls == 2
    assert no_sleep.sleeps == [3.0]


def test_too_long_retry_after_stops(no_sleep: testing.TestingMode) -> None:
    error = status_error("GET", 503, response_headers={"Retry-After": "120"})
    fn = Failing(error)
    with pytest.raises(httpx.HTTPStatusError) as info:
        rc.retry(fn)()
    assert fn.calls == 1
    assert rc.outcome(info.value).stopped_by == "retry_after"
    assert no_sleep.sleeps == []


def test_exceptions_in_on_are_retried(no_sleep: testing.TestingMode) -> None:
    fn = Failing(MyError("a"), MySubError("b"), then_succeed=True)
    assert rc.retry(on=(MyError,))(fn)() == "done"
    assert fn.calls == 3

    other = Failing(MyError("a"))
    with pytest.raises(MyError):
        rc.retry()(other)()
    assert other.calls == 1  # not listed: not retried


def test_other_errors_propagate_at_once_unchanged(
    no_sleep: testing.TestingMode,
) -> None:
    error = ValueError("bad input")
    fn = Failing(error)
    with pytest.raises(ValueError) as info:
        rc.retry(on=(MyError,))(fn)()
    assert info.value is error
    assert type(info.value) is ValueError
    assert info.value.args == ("bad input",)
    assert getattr(info.value, "__notes__", []) == []
    assert fn.calls == 1
    assert no_sleep.sleeps == []


async def test_async_safety_rule(no_sleep: testing.TestingMode) -> None:
    calls = 0

    @rc.retry(on=(MyError,))
    async def flaky(kind: str) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if kind == "connect":
            raise connect_error("POST")
        if kind == "post-timeout":
            raise read_timeout("POST")
        if kind == "mine":
            raise MyError
        raise ValueError(kind)

    for kind, expected_calls, kind_error in [
        ("connect", 3, httpx.ConnectError),
        ("post-timeout", 1, httpx.ReadTimeout),
        ("mine", 3, MyError),
        ("other", 1, ValueError),
    ]:
        calls = 0
        with pytest.raises(kind_error):
            await asyncio.wait_for(flaky(kind), 5)
        assert calls == expected_calls, kind


# -- layers never multiply ---------------------------------------------------


def test_decorator_owns_the_clients_retries(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/down", Reply(503))
    with rc.Client(
        base_url=server.url, timeout=TIMEOUT, retry=rc.RetryPolicy(max_attempts=3)
    ) as client:

        @rc.retry(rc.RetryPolicy(max_attempts=3))
        def fetch() -> httpx.Response:
            response = client.get("/down")
            response.raise_for_status()
            return response

        with pytest.raises(httpx.HTTPStatusError) as info:
            fetch()
        assert len(server.requests("/down")) == 3  # not 9
        assert rc.outcome(info.value).attempts == 3
        assert client.stats.retries == 0
        # Outside a decorated call the client retries on its own again.
        assert rc.outcome(client.get("/down")).attempts == 3
    assert len(server.requests("/down")) == 6


async def test_decorator_owns_the_async_clients_retries(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/down", Reply(503))
    async with rc.AsyncClient(
        base_url=server.url, timeout=TIMEOUT, retry=rc.RetryPolicy(max_attempts=3)
    ) as client:

        @rc.retry(rc.RetryPolicy(max_attempts=3))
        async def fetch() -> httpx.Response:
            response = await client.get("/down")
            response.raise_for_status()
            return response

        with pytest.raises(httpx.HTTPStatusError):
            await asyncio.wait_for(fetch(), 10)
    assert len(server.requests("/down")) == 3


def test_nested_decorators_outermost_owns_retries(
    no_sleep: testing.TestingMode,
) -> None:
    inner_fn = Failing(connect_error())
    inner = rc.retry(rc.RetryPolicy(max_attempts=5))(inner_fn)

    @rc.retry(rc.RetryPolicy(max_attempts=3))
    def outer() -> str:
        return inner()

    with pytest.raises(httpx.ConnectError):
        outer()
    assert inner_fn.calls == 3  # not 15
    # Called on its own, the inner decorator retries by its policy.
    inner_fn.calls = 0
    with pytest.raises(httpx.ConnectError):
        inner()
    assert inner_fn.calls == 5


def test_nested_decorators_with_a_client(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/down", Reply(503))
    with rc.Client(base_url=server.url, timeout=TIMEOUT) as client:

        @rc.retry(rc.RetryPolicy(max_attempts=4))
        def inner() -> None:
            client.get("/down").raise_for_status()

        @rc.retry(rc.RetryPolicy(max_attempts=2))
        def outer() -> None:
            inner()

        with pytest.raises(httpx.HTTPStatusError):
            outer()
    assert len(server.requests("/down")) == 2


# -- key replay --------------------------------------------------------------


def check_key_replay(server: LoopbackServer, attempts: int) -> tuple[str, str]:
    posts = server.requests("/a")
    patches = server.requests("/b")
    assert [s.method for s in posts] == ["POST"] * attempts
    assert [s.method for s in patches] == ["PATCH"] * attempts
    first_post = (posts[0].headers[KEY], posts[0].headers[RID])
    first_patch = (patches[0].headers[KEY], patches[0].headers[RID])
    assert first_post[0] and first_post[1]
    assert all((s.headers[KEY], s.headers[RID]) == first_post for s in posts)
    assert all((s.headers[KEY], s.headers[RID]) == first_patch for s in patches)
    assert first_post[0] != first_patch[0]
    assert first_post[1] != first_patch[1]
    assert len({*first_post, *first_patch}) == 4
    return first_post[0], first_patch[0]


def test_every_attempt_replays_the_keys_of_the_first(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/a", Reply(201))
    server.script("/b", Reply(503), Reply(503), Reply(200))
    with rc.Client(base_url=server.url, timeout=TIMEOUT) as client:

        @rc.retry
        def create_then_update() -> httpx.Response:
            client.post("/a", json={"name": "n"}).raise_for_status()
            response = client.patch("/b", json={"state": "on"})
            response.raise_for_status()
            return response

        response = create_then_update()
        assert response.status_code == 200
        post_key, patch_key = check_key_replay(server, attempts=3)
        assert rc.outcome(response).idempotency_key == patch_key

        # A second call is a new operation: new keys.
        create_then_update()
    posts = server.requests("/a")
    patches = server.requests("/b")
    assert len(posts) == len(patches) == 4
    assert posts[3].headers[KEY] not in (post_key, patch_key)
    assert patches[3].headers[KEY] not in (post_key, patch_key)
    assert posts[3].headers[KEY] != patches[3].headers[KEY]


async def test_every_attempt_replays_the_keys_of_the_first_async(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/a", Reply(201))
    server.script("/b", Reply(503), Reply(503), Reply(200))
    async with rc.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:

        @rc.retry
        async def create_then_update() -> httpx.Response:
            (await client.post("/a", json={"name": "n"})).raise_for_status()
            response = await client.patch("/b", json={"state": "on"})
            response.raise_for_status()
            return response

        response = await asyncio.wait_for(create_then_update(), 10)
        assert response.status_code == 200
        post_key, patch_key = check_key_replay(server, attempts=3)

        await asyncio.wait_for(create_then_update(), 10)
    posts = server.requests("/a")
    patches = server.requests("/b")
    assert len(posts) == len(patches) == 4
    assert {posts[3].headers[KEY], patches[3].headers[KEY]}.isdisjoint(
        {post_key, patch_key}
    )


async def test_concurrent_decorated_calls_get_their_own_keys(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/a", Reply(201))
    server.script("/b", Reply(503), Reply(503), Reply(503), Reply(200))
    async with rc.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:

        @rc.retry(rc.RetryPolicy(max_attempts=5))
        async def create_then_update() -> None:
            (await client.post("/a")).raise_for_status()
            await asyncio.sleep(0.01)
            (await client.patch("/b")).raise_for_status()

        await asyncio.wait_for(
            asyncio.gather(create_then_update(), create_then_update()), 10
        )
    posts = server.requests("/a")
    patches = server.requests("/b")
    assert len(posts) == len(patches) == 5
    # Each call replays its own pair: exactly two POST keys and two PATCH
    # keys, each POST key with its one resource id.
    post_pairs = {(s.headers[KEY], s.headers[RID]) for s in posts}
    patch_pairs = {(s.headers[KEY], s.headers[RID]) for s in patches}
    assert len(post_pairs) == len(patch_pairs) == 2
    assert len({k for k, _ in post_pairs} | {k for k, _ in patch_pairs}) == 4


def test_keyed_post_timing_out_is_retried_with_its_key(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    """A POST that may have arrived is retried only because the reliable
    client gave it a key, and every attempt carries that same key."""
    server.script("/pay", Stall(1.0), Stall(1.0), Reply(201))
    server.script("/raw", Stall(1.0))
    timeout = httpx.Timeout(2.0, read=0.2)
    with (
        rc.Client(base_url=server.url, timeout=timeout) as keyed,
        rc.Client(base_url=server.url, timeout=timeout, idempotency=None) as unkeyed,
    ):

        @rc.retry
        def pay() -> httpx.Response:
            response = keyed.post("/pay", json={"amount": 1})
            response.raise_for_status()
            return response

        @rc.retry
        def pay_raw() -> httpx.Response:
            return unkeyed.post("/raw", json={"amount": 1})

        assert pay().status_code == 201
        with pytest.raises(httpx.ReadTimeout):
            pay_raw()
    seen = server.requests("/pay")
    assert len(seen) == 3
    assert len({(s.headers[KEY], s.headers[RID]) for s in seen}) == 1
    assert len(server.requests("/raw")) == 1  # unkeyed POST: not retried
    assert KEY not in server.requests("/raw")[0].headers


# -- the budget --------------------------------------------------------------


def test_decorator_spends_from_its_budget(
    no_sleep: testing.TestingMode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reliable_client")
    budget = rc.RetryBudget(ratio=0, min_per_second=0.1, ttl=10)  # one retry
    events: list[rc.RetryEvent] = []
    fn = Failing(connect_error())
    decorated = rc.retry(
        rc.RetryPolicy(max_attempts=5), budget=budget, on_retry=events.append
    )(fn)
    with pytest.raises(httpx.ConnectError) as info:
        decorated()
    assert fn.calls == 2
    assert rc.outcome(info.value).stopped_by == "budget"
    assert rc.outcome(info.value).attempts == 2
    assert len(no_sleep.sleeps) == 1  # nothing slept before the refusal
    assert [e.stopped_by for e in events] == [None, "budget"]
    assert events[-1].sleep is None
    stats = budget.stats
    assert (stats.first_attempts, stats.retries, stats.refused_by_budget) == (1, 1, 1)
    assert stats.gave_up == 1
    stops = [r for r in caplog.records if "budget" in r.getMessage()]
    assert len(stops) == 1
    assert stops[0].name == "reliable_client"
    assert stops[0].levelno == logging.WARNING

    # The budget is spent: the next call gets no retry at all.
    fn.calls = 0
    with pytest.raises(httpx.ConnectError) as again:
        decorated()
    assert fn.calls == 1
    assert rc.outcome(again.value).stopped_by == "budget"


def test_budget_shared_with_a_client(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/down", Reply(503))
    budget = rc.RetryBudget()
    with rc.Client(
        base_url=server.url,
        timeout=TIMEOUT,
        retry=rc.RetryPolicy(max_attempts=2),
        budget=budget,
    ) as client:
        assert rc.outcome(client.get("/down")).attempts == 2
    fn = Failing(connect_error())
    with pytest.raises(httpx.ConnectError):
        rc.retry(rc.RetryPolicy(max_attempts=3), budget=budget)(fn)()
    assert fn.calls == 3
    stats = budget.stats
    assert stats.first_attempts == 2  # one from the client, one from the decorator
    assert stats.retries == 1 + 2
    assert stats.gave_up == 2


def test_a_refusing_shared_budget_stops_the_decorator(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/down", Reply(503))
    budget = rc.RetryBudget(ratio=0, min_per_second=0.2, ttl=10)  # two retries
    with rc.Client(
        base_url=server.url, timeout=TIMEOUT, budget=budget, retry=rc.RetryPolicy()
    ) as client:
        client.get("/down")  # the client spends both
        assert budget.stats.retries == 2

        @rc.retry(budget=budget)
        def fetch() -> None:
            client.get("/down").raise_for_status()

        with pytest.raises(httpx.HTTPStatusError) as info:
            fetch()
    assert rc.outcome(info.value).stopped_by == "budget"
    assert len(server.requests("/down")) == 3 + 1


# -- deadline, testing mode, on_retry ----------------------------------------


def test_no_sleep_past_the_deadline() -> None:
    fn = Failing(connect_error())
    policy = rc.RetryPolicy(deadline=0.5, backoff_initial=1, jitter="none")
    started = time.monotonic()
    with pytest.raises(httpx.ConnectError) as info:
        rc.retry(policy)(fn)()
    assert time.monotonic() - started < 0.4  # did not sleep at all
    assert fn.calls == 1
    assert rc.outcome(info.value).stopped_by == "deadline"


def test_deadline_in_testing_mode(no_sleep: testing.TestingMode) -> None:
    fn = Failing(connect_error())
    policy = rc.RetryPolicy(deadline=0.5, backoff_initial=1, jitter="none")
    with pytest.raises(httpx.ConnectError) as info:
        rc.retry(policy)(fn)()
    assert fn.calls == 1
    assert rc.outcome(info.value).stopped_by == "deadline"
    assert no_sleep.sleeps == []


def test_backoff_without_jitter_is_exact(no_sleep: testing.TestingMode) -> None:
    fn = Failing(connect_error())
    policy = rc.RetryPolicy(
        max_attempts=5, backoff_initial=0.25, backoff_multiplier=2, jitter="none"
    )
    with pytest.raises(httpx.ConnectError):
        rc.retry(policy)(fn)()
    assert no_sleep.sleeps == [0.25, 0.5, 1.0, 2.0]


def flaky_function_for_label() -> None:
    raise connect_error()


def test_testing_mode_caps_attempts_and_records_sleeps() -> None:
    events: list[rc.RetryEvent] = []
    decorated = rc.retry(
        rc.RetryPolicy(max_attempts=5, backoff_initial=0.25, jitter="none"),
        on_retry=events.append,
    )(flaky_function_for_label)
    with testing.testing_mode(attempts=2) as mode:
        started = time.monotonic()
        with pytest.raises(httpx.ConnectError) as info:
            decorated()
    assert time.monotonic() - started < 0.2
    assert rc.outcome(info.value).attempts == 2
    assert mode.sleeps == [0.25]
    assert [e.attempt for e in events] == [1]
    assert all("flaky_function_for_label" in e.label for e in events)
    assert events[0].reason == "ConnectError"
    assert events[0].sleep == 0.25
    assert isinstance(events[0].exception, httpx.ConnectError)

    events.clear()
    with testing.testing_mode() as mode, pytest.raises(httpx.ConnectError):
        decorated()
    assert mode.sleeps == [0.25, 0.5, 1.0, 2.0]
    assert [e.attempt for e in events] == [1, 2, 3, 4]


async def test_testing_mode_caps_async(no_sleep: testing.TestingMode) -> None:
    calls = 0

    @rc.retry(rc.RetryPolicy(max_attempts=6, backoff_initial=5, jitter="none"))
    async def down() -> None:
        nonlocal calls
        calls += 1
        raise connect_error()

    with testing.testing_mode(attempts=3) as mode, pytest.raises(httpx.ConnectError):
        await asyncio.wait_for(down(), 2)
    assert calls == 3
    assert mode.sleeps == [5.0, 10.0]


# -- cancellation ------------------------------------------------------------


async def test_cancel_during_backoff_ends_at_once() -> None:
    calls = 0

    @rc.retry(rc.RetryPolicy(backoff_initial=5, jitter="none"))
    async def down() -> None:
        nonlocal calls
        calls += 1
        raise connect_error()

    task = asyncio.create_task(down())
    await asyncio.sleep(0.1)
    assert calls == 1 and not task.done()  # sleeping the 5 s backoff
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 0.5
    assert calls == 1


def test_trio_cancel_during_backoff_ends_at_once() -> None:
    calls = 0

    @rc.retry(rc.RetryPolicy(backoff_initial=5, jitter="none"))
    async def down() -> None:
        nonlocal calls
        calls += 1
        raise connect_error()

    async def main() -> float:
        started = time.monotonic()
        with trio.move_on_after(0.1):
            await down()
        return time.monotonic() - started

    assert trio.run(main) < 1.0
    assert calls == 1


async def test_cancelled_error_from_the_function_is_not_retried() -> None:
    calls = 0

    @rc.retry(on=(MyError,))
    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(cancelled(), 2)
    assert calls == 1
