"""AdaptiveThrottle: the formula on an injected clock, probes, recovery,
hosts, and its place in the clients, transports, decorator and testing mode."""

from __future__ import annotations

import logging
import threading
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reliable_client as rc
from reliable_client import testing
from reliable_client._throttle import ADMIT, PROBE, REFUSE

from .callers import Caller


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def never_refuse() -> float:
    return 0.999999  # >= any probability below 1: admits unless p ~ 1


def always_refuse() -> float:
    return 0.0  # < any positive probability: refuses (but probes) when p > 0


def throttle(clock: Clock, **options: object) -> rc.AdaptiveThrottle:
    return rc.AdaptiveThrottle(clock=clock, **options)  # type: ignore[arg-type]


def ok(shed: rc.AdaptiveThrottle, key: str = "api.test") -> int:
    """A request the server accepts (if the throttle lets it go)."""
    verdict = shed.admit(key)
    if verdict != REFUSE:
        shed.record(key, True, verdict == PROBE)
    return verdict


def fail(shed: rc.AdaptiveThrottle, key: str = "api.test") -> int:
    """A request the server answers 503 (if the throttle lets it go)."""
    verdict = shed.admit(key)
    if verdict != REFUSE:
        shed.record(key, False, verdict == PROBE)
    return verdict


# -- the formula ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "accepts", "k"),
    [
        (10, 0, 2.0),
        (10, 3, 2.0),
        (10, 5, 2.0),
        (10, 8, 2.0),
        (30, 10, 1.5),
        (4, 1, 1.0),
    ],
)
def test_refusal_probability_is_the_sre_formula(
    requests: int, accepts: int, k: float
) -> None:
    clock = Clock()
    shed = throttle(clock, k=k, random=never_refuse)
    for index in range(requests):
        verdict = ok(shed) if index < accepts else fail(shed)
        assert verdict != REFUSE
    expected = max(0.0, (requests - k * accepts) / (requests + 1))
    assert shed.probability("api.test") == pytest.approx(expected)
    stats = shed.stats["api.test"]
    assert (stats.requests, stats.accepts) == (requests, accepts)
    assert stats.probability == pytest.approx(expected)


def test_refused_requests_count_as_requests() -> None:
    clock = Clock()
    shed = throttle(clock, random=always_refuse, min_per_second=0.0)
    verdicts = [fail(shed) for _ in range(8)]
    # The first goes (nothing known yet) and fails: p > 0 from then on.
    assert verdicts == [ADMIT] + [REFUSE] * 7
    assert shed.stats["api.test"].requests == 8
    assert shed.stats["api.test"].accepts == 0
    assert shed.stats["api.test"].probability == pytest.approx(8 / 9)
    assert shed.refused == 7


def test_a_fresh_burst_is_never_refused() -> None:
    # 64 first requests at once (or a slow but healthy server: many out, none
    # answered yet): nothing says "overloaded", so all of them go.
    clock = Clock()
    shed = throttle(clock, random=always_refuse, min_per_second=0.0)
    assert [shed.admit("api.test") for _ in range(64)] == [ADMIT] * 64
    assert shed.probability("api.test") == 0.0
    assert shed.stats["api.test"].requests == 64


def test_a_request_still_out_is_not_an_accept() -> None:
    # A server that hangs: once one request has failed, the ones still out
    # count against it, before their own timeouts fire.
    clock = Clock()
    shed = throttle(clock, random=always_refuse, min_per_second=0.0)
    for _ in range(9):
        assert shed.admit("api.test") == ADMIT  # out, no answer yet
    shed.record("api.test", False)  # the first of them times out
    verdicts = [shed.admit("api.test") for _ in range(10)]
    assert REFUSE in verdicts
    assert shed.stats["api.test"].accepts == 0
    shed.record("api.test", True)  # one answer comes late: counted then
    assert shed.stats["api.test"].accepts == 1


def test_a_window_without_overload_lets_everything_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No probes (min_per_second=0): the counts still say "refuse", but a whole
    # window has passed since the last overload answer, so requests go again.
    clock = Clock()
    shed = throttle(clock, window=10.0, random=always_refuse, min_per_second=0.0)
    with caplog.at_level(logging.WARNING, logger="reliable_client"):
        assert fail(shed) == ADMIT
        assert fail(shed) == REFUSE
        clock.now += 9.9
        assert shed.admit("api.test") == REFUSE
        clock.now += 0.2
        assert shed.admit("api.test") == ADMIT
        assert shed.probability("api.test") == 0.0
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("throttling requests to api.test") for m in messages)
    assert any(m.startswith("stopped throttling requests to") for m in messages)


