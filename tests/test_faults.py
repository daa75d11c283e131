"""Fault tests against a real HTTP/1.1 server on 127.0.0.1 (tests/loopback.py).

Every scenario runs for both ``reliable_client.Client`` and
``reliable_client.AsyncClient``.  What the server recorded (how many requests,
their headers, bodies and arrival times) is the ground truth: the client's own
account (``outcome()``, ``client.stats``) must agree with it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import trio

import reliable_client as rc
from reliable_client import testing

from .loopback import (
    Action,
    BrokenBody,
    Close,
    LoopbackServer,
    Reply,
    Reset,
    Stall,
    closed_port,
)

# Loopback answers in microseconds; 0.3 s of read time is plenty for a reply
# and keeps every stalled attempt short.
TIMEOUT = httpx.Timeout(0.5, read=0.3)
KEY = "idempotency-key"  # the server records header names in lower case
RID = "x-client-resource-id"

# A fault on the way back, the httpx type it must surface as, and the reason
# recorded for a retry after it.
FAULTS = [
    pytest.param(Close(), httpx.RemoteProtocolError, id="close"),
    pytest.param(Reset(), httpx.ReadError, id="reset"),
    pytest.param(Stall(3.0), httpx.ReadTimeout, id="stall"),
]


def client(server: LoopbackServer, **kwargs: Any) -> rc.Client:
    kwargs.setdefault("timeout", TIMEOUT)
    return rc.Client(base_url=server.url, **kwargs)


def aclient(server: LoopbackServer, **kwargs: Any) -> rc.AsyncClient:
    kwargs.setdefault("timeout", TIMEOUT)
    return rc.AsyncClient(base_url=server.url, **kwargs)


def retry_after(value: str) -> tuple[tuple[str, str], ...]:
    return (("Retry-After", value),)


# -- faults after the request was read: close (FIN), reset (RST), stall -------


def check_get_retried(
    server: LoopbackServer, r: httpx.Response, exc_type: type[Exception]
) -> None:
    assert r.status_code == 200
    assert r.text == "third time"
    seen = server.requests("/f")
    assert [s.method for s in seen] == ["GET"] * 3
    result = rc.outcome(r)
    assert result.attempts == 3
    assert result.retries == (exc_type.__name__,) * 2
    assert result.stopped_by is None


@pytest.mark.parametrize(("fault", "exc_type"), FAULTS)
def test_get_retried_after_fault(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    fault: Action,
    exc_type: type[Exception],
) -> None:
    server.script("/f", fault, fault, Reply(200, body=b"third time"))
    with client(server) as c:
        r = c.get("/f")
        check_get_retried(server, r, exc_type)
        assert c.stats.attempts == 3
        assert c.stats.retries == 2
        assert c.stats.gave_up == 0
    assert len(no_sleep.sleeps) == 2


@pytest.mark.parametrize(("fault", "exc_type"), FAULTS)
async def test_get_retried_after_fault_async(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    fault: Action,
    exc_type: type[Exception],
) -> None:
    server.script("/f", fault, fault, Reply(200, body=b"third time"))
    async with aclient(server) as c:
        r = await c.get("/f")
        check_get_retried(server, r, exc_type)
        assert c.stats.attempts == 3
        assert c.stats.retries == 2
        assert c.stats.gave_up == 0
    assert len(no_sleep.sleeps) == 2


def check_out_of_attempts(
    server: LoopbackServer, exc: BaseException, exc_type: type[Exception]
) -> None:
    assert type(exc) is exc_type  # the original httpx type, not a wrapper
    assert len(server.requests("/f")) == 3
    result = rc.outcome(exc)
    assert result.attempts == 3
    assert result.retries == (exc_type.__name__,) * 2


@pytest.mark.parametrize(("fault", "exc_type"), FAULTS)
def test_get_gives_up_with_last_exception(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    fault: Action,
    exc_type: type[Exception],
) -> None:
    server.script("/f", fault)
    with client(server) as c:
        with pytest.raises(exc_type) as info:
            c.get("/f")
        check_out_of_attempts(server, info.value, exc_type)
        assert c.stats.gave_up == 1


@pytest.mark.parametrize(("fault", "exc_type"), FAULTS)
async def test_get_gives_up_with_last_exception_async(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    fault: Action,
    exc_type: type[Exception],
) -> None:
    server.script("/f", fault)
    async with aclient(server) as c:
        with pytest.raises(exc_type) as info:
            await c.get("/f")
        check_out_of_attempts(server, info.value, exc_type)
        assert c.stats.gave_up == 1


def check_unkeyed_post_not_retried(
    server: LoopbackServer, exc: BaseException, exc_type: type[Exception]
) -> None:
    assert type(exc) is exc_type
    seen = server.requests("/f")
    assert len(seen) == 1
    assert seen[0].method == "POST"
    assert KEY not in seen[0].headers
    result = rc.outcome(exc)
    assert result.attempts == 1
    assert result.retries == ()
    assert result.stopped_by == "not_idempotent"


@pytest.mark.parametrize(("fault", "exc_type"), FAULTS)
def test_unkeyed_post_not_retried(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    fault: Action,
    exc_type: type[Exception],
) -> None:
    server.script("/f", fault, Reply(200))
    with client(server, idempotency=None) as c:
        with pytest.raises(exc_type) as info:
            c.post("/f", json={"amount": 100})
        check_unkeyed_post_not_retried(server, info.value, exc_type)
    assert no_sleep.sleeps == []


@pytest.mark.parametrize(("fault", "exc_type"), FAULTS)
async def test_unkeyed_post_not_retried_async(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    fault: Action,
    exc_type: type[Exception],
) -> None:
    server.script("/f", fault, Reply(200))
    async with aclient(server, idempotency=None) as c:
        with pytest.raises(exc_type) as info:
            await c.post("/f", json={"amount": 100})
        check_unkeyed_post_not_retried(server, info.value, exc_type)
    assert no_sleep.sleeps == []


def check_keyed_post(
    server: LoopbackServer, r: httpx.Response, exc_type: type[Exception]
) -> str:
    """All attempts carried one key, one resource id and one body."""
    assert r.status_code == 201
    seen = server.requests("/f")
    assert len(seen) == 3
    keys = {s.headers.get(KEY) for s in seen}
    rids = {s.headers.get(RID) for s in seen}
    assert len(keys) == 1
    assert len(rids) == 1
    (key,), (rid,) = keys, rids
    assert key
    assert rid
    assert {s.body for s in seen} == {b'{"amount":100}'}
    result = rc.outcome(r)
    assert result.attempts == 3
    assert result.retries == (exc_type.__name__,) * 2
    assert result.idempotency_key == key
    assert result.resource_id == rid
    return key


@pytest.mark.parametrize(("fault", "exc_type"), FAULTS)
def test_keyed_post_retried_with_same_key(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    fault: Action,
    exc_type: type[Exception],
) -> None:
    server.script("/f", fault, fault, Reply(201), Reply(201))
    with client(server) as c:
        key = check_keyed_post(server, c.post("/f", json={"amount": 100}), exc_type)
        # The next call is a new operation: a new key.
        c.post("/f", json={"amount": 100})
    assert server.requests("/f")[-1].headers[KEY] != key


@pytest.mark.parametrize(("fault", "exc_type"), FAULTS)
async def test_keyed_post_retried_with_same_key_async(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    fault: Action,
    exc_type: type[Exception],
) -> None:
    server.script("/f", fault, fault, Reply(201), Reply(201))
    async with aclient(server) as c:
        r = await c.post("/f", json={"amount": 100})
        key = check_keyed_post(server, r, exc_type)
        await c.post("/f", json={"amount": 100})
    assert server.requests("/f")[-1].headers[KEY] != key


@pytest.mark.parametrize(("fault", "exc_type"), FAULTS[:2])
def test_callers_key_makes_post_retryable_without_idempotency(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    fault: Action,
    exc_type: type[Exception],
) -> None:
    server.script("/f", fault, Reply(201))
    with client(server, idempotency=None) as c:
        r = c.post("/f", content=b"x", headers={"Idempotency-Key": "order-42"})
    assert r.status_code == 201
    assert [s.headers.get(KEY) for s in server.requests("/f")] == ["order-42"] * 2
    assert rc.outcome(r).retries == (exc_type.__name__,)


@pytest.mark.parametrize(("fault", "exc_type"), FAULTS[:2])
async def test_callers_key_makes_post_retryable_without_idempotency_async(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    fault: Action,
    exc_type: type[Exception],
) -> None:
    server.script("/f", fault, Reply(201))
    async with aclient(server, idempotency=None) as c:
        r = await c.post("/f", content=b"x", headers={"Idempotency-Key": "order-42"})
    assert r.status_code == 201
    assert [s.headers.get(KEY) for s in server.requests("/f")] == ["order-42"] * 2
    assert rc.outcome(r).retries == (exc_type.__name__,)


# -- 503 with Retry-After ------------------------------------------------------

# If Retry-After were ignored the backoff would ask for exactly 3 s.
SLOW_BACKOFF = rc.RetryPolicy(backoff_initial=3.0, jitter="none")


def http_date_in(seconds: float) -> str:
    return formatdate(time.time() + seconds, usegmt=True)


def check_retry_after_seconds(
    server: LoopbackServer, r: httpx.Response, sleeps: list[float]
) -> None:
    assert r.status_code == 200
    assert sleeps == [1.0]
    seen = server.requests("/busy")
    assert [s.method for s in seen] == ["POST", "POST"]
    assert rc.outcome(r).retries == ("status 503",)


def test_retry_after_seconds(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    # Rule 3: a 503 with Retry-After was not processed: retried even for an
    # unkeyed POST.
    server.script("/busy", Reply(503, retry_after("1")), Reply(200))
    with client(server, retry=SLOW_BACKOFF, idempotency=None) as c:
        r = c.post("/busy", content=b"x")
    check_retry_after_seconds(server, r, no_sleep.sleeps)


async def test_retry_after_seconds_async(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/busy", Reply(503, retry_after("1")), Reply(200))
    async with aclient(server, retry=SLOW_BACKOFF, idempotency=None) as c:
        r = await c.post("/busy", content=b"x")
    check_retry_after_seconds(server, r, no_sleep.sleeps)


def test_503_without_retry_after_not_retried_for_unkeyed_post(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/busy", Reply(503), Reply(200))
    with client(server, idempotency=None) as c:
        r = c.post("/busy", content=b"x")
    assert r.status_code == 503
    assert len(server.requests("/busy")) == 1
    assert no_sleep.sleeps == []


async def test_503_without_retry_after_not_retried_for_unkeyed_post_async(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/busy", Reply(503), Reply(200))
    async with aclient(server, idempotency=None) as c:
        r = await c.post("/busy", content=b"x")
    assert r.status_code == 503
    assert len(server.requests("/busy")) == 1
    assert no_sleep.sleeps == []


def check_retry_after_date(
    server: LoopbackServer, r: httpx.Response, sleeps: list[float]
) -> None:
    assert r.status_code == 200
    assert len(server.requests("/busy")) == 2
    assert len(sleeps) == 1
    # An HTTP-date has whole seconds: "now + 2 s" truncated is 1..2 s ahead.
    assert 0.9 <= sleeps[0] <= 2.0


def test_retry_after_http_date(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/busy", Reply(503, retry_after(http_date_in(2))), Reply(200))
    with client(server, retry=SLOW_BACKOFF) as c:
        r = c.get("/busy")
    check_retry_after_date(server, r, no_sleep.sleeps)


async def test_retry_after_http_date_async(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/busy", Reply(503, retry_after(http_date_in(2))), Reply(200))
    async with aclient(server, retry=SLOW_BACKOFF) as c:
        r = await c.get("/busy")
    check_retry_after_date(server, r, no_sleep.sleeps)


def check_real_retry_after_wait(server: LoopbackServer, r: httpx.Response) -> None:
    assert r.status_code == 200
    first, second = server.requests("/busy")
    gap = second.at - first.at
    # Slept what the server asked (0.2 s), not the 3 s backoff.
    assert 0.2 <= gap < 1.5


def test_retry_after_really_waits(server: LoopbackServer) -> None:
    server.script("/busy", Reply(503, retry_after("0.2")), Reply(200))
    with client(server, retry=SLOW_BACKOFF) as c:
        r = c.get("/busy")
    check_real_retry_after_wait(server, r)


async def test_retry_after_really_waits_async(server: LoopbackServer) -> None:
    server.script("/busy", Reply(503, retry_after("0.2")), Reply(200))
    async with aclient(server, retry=SLOW_BACKOFF) as c:
        r = await c.get("/busy")
    check_real_retry_after_wait(server, r)


# -- a body that breaks midway (rule 8), and no leaked connections -------------

ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


def test_broken_body_retried_and_no_connection_leaks(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    # Each call: a 503 (discarded), a body cut short (discarded), a whole body.
    # With a single connection in the pool, any discarded attempt that kept
    # its connection would make the next attempt wait for the pool and fail.
    rounds = 4
    script = [Reply(503), BrokenBody(200, total=1000, sent=10)]
    server.script(
        "/b",
        *[
            a
            for i in range(rounds)
            for a in (*script, Reply(200, body=b"whole %d" % i))
        ],
    )
    with client(server, limits=ONE_CONNECTION) as c:
        for i in range(rounds):
            r = c.get("/b")
            assert r.content == b"whole %d" % i
            result = rc.outcome(r)
            assert result.attempts == 3
            assert result.retries == ("status 503", "RemoteProtocolError")
        assert c.stats.attempts == 3 * rounds
    assert len(server.requests("/b")) == 3 * rounds


async def test_broken_body_retried_and_no_connection_leaks_async(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    rounds = 4
    script = [Reply(503), BrokenBody(200, total=1000, sent=10)]
    server.script(
        "/b",
        *[
            a
            for i in range(rounds)
            for a in (*script, Reply(200, body=b"whole %d" % i))
        ],
    )
    async with aclient(server, limits=ONE_CONNECTION) as c:
        for i in range(rounds):
            r = await c.get("/b")
            assert r.content == b"whole %d" % i
            result = rc.outcome(r)
            assert result.attempts == 3
            assert result.retries == ("status 503", "RemoteProtocolError")
        assert c.stats.attempts == 3 * rounds
    assert len(server.requests("/b")) == 3 * rounds


def test_streamed_body_failure_reaches_caller(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/s", BrokenBody(200, total=1000, sent=10), Reply(200, body=b"next"))
    with client(server, limits=ONE_CONNECTION) as c:
        with c.stream("GET", "/s") as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                r.read()
        assert len(server.requests("/s")) == 1  # the body failure is not retried
        # The failed stream gave its connection back: the one-connection pool
        # still serves.
        for _ in range(3):
            assert c.get("/s").content == b"next"
    assert len(server.requests("/s")) == 4
    assert no_sleep.sleeps == []


async def test_streamed_body_failure_reaches_caller_async(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/s", BrokenBody(200, total=1000, sent=10), Reply(200, body=b"next"))
    async with aclient(server, limits=ONE_CONNECTION) as c:
        async with c.stream("GET", "/s") as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                await r.aread()
        assert len(server.requests("/s")) == 1
        for _ in range(3):
            assert (await c.get("/s")).content == b"next"
    assert len(server.requests("/s")) == 4
    assert no_sleep.sleeps == []


def test_stream_retries_failures_before_the_body(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/s", Close(), Reply(503), Reply(200, body=b"streamed"))
    with client(server, limits=ONE_CONNECTION) as c, c.stream("GET", "/s") as r:
        assert r.read() == b"streamed"
        assert rc.outcome(r).retries == ("RemoteProtocolError", "status 503")
    assert len(server.requests("/s")) == 3


async def test_stream_retries_failures_before_the_body_async(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/s", Close(), Reply(503), Reply(200, body=b"streamed"))
    async with (
        aclient(server, limits=ONE_CONNECTION) as c,
        c.stream("GET", "/s") as r,
    ):
        assert await r.aread() == b"streamed"
        assert rc.outcome(r).retries == ("RemoteProtocolError", "status 503")
    assert len(server.requests("/s")) == 3


# -- nothing listening: the request never left (rule 1) ------------------------


def check_connect_error(exc: BaseException, sleeps: list[float]) -> None:
    assert type(exc) is httpx.ConnectError
    result = rc.outcome(exc)
    assert result.attempts == 3
    assert result.retries == ("ConnectError", "ConnectError")
    assert len(sleeps) == 2


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_connect_error_retried_for_any_method(
    no_sleep: testing.TestingMode, method: str
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/x"
    with rc.Client(timeout=TIMEOUT, idempotency=None) as c:
        with pytest.raises(httpx.ConnectError) as info:
            c.request(method, url, content=b"x")
        assert c.stats.attempts == 3
    check_connect_error(info.value, no_sleep.sleeps)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_connect_error_retried_for_any_method_async(
    no_sleep: testing.TestingMode, method: str
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/x"
    async with rc.AsyncClient(timeout=TIMEOUT, idempotency=None) as c:
        with pytest.raises(httpx.ConnectError) as info:
            await c.request(method, url, content=b"x")
        assert c.stats.attempts == 3
    check_connect_error(info.value, no_sleep.sleeps)


# -- the deadline -------------------------------------------------------------

DEADLINE = rc.RetryPolicy(deadline=1.0)


def test_deadline_cuts_the_attempt_timeout(server: LoopbackServer) -> None:
    server.script("/slow", Stall(5.0))
    with client(server, timeout=10.0, retry=DEADLINE) as c:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout) as info:
            c.get("/slow")
        elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 1.5
    assert len(server.requests("/slow")) == 1
    assert rc.outcome(info.value).stopped_by == "deadline"


async def test_deadline_cuts_the_attempt_timeout_async(server: LoopbackServer) -> None:
    server.script("/slow", Stall(5.0))
    async with aclient(server, timeout=10.0, retry=DEADLINE) as c:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout) as info:
            await c.get("/slow")
        elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 1.5
    assert len(server.requests("/slow")) == 1
    assert rc.outcome(info.value).stopped_by == "deadline"


# The first attempt fails at once, the retry sleeps 0.3 s, and the second
# attempt may only have what is left of the second (about 0.7 s).
DEADLINE_AFTER_SLEEP = rc.RetryPolicy(deadline=1.0, backoff_initial=0.3, jitter="none")


def check_retry_within_deadline(server: LoopbackServer, elapsed: float) -> None:
    first, second = server.requests("/slow")
    assert second.at - first.at >= 0.3
    assert 0.9 <= elapsed < 1.5


def test_deadline_cuts_the_timeout_of_a_retry(server: LoopbackServer) -> None:
    server.script("/slow", Close(), Stall(5.0))
    with client(server, timeout=10.0, retry=DEADLINE_AFTER_SLEEP) as c:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            c.get("/slow")
        check_retry_within_deadline(server, time.monotonic() - start)


async def test_deadline_cuts_the_timeout_of_a_retry_async(
    server: LoopbackServer,
) -> None:
    server.script("/slow", Close(), Stall(5.0))
    async with aclient(server, timeout=10.0, retry=DEADLINE_AFTER_SLEEP) as c:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await c.get("/slow")
        check_retry_within_deadline(server, time.monotonic() - start)


def check_deadline_stops_sleep(
    server: LoopbackServer, r: httpx.Response, elapsed: float
) -> None:
    assert r.status_code == 503
    assert elapsed < 0.8  # returned without sleeping the 5 s
    assert len(server.requests("/busy")) == 1
    result = rc.outcome(r)
    assert result.attempts == 1
    assert result.stopped_by == "deadline"


def test_deadline_refuses_a_long_retry_after(server: LoopbackServer) -> None:
    # max_retry_after (60 s) allows 5 s; only the deadline forbids the sleep.
    server.script("/busy", Reply(503, retry_after("5")), Reply(200))
    with client(server, retry=DEADLINE) as c:
        start = time.monotonic()
        r = c.get("/busy")
        check_deadline_stops_sleep(server, r, time.monotonic() - start)


async def test_deadline_refuses_a_long_retry_after_async(
    server: LoopbackServer,
) -> None:
    server.script("/busy", Reply(503, retry_after("5")), Reply(200))
    async with aclient(server, retry=DEADLINE) as c:
        start = time.monotonic()
        r = await c.get("/busy")
        check_deadline_stops_sleep(server, r, time.monotonic() - start)


def test_long_retry_after_stops_by_retry_after(server: LoopbackServer) -> None:
    server.script("/busy", Reply(503, retry_after("5")), Reply(200))
    with client(server, retry=rc.RetryPolicy(max_retry_after=2.0)) as c:
        start = time.monotonic()
        r = c.get("/busy")
        elapsed = time.monotonic() - start
    assert r.status_code == 503
    assert elapsed < 0.8
    assert len(server.requests("/busy")) == 1
    assert rc.outcome(r).stopped_by == "retry_after"


async def test_long_retry_after_stops_by_retry_after_async(
    server: LoopbackServer,
) -> None:
    server.script("/busy", Reply(503, retry_after("5")), Reply(200))
    async with aclient(server, retry=rc.RetryPolicy(max_retry_after=2.0)) as c:
        start = time.monotonic()
        r = await c.get("/busy")
        elapsed = time.monotonic() - start
    assert r.status_code == 503
    assert elapsed < 0.8
    assert len(server.requests("/busy")) == 1
    assert rc.outcome(r).stopped_by == "retry_after"


# -- cancellation during a backoff sleep -----------------------------------------

# Always 503, no Retry-After: the retry would come after exactly 5 s.
LONG_BACKOFF = rc.RetryPolicy(backoff_initial=5.0, jitter="none")


async def test_asyncio_cancel_during_backoff(server: LoopbackServer) -> None:
    server.script("/down", Reply(503))
    async with aclient(server, retry=LONG_BACKOFF) as c:
        task = asyncio.ensure_future(c.get("/down"))
        await asyncio.sleep(0.2)
        if task.done():
            task.result()  # raises why the call ended early, if it raised
            pytest.fail("the call ended instead of sleeping before a retry")
        assert len(server.requests("/down")) == 1
        cancelled_at = time.monotonic()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        took = time.monotonic() - cancelled_at
        assert task in done
        assert task.cancelled()
        assert took < 0.5
        # The client is still usable afterwards.
        server.script("/up", Reply(200))
        assert (await c.get("/up")).status_code == 200
    assert len(server.requests("/down")) == 1


def test_trio_cancel_during_backoff(server: LoopbackServer) -> None:
    server.script("/down", Reply(503))
    took: list[float] = []

    async def main() -> None:
        with trio.fail_after(5):
            async with aclient(server, retry=LONG_BACKOFF) as c:
                start = trio.current_time()
                with trio.move_on_after(0.2) as scope:
                    await c.get("/down")
                took.append(trio.current_time() - start)
                assert scope.cancelled_caught

    trio.run(main)
    assert took and took[0] < 0.7  # 0.2 s to the cancel, then at once
    assert len(server.requests("/down")) == 1


# -- concurrency: one client shared by threads and tasks -----------------------


def flaky_scripts(server: LoopbackServer, names: list[str], seed: int) -> int:
    """Script each path with 0-2 failures then a 200; return requests expected."""
    rng = random.Random(seed)
    failures = [Reply(503), Reply(500), Reply(429), Close(), Reset()]
    expected = 0
    for name in names:
        actions = [rng.choice(failures) for _ in range(rng.randint(0, 2))]
        server.script(name, *actions, Reply(200, body=name.encode()))
        expected += len(actions) + 1
    return expected


def test_threads_share_one_client(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    threads, calls = 8, 50
    names = [f"/t{t}/{i}" for t in range(threads) for i in range(calls)]
    expected = flaky_scripts(server, names, seed=1)
    errors: list[BaseException] = []
    bodies: list[bytes] = []
    lock = threading.Lock()
    with client(
        server,
        timeout=5.0,
        budget=rc.RetryBudget(min_per_second=1000),
        limits=httpx.Limits(max_connections=threads),
    ) as c:

        def work(t: int) -> None:
            try:
                for i in range(calls):
                    r = c.get(f"/t{t}/{i}")
                    r.raise_for_status()
                    with lock:
                        bodies.append(r.content)
            except BaseException as exc:  # reported below
                with lock:
                    errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        assert not any(w.is_alive() for w in workers)
        stats = c.stats
    assert errors == []
    assert sorted(bodies) == sorted(n.encode() for n in names)
    seen = len(server.requests())
    assert seen == expected
    assert stats.calls == threads * calls
    assert stats.attempts == seen
    assert stats.retries == seen - threads * calls == no_sleep.retries
    assert stats.gave_up == 0
    assert stats.refused_by_budget == 0


async def test_tasks_share_one_client(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    tasks, calls = 64, 5
    names = [f"/t{t}/{i}" for t in range(tasks) for i in range(calls)]
    expected = flaky_scripts(server, names, seed=2)
    async with aclient(
        server, timeout=5.0, budget=rc.RetryBudget(min_per_second=1000)
    ) as c:

        async def work(t: int) -> list[bytes]:
            out = []
            for i in range(calls):
                r = await c.get(f"/t{t}/{i}")
                r.raise_for_status()
                out.append(r.content)
            return out

        results = await asyncio.wait_for(
            asyncio.gather(*(work(t) for t in range(tasks))), 30
        )
        stats = c.stats
    assert sorted(b for chunk in results for b in chunk) == sorted(
        n.encode() for n in names
    )
    seen = len(server.requests())
    assert seen == expected
    assert stats.calls == tasks * calls
    assert stats.attempts == seen
    assert stats.retries == seen - tasks * calls == no_sleep.retries
    assert stats.gave_up == 0
    assert stats.refused_by_budget == 0
