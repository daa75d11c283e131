"""AdaptiveThrottle against a real loopback server, on short windows: an
outage costs the server less than the calls made, a recovery is seen within
a probe interval, and transient failures are not throttled."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

import reliable_client as rc
from reliable_client.testing import ChaosServer, FaultMix, Reply, Stall

RATE = 100.0  # calls a second, open loop


def open_loop(seconds: float, call: Callable[[], str]) -> list[tuple[float, str]]:
    """Start a call every 1 / RATE s for ``seconds``, whatever the earlier
    ones are doing; return (start time, how it ended) for each."""
    results: list[tuple[float, str]] = []
    lock = threading.Lock()
    begin = time.monotonic()

    def one(at: float) -> None:
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ended = call()
        with lock:
            results.append((at - begin, ended))

    with ThreadPoolExecutor(64) as pool:
        for index in range(int(seconds * RATE)):
            pool.submit(one, begin + index / RATE)
    return sorted(results)


def ending(client: rc.Client, path: str) -> Callable[[], str]:
    def call() -> str:
        try:
            response = client.get(path)
        except rc.ThrottledError:
            return "throttled"
        except httpx.TransportError:
            return "error"
        return "ok" if response.status_code == 200 else f"status {response.status_code}"

    return call


async def fine(scope: object, receive: Callable[[], object], send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


POLICY = rc.RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=0.05)


def test_an_outage_costs_the_server_less_and_recovery_is_quick() -> None:
    shed = rc.AdaptiveThrottle(window=1.0, min_per_second=2.0)
    with ChaosServer(lifetime=60) as server:
        server.script("/items", Reply(200))
        start = time.monotonic()
        server.outage(2.0, start_in=0.5)  # from 0.5 s to 2.5 s
        with rc.Client(base_url=server.url, retry=POLICY, throttle=shed) as client:
            results = open_loop(4.0, ending(client, "/items"))
        arrivals = [seen.at - start for seen in server.requests("/items")]
    # The outage after its first 0.5 s (the throttle has learnt by then).
    calls = sum(1 for at, _ in results if 1.0 <= at < 2.5)
    received = sum(1 for at in arrivals if 1.0 <= at < 2.5)
    assert received <= 0.25 * calls, (received, calls)
    # Recovery: the next probe (within 0.5 s) finds the server back.
    after = [ended for at, ended in results if 3.1 <= at < 3.6]
    assert after and after.count("ok") >= 0.9 * len(after), after


def test_without_the_throttle_the_same_outage_costs_more() -> None:
    # The comparison the test above stands on: the budget alone lets every
    # call through (and some retries), a little over one request a call.
    with ChaosServer(lifetime=60) as server:
        server.script("/items", Reply(200))
        start = time.monotonic()
        server.outage(2.0, start_in=0.5)
        with rc.Client(base_url=server.url, retry=POLICY) as client:
            results = open_loop(3.0, ending(client, "/items"))
        arrivals = [seen.at - start for seen in server.requests("/items")]
    calls = sum(1 for at, _ in results if 1.0 <= at < 2.5)
    received = sum(1 for at in arrivals if 1.0 <= at < 2.5)
    assert received >= calls


def test_transient_failures_are_not_throttled() -> None:
    shed = rc.AdaptiveThrottle(window=1.0)
    policy = POLICY.replace(max_attempts=4)
    with ChaosServer(app=fine, seed=11, lifetime=60) as server:
        server.faults("/items", FaultMix(unavailable=0.2))
        with rc.Client(base_url=server.url, retry=policy, throttle=shed) as client:
            results = open_loop(4.0, ending(client, "/items"))
    # After the first half second: on a handful of requests one failure is
    # a large share (1 request, 0 accepts: p = 1/2), as the formula says.
    endings = [ended for at, ended in results if at >= 0.5]
    assert endings.count("throttled") <= 0.005 * len(endings), endings
    assert endings.count("ok") >= 0.99 * len(endings)


def test_a_burst_of_first_calls_to_a_slow_server_is_not_refused() -> None:
    # 64 calls at once to a host the throttle has never seen, each answered
    # after 0.3 s: none has been answered when the others are asked, and none
    # is refused (nothing has said "overloaded").
    import asyncio

    async def slow(scope: object, receive: Callable[[], object], send: Any) -> None:
        await asyncio.sleep(0.3)
        await fine(scope, receive, send)

    shed = rc.AdaptiveThrottle(window=1.0)
    with ChaosServer(app=slow, lifetime=30) as server:
        with rc.Client(base_url=server.url, retry=POLICY, throttle=shed) as client:
            call = ending(client, "/slow")
            with ThreadPoolExecutor(64) as pool:
                endings = list(pool.map(lambda _: call(), range(64)))
        received = len(server.requests("/slow"))
    assert endings == ["ok"] * 64, endings
    assert received == 64 and shed.refused == 0


def test_async_callers_that_cancel_on_a_hanging_server_are_throttled() -> None:
    # Callers that give up by cancelling (asyncio.wait_for): the cancelled
    # attempt is an overload answer, as a timeout is, so the hang is seen.
    import asyncio

    shed = rc.AdaptiveThrottle(window=1.0)
    endings: list[str] = []

    async def callers(url: str) -> None:
        single = rc.RetryPolicy(max_attempts=1)
        async with rc.AsyncClient(
            base_url=url, retry=single, throttle=shed, timeout=30
        ) as client:

            async def one() -> None:
                try:
                    await asyncio.wait_for(client.get("/hang"), 0.2)
                    endings.append("ok")
                except rc.ThrottledError:
                    endings.append("throttled")
                except asyncio.TimeoutError:
                    endings.append("cancelled")

            tasks = []
            for _ in range(200):  # 2 s at 100 calls a second
                tasks.append(asyncio.create_task(one()))
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)

    with ChaosServer(lifetime=60) as server:
        server.script("/hang", Stall(20.0))
        asyncio.run(callers(server.url))
        received = len(server.requests("/hang"))
    assert endings.count("throttled") >= 0.7 * len(endings), endings
    assert received <= 0.3 * len(endings), received


def test_a_failure_that_outlives_its_history_still_counts() -> None:
    # Timeouts longer than the window: while the first requests hang, their
    # host's history is forgotten (reading stats forgets idle hosts).  Their
    # timeouts must still reach the history the next requests are asked in.
    shed = rc.AdaptiveThrottle(
        window=0.5,
        min_per_second=0.0,
        random=lambda: 0.0,  # refuse if p > 0
    )
    single = rc.RetryPolicy(max_attempts=1)
    with ChaosServer(lifetime=60) as server:
        server.script("/hang", Stall(30.0))
        with rc.Client(
            base_url=server.url, retry=single, throttle=shed, timeout=0.8
        ) as client:
            call = ending(client, "/hang")
            with ThreadPoolExecutor(8) as pool:
                wave = [pool.submit(call) for _ in range(8)]
                time.sleep(0.65)  # a window with no new request, none answered
                assert shed.stats == {}  # so the history is forgotten
                assert [done.result() for done in wave] == ["error"] * 8
            later = [call() for _ in range(5)]
        received = len(server.requests("/hang"))
    assert later == ["throttled"] * 5, later
    assert received == 8


def test_hedged_calls_to_a_healthy_server_are_not_refused() -> None:
    # Three copies of each call, the first answer kept and the other two
    # cancelled: the losers were not accepted, but the server answers, so
    # their cancellation is the caller's choice, not an overload signal.
    import asyncio

    shed = rc.AdaptiveThrottle(window=2.0)
    endings: list[str] = []

    async def hedged(url: str) -> None:
        async with rc.AsyncClient(base_url=url, throttle=shed) as client:
            for _ in range(30):
                copies = [asyncio.create_task(client.get("/slow")) for _ in range(3)]
                done, losers = await asyncio.wait(
                    copies, return_when=asyncio.FIRST_COMPLETED
                )
                for loser in losers:
                    loser.cancel()
                await asyncio.gather(*losers, return_exceptions=True)
                for copy in done:
                    error = copy.exception()
                    endings.append("ok" if error is None else type(error).__name__)

    async def slowish(scope: object, receive: Callable[[], object], send: Any) -> None:
        await asyncio.sleep(0.005 + 0.01 * (time.monotonic_ns() % 3))
        await fine(scope, receive, send)

    with ChaosServer(app=slowish, lifetime=60) as server:
        asyncio.run(hedged(server.url))
    assert shed.refused == 0 and set(endings) == {"ok"}, (endings, shed.stats)