def test_while_refusing_the_probes_decide_when_it_ends() -> None:
    # A server that hangs for longer than the window: the probes still out
    # say nothing yet, so time alone does not end the throttling.
    clock = Clock()
    shed = throttle(clock, window=1.0, random=always_refuse, min_per_second=1.0)
    assert fail(shed) == ADMIT  # t = 0: a timeout
    clock.now += 0.5
    verdicts = [shed.admit("api.test") for _ in range(5)]
    assert verdicts == [PROBE] * 4 + [REFUSE]  # four probes out, unanswered
    clock.now += 0.7  # past a window since the failure
    assert shed.admit("api.test") == REFUSE
    clock.now += 0.3
    assert ok(shed) == PROBE  # a token later: a probe, accepted
    assert shed.admit("api.test") == ADMIT  # which ends it


def test_history_expires_after_the_window() -> None:
    clock = Clock()
    shed = throttle(clock, window=10.0, random=never_refuse)
    for _ in range(20):
        fail(shed)
    assert shed.probability("api.test") > 0.9
    clock.now += 5.0
    assert shed.probability("api.test") > 0.9  # still within the window
    clock.now += 5.5
    assert shed.probability("api.test") == 0.0


def test_a_healthy_past_does_not_shield_an_outage() -> None:
    # 10 s of accepts at 200 a second, then the server goes down: over the
    # whole window the formula would let 4,000 failures through first; its
    # last fifth sees the outage within a second or two.
    clock = Clock()
    shed = throttle(clock, random=never_refuse)
    for _ in range(100):  # 10 s in steps of 0.1 s
        for _ in range(20):
            ok(shed)
        clock.now += 0.1
    for _ in range(15):  # 1.5 s of failures
        for _ in range(20):
            fail(shed)
        clock.now += 0.1
    stats = shed.stats["api.test"]
    assert stats.requests - 2 * stats.accepts < 0  # the window alone: p = 0
    assert shed.probability("api.test") > 0.9


def test_probes_go_through_at_min_per_second() -> None:
    clock = Clock()
    shed = throttle(clock, min_per_second=2.0, random=always_refuse)
    for _ in range(10):
        fail(shed)  # nothing accepted: p ~ 0.9
    clock.now += 0.5
    verdicts = []
    for _ in range(20):  # 2 s in steps of 100 ms
        verdicts.append(fail(shed))
        clock.now += 0.1
    assert verdicts.count(PROBE) == 4  # 2 a second
    assert ADMIT not in verdicts


def test_an_accepted_probe_ends_the_throttling_at_once() -> None:
    clock = Clock()
    shed = throttle(clock, random=always_refuse)
    for _ in range(100):
        fail(shed)
    assert shed.probability("api.test") > 0.98
    clock.now += 1.0
    assert ok(shed) == PROBE
    assert shed.probability("api.test") == 0.0
    assert shed.admit("api.test") == ADMIT


def test_a_failed_probe_keeps_the_throttling() -> None:
    clock = Clock()
    shed = throttle(clock, random=always_refuse)
    for _ in range(50):
        fail(shed)
    clock.now += 1.0
    assert fail(shed) == PROBE
    assert shed.probability("api.test") > 0.98


def test_hosts_are_kept_apart_and_shared_without_per_host() -> None:
    clock = Clock()
    shed = throttle(clock, random=never_refuse)
    for _ in range(10):
        fail(shed, "down.test")
        ok(shed, "up.test")
    assert shed.probability("down.test") > 0.9
    assert shed.probability("up.test") == 0.0
    one = throttle(clock, per_host=False, random=never_refuse)
    for _ in range(10):
        fail(one, one.key("down.test"))
    assert one.probability("up.test") == one.probability("down.test") > 0.9
    assert list(one.stats) == [""]


def test_idle_hosts_are_forgotten() -> None:
    clock = Clock()
    shed = throttle(clock, window=10.0)
    for index in range(10_000):
        shed.admit(f"host-{index}.test")
    clock.now += 11.0
    shed.admit("fresh.test")
    assert list(shed.stats) == ["fresh.test"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "accept", "fail", "tick"]),
            st.floats(min_value=0.0, max_value=3.0),
        ),
        max_size=200,
    ),
    st.floats(min_value=1.0, max_value=5.0),
)
def test_probability_stays_in_range(steps: list[tuple[str, float]], k: float) -> None:
    clock = Clock()
    shed = throttle(clock, k=k, window=5.0)
    for action, value in steps:
        if action == "admit":
            shed.admit("h")
        elif action == "accept":
            ok(shed, "h")
        elif action == "fail":
            fail(shed, "h")
        else:
            clock.now += value
        assert 0.0 <= shed.probability("h") < 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=300), st.floats(min_value=1.0, max_value=4.0))
def test_probability_is_zero_while_accepts_keep_up(fails: list[bool], k: float) -> None:
    # Failures only while the server still accepts enough: nothing is refused.
    clock = Clock()
    shed = throttle(clock, k=k)
    accepts = 0
    for requests, wanted in enumerate(fails):
        # A failure that would fall behind the accepts is an accept instead.
        failing = wanted and requests + 1 <= k * accepts
        assert shed.admit("h") == ADMIT
        shed.record("h", not failing)
        accepts += not failing
        assert shed.probability("h") == 0.0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"k": 0.5}, "k"),
        ({"window": 0.0}, "window"),
        ({"window": -1.0}, "window"),
        ({"min_per_second": -0.1}, "min_per_second"),
    ],
)
def test_bad_values_name_their_field(options: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        rc.AdaptiveThrottle(**options)  # type: ignore[arg-type]


def test_bad_types_are_refused() -> None:
    with pytest.raises(TypeError, match="per_host"):
        rc.AdaptiveThrottle(per_host="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock"):
        rc.AdaptiveThrottle(clock=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="throttle"):
        rc.Client(throttle=object())  # type: ignore[arg-type]


def test_it_logs_when_throttling_starts_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="reliable_client")
    clock = Clock()
    shed = throttle(clock, random=always_refuse, min_per_second=0.0)
    for _ in range(50):
        fail(shed)
    starts = [
        r for r in caplog.records if "throttling requests to api.test" in r.getMessage()
    ]
    assert len(starts) == 1  # once, not once per refused request
    clock.now += 11.0
    shed.admit("api.test")  # the window forgot: p = 0 again
    stops = [r for r in caplog.records if "stopped throttling" in r.getMessage()]
    assert len(stops) == 1


def test_it_is_thread_safe() -> None:
    shed = rc.AdaptiveThrottle()

    def work() -> None:
        for index in range(2000):
            shed.admit("h")
            shed.record("h", index % 4 != 0)  # a failure in four: p stays 0

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = shed.stats["h"]
    assert (stats.requests, stats.accepts) == (8000, 6000)


# -- in the clients --------------------------------------------------------------


def down(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503)


async def test_a_throttled_client_refuses_locally(kind: str) -> None:
    shed = rc.AdaptiveThrottle(random=always_refuse, min_per_second=0.0)
    caller = Caller(
        kind,
        transport=httpx.MockTransport(down),
        throttle=shed,
        retry=rc.RetryPolicy(max_attempts=3, backoff_initial=0, backoff_max=0),
    )
    try:
        first = await caller.request("GET", "http://api.test/x")
        assert first.status_code == 503
        # 1 + 2 failed attempts: the retries were decided by the throttle
        # first; now every request is refused before it is sent.
        with pytest.raises(rc.ThrottledError) as info:
            await caller.request("GET", "http://api.test/x")
        stats = caller.client.stats
    finally:
        await caller.close()
    error = info.value
    assert isinstance(error, httpx.TransportError)
    assert error.request.url == "http://api.test/x"
    assert rc.outcome(error).stopped_by == "throttle"
    assert rc.outcome(error).attempts == 0  # not one request was sent
    assert stats.throttled >= 1
    assert stats.attempts == stats.calls - 1 + stats.retries  # refused: not sent


async def test_a_refused_retry_ends_the_call_like_the_budget(kind: str) -> None:
    budget = rc.RetryBudget()
    # 5 requests, 2 accepts: p = 1/6.  The call's first attempt draws 0.99
    # (it goes); its retry draws 0.0 (refused).
    draws: list[float] = []
    shed = rc.AdaptiveThrottle(
        random=lambda: draws.pop(0) if draws else 0.999, min_per_second=0.0
    )
    for _ in range(2):
        ok(shed)
    for _ in range(3):
        fail(shed)
    draws.extend([0.99, 0.0])
    caller = Caller(
        kind, transport=httpx.MockTransport(down), throttle=shed, budget=budget
    )
    try:
        with testing.testing_mode():
            response = await caller.request("GET", "http://api.test/x")
    finally:
        await caller.close()
    assert response.status_code == 503
    result = rc.outcome(response)
    assert result.stopped_by == "throttle"
    assert budget.stats.retries == 0  # the throttle decided first: no spend


async def test_throttled_errors_are_never_retried_by_the_decorator() -> None:
    calls = 0

    @rc.retry(on=(httpx.TransportError,))
    async def fetch() -> None:
        nonlocal calls
        calls += 1
        raise rc.ThrottledError("refused")

    with pytest.raises(rc.ThrottledError):
        await fetch()
    assert calls == 1


def test_the_decorator_decides_once_per_attempt() -> None:
    shed = rc.AdaptiveThrottle(random=never_refuse)
    inner = rc.AdaptiveThrottle()
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    client = rc.Client(transport=transport, throttle=inner)
    attempts = 0

    @rc.retry(rc.RetryPolicy(backoff_initial=0, backoff_max=0), throttle=shed)
    def two_requests() -> None:
        nonlocal attempts
        attempts += 1
        client.get("http://a.test/")
        client.get("http://b.test/")
        if attempts == 1:
            raise httpx.ConnectError("lost")

    two_requests()
    client.close()
    assert shed.stats[""].requests == 2  # one decision per decorated attempt
    assert inner.stats == {}  # the requests inside were not throttled again


def test_testing_mode_turns_throttles_off_or_forces_them() -> None:
    shed = rc.AdaptiveThrottle(random=always_refuse, min_per_second=0.0)
    for _ in range(20):
        fail(shed)
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with rc.Client(transport=transport, throttle=shed) as client:
        with testing.testing_mode(throttle=False):
            assert client.get("http://api.test/").status_code == 200
        with pytest.raises(rc.ThrottledError):
            client.get("http://api.test/")
        fresh = rc.AdaptiveThrottle()
        with (
            rc.Client(transport=transport, throttle=fresh) as other,
            testing.testing_mode(throttle=True),
            pytest.raises(rc.ThrottledError),
        ):
            other.get("http://api.test/")
    with (
        pytest.raises(TypeError, match="throttle"),
        testing.testing_mode(throttle="on"),  # type: ignore[arg-type]
    ):
        pass


def test_transports_take_a_throttle() -> None:
    shed = rc.AdaptiveThrottle(random=always_refuse, min_per_second=0.0)
    transport = rc.RetryTransport(httpx.MockTransport(down), throttle=shed, retry=False)
    with httpx.Client(transport=transport) as client:
        assert client.get("http://api.test/").status_code == 503
        with pytest.raises(rc.ThrottledError):
            client.get("http://api.test/")  # p = 1/2, and the draw is 0
    assert transport.stats.throttled == 1


def test_a_404_or_422_is_an_accept() -> None:
    shed = rc.AdaptiveThrottle()
    statuses = iter([404, 422, 500, 503, 429, 502, 504])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses))

    with rc.Client(
        transport=httpx.MockTransport(handler), throttle=shed, retry=False
    ) as c:
        for _ in range(7):
            c.get("http://api.test/")
    stats = shed.stats["api.test"]
    assert (stats.requests, stats.accepts) == (7, 3)  # 404, 422, 500 accepted


async def test_timeouts_and_connection_errors_are_not_accepts(kind: str) -> None:
    shed = rc.AdaptiveThrottle()
    errors = iter(
        [
            httpx.ConnectError("down"),
            httpx.ReadTimeout("slow"),
            httpx.RemoteProtocolError("cut"),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        raise next(errors)

    caller = Caller(
        kind, transport=httpx.MockTransport(handler), throttle=shed, retry=False
    )
    try:
        for _ in range(3):
            with pytest.raises(httpx.TransportError):
                await caller.request("GET", "http://api.test/")
    finally:
        await caller.close()
    assert shed.stats["api.test"].accepts == 0
    assert shed.stats["api.test"].requests == 3


# -- found in review --------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "answer", "probe", "tick", "stats"]),
            st.floats(min_value=0.0, max_value=2.5),
        ),
        max_size=300,
    )
)
def test_late_answers_never_break_the_counts(steps: list[tuple[str, float]]) -> None:
    # Answers arrive in later slices than their requests, probes reset,
    # slices expire: the counts stay sane and admit() never raises.
    clock = Clock()
    shed = throttle(clock, window=2.0, min_per_second=5.0)
    out: list[bool] = []  # admitted, not yet answered (True: a probe)
    for action, value in steps:
        if action == "admit":
            verdict = shed.admit("h")
            if verdict != REFUSE:
                out.append(verdict == PROBE)
        elif action == "answer" and out:
            shed.record("h", value > 1.0, out.pop(0))
        elif action == "probe" and out:
            shed.record("h", True, True)
            out.pop(0)
        elif action == "tick":
            clock.now += value
        else:
            for stats in shed.stats.values():
                assert stats.accepts >= 0
                assert 0.0 <= stats.probability < 1.0
        assert 0.0 <= shed.probability("h") < 1.0


def test_a_partial_overload_gets_plain_sre_throttling() -> None:
    # 200 requests a second offered, the server takes 10 a second: with k=2
    # SRE sends it about 2 x 10, whatever the probes find.
    clock = Clock()
    shed = throttle(clock, random=__import__("random").Random(3).random)
    sent_last_10s = 0
    for tick in range(3000):  # 15 s in steps of 5 ms
        verdict = shed.admit("h")
        if verdict != REFUSE:
            served = tick % 20 == 0  # the server's capacity: 10 a second
            shed.record("h", served, verdict == PROBE)
            if tick >= 1000:
                sent_last_10s += 1
        clock.now += 0.005
    assert sent_last_10s / 10 <= 3 * 10 + 2  # ~2k x capacity, plus probes


def test_a_quiet_host_is_not_refused_after_one_failure() -> None:
    # One call every 5 s, a 503 now and then: the probes' allowance lets a
    # call and its retry through, and an accepted probe forgets the failure.
    clock = Clock()
    shed = throttle(clock, random=always_refuse)
    refused = 0
    for call in range(50):
        for attempt in range(3):
            verdict = shed.admit("h")
            if verdict == REFUSE:
                refused += 1
                break
            ok_now = not (call % 5 == 0 and attempt == 0)  # 20% first attempts fail
            shed.record("h", ok_now, verdict == PROBE)
            if ok_now:
                break
            clock.now += 0.3
        clock.now += 5.0
    assert refused == 0


def test_stats_readers_do_not_keep_idle_hosts() -> None:
    clock = Clock()
    shed = throttle(clock, window=10.0)
    for second in range(120):
        for index in range(20):
            shed.admit(f"h{second}-{index}.test")
        if second % 5 == 0:
            shed.stats  # noqa: B018 - a reader, as a metrics exporter would
        clock.now += 1.0
    assert len(shed._hosts) <= 12 * 20


def test_logging_happens_outside_the_lock() -> None:
    clock = Clock()
    shed = throttle(clock, random=always_refuse, min_per_second=0.0)
    seen: list[float] = []

    class Shipper(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # A handler that ships records through a throttled client.
            seen.append(shed.probability("logs.test"))

    handler = Shipper()
    logger = logging.getLogger("reliable_client")
    logger.addHandler(handler)
    try:
        done = threading.Event()

        def work() -> None:
            shed.admit("api.test")
            shed.record("api.test", False)
            for _ in range(20):
                shed.admit("api.test")
            clock.now += 11.0
            shed.admit("api.test")  # stops throttling: logged
            done.set()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        assert done.wait(5), "the throttle deadlocked on its own log record"
    finally:
        logger.removeHandler(handler)
    assert len(seen) >= 2


def test_a_client_throttle_still_decides_inside_a_plain_retry() -> None:
    shed = rc.AdaptiveThrottle(random=always_refuse, min_per_second=0.0)
    transport = httpx.MockTransport(down)
    client = rc.Client(transport=transport, throttle=shed)
    sent = 0

    @rc.retry(rc.RetryPolicy(max_attempts=1))
    def call() -> None:
        nonlocal sent
        response = client.get("http://api.test/")
        sent += 1
        response.raise_for_status()

    refused = 0
    for _ in range(20):
        try:
            call()
        except rc.ThrottledError:
            refused += 1
        except httpx.HTTPStatusError:
            pass
    client.close()
    assert refused >= 15 and sent <= 5


async def test_a_body_that_fails_is_not_an_accept(kind: str) -> None:
    class Stalls(httpx.SyncByteStream, httpx.AsyncByteStream):
        def __init__(self, request: httpx.Request) -> None:
            self.request = request

        def __iter__(self) -> Any:
            yield b"x"
            raise httpx.ReadTimeout("stalled", request=self.request)

        async def __aiter__(self) -> Any:
            yield b"x"
            raise httpx.ReadTimeout("stalled", request=self.request)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Stalls(request))

    shed = rc.AdaptiveThrottle()
    caller = Caller(
        kind, transport=httpx.MockTransport(handler), throttle=shed, retry=False
    )
    try:
        for _ in range(3):
            with pytest.raises(httpx.ReadTimeout):
                await caller.request("GET", "http://api.test/")
    finally:
        await caller.close()
    assert shed.stats["api.test"].accepts == 0


@pytest.mark.parametrize("where", ["first attempt", "retry", "decorator", "transport"])
async def test_a_cancelled_attempt_is_not_an_accept(where: str) -> None:
    # The caller gives up by cancelling (its own timeout): as a timeout, the
    # attempt closes the gate for a window, whichever layer sent it.
    import asyncio

    clock = Clock()
    draws: list[float] = []
    shed = throttle(
        clock,
        window=1.0,
        min_per_second=0.0,
        random=lambda: draws.pop(0) if draws else 0.999,
    )
    hang = asyncio.Event()
    answers = [503] if where == "retry" else []

    async def handler(request: httpx.Request) -> httpx.Response:
        if answers:
            return httpx.Response(answers.pop())  # at 1000.0: gate to 1001.0
        clock.now += 0.9
        await hang.wait()  # never set: cancelled at 1000.9, gate to 1001.9
        return httpx.Response(200)

    policy = rc.RetryPolicy(max_attempts=2, backoff_initial=0.001, backoff_max=0.001)
    transport = httpx.MockTransport(handler)
    retrying = rc.AsyncRetryTransport(transport, retry=policy, throttle=shed)
    async with (
        rc.AsyncClient(transport=transport, retry=policy, throttle=shed) as client,
        httpx.AsyncClient(transport=transport) as plain,
        httpx.AsyncClient(transport=retrying) as through_transport,
    ):

        @rc.retry(throttle=shed)
        async def fetch() -> httpx.Response:
            return await plain.get("http://api.test/x")

        with pytest.raises(asyncio.TimeoutError):
            if where == "decorator":
                await asyncio.wait_for(fetch(), 0.05)
            elif where == "transport":
                await asyncio.wait_for(through_transport.get("http://api.test/x"), 0.05)
            else:
                await asyncio.wait_for(client.get("http://api.test/x"), 0.05)
    clock.now = 1001.2  # the gate is still closed: the counts decide
    key = "" if where == "decorator" else "api.test"
    assert shed.admit(key) == ADMIT  # nothing in the window yet
    draws.append(0.0)
    assert shed.admit(key) == REFUSE  # one out, none accepted: p = 1/2


def test_testing_mode_leaves_no_history_behind() -> None:
    clock = Clock()
    shed = throttle(clock, random=always_refuse, min_per_second=0.0)
    with testing.testing_mode(throttle=False):
        assert fail(shed) == ADMIT
        assert fail(shed) == ADMIT
    assert shed.stats == {}
    assert shed.admit("api.test") == ADMIT


def test_a_low_probe_rate_still_probes() -> None:
    # min_per_second below 1/4: the allowance is one probe, not a fraction.
    clock = Clock()
    shed = throttle(clock, window=20.0, random=always_refuse, min_per_second=0.1)
    fail(shed)
    assert shed.admit("api.test") == PROBE
    assert shed.admit("api.test") == REFUSE
    clock.now += 10.0  # one more token
    assert ok(shed) == PROBE
