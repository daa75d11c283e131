"""RetryBudget: validation, the sliding window, the invariant, threads, hosts,
and the proof against a real 127.0.0.1 server that failures do not multiply
traffic.

The unit tests drive the budget with an injected fake clock.  The budget cuts
time into ``ttl / 10`` slices; its documented guarantee (module docstring of
``reliable_client._budget``) is: at the moment of every retry it allows,

    retries in the last ttl seconds
        <= ratio * first attempts in the last ttl seconds + min_per_second * ttl

and, in the other direction, deposits count for at least ``ttl - ttl/10``
seconds and withdrawals for at most ``ttl + ttl/10`` seconds.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reliable_client as rc
from reliable_client import testing

from .loopback import LoopbackServer, Reply

TIMEOUT = httpx.Timeout(2.0)
SLACK = 1e-9


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spend_all(
    budget: rc.RetryBudget, host: str | None = None, limit: int = 10_000
) -> int:
    """Spend until the budget refuses; return how many retries it allowed."""
    allowed = 0
    while budget.try_spend(host):
        allowed += 1
        assert allowed < limit, "the budget never refused"
    return allowed


# -- validation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"ratio": -1}, ValueError, "ratio"),
        ({"ratio": -0.01}, ValueError, "ratio"),
        ({"min_per_second": -1}, ValueError, "min_per_second"),
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": -5}, ValueError, "ttl"),
        ({"ratio": math.nan}, ValueError, "ratio"),
        ({"min_per_second": math.nan}, ValueError, "min_per_second"),
        ({"ttl": math.nan}, ValueError, "ttl"),
        ({"ttl": math.inf}, ValueError, "ttl"),
        ({"min_per_second": math.inf}, ValueError, "min_per_second"),
        ({"ratio": "x"}, TypeError, "ratio"),
        ({"ratio": None}, TypeError, "ratio"),
        ({"ratio": True}, TypeError, "ratio"),
        ({"min_per_second": "1"}, TypeError, "min_per_second"),
        ({"ttl": [10]}, TypeError, "ttl"),
        ({"per_host": "yes"}, TypeError, "per_host"),
        ({"per_host": 1}, TypeError, "per_host"),
        ({"clock": 5}, TypeError, "clock"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    kwargs: dict[str, object], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=rf"\b{name}\b"):
        rc.RetryBudget(**kwargs)  # type: ignore[arg-type]


def test_defaults_and_edge_values_are_accepted() -> None:
    budget = rc.RetryBudget()
    assert (budget.ratio, budget.min_per_second, budget.ttl) == (0.2, 10.0, 10.0)
    assert budget.per_host is False
    assert budget.balance == 100.0
    # ratio=0 and min_per_second=0 are allowed (no retries at all).
    nothing = rc.RetryBudget(ratio=0, min_per_second=0, clock=FakeClock())
    nothing.deposit()
    assert nothing.try_spend() is False
    assert "ratio=0.0" in repr(nothing)


# -- the window, with a fake clock -----------------------------------------


def test_starts_with_its_reserve() -> None:
    clock = FakeClock()
    budget = rc.RetryBudget(ratio=0.5, min_per_second=0.3, ttl=10, clock=clock)
    assert budget.balance == pytest.approx(3.0)
    assert budget.stats.balance == pytest.approx(3.0)
    assert spend_all(budget) == 3
    stats = budget.stats
    assert (stats.first_attempts, stats.retries, stats.refused_by_budget) == (0, 3, 1)
    assert stats.balance == pytest.approx(0.0)


def test_deposits_earn_ratio_of_a_retry() -> None:
    clock = FakeClock()
    budget = rc.RetryBudget(ratio=0.5, min_per_second=0, ttl=10, clock=clock)
    assert budget.try_spend() is False  # no reserve, no deposits
    budget.deposit()
    assert budget.balance == pytest.approx(0.5)
    assert budget.try_spend() is False  # half a retry is not a retry
    budget.deposit()
    assert budget.balance == pytest.approx(1.0)
    assert budget.try_spend() is True
    assert budget.try_spend() is False
    for _ in range(10):
        budget.deposit()
    assert spend_all(budget) == 5
    stats = budget.stats
    assert stats.first_attempts == 12
    assert stats.retries == 6
    assert stats.refused_by_budget == 4
    assert stats.attempts == 18
    assert stats.gave_up == 0
    assert stats.balance == pytest.approx(0.0)
    budget.record_gave_up()
    assert budget.stats.gave_up == 1


def test_deposits_expire_after_ttl() -> None:
    clock = FakeClock()
    budget = rc.RetryBudget(ratio=1.0, min_per_second=0.2, ttl=10, clock=clock)
    for _ in range(5):
        budget.deposit()
    assert budget.balance == pytest.approx(7.0)
    # Still counted well inside the window (at least ttl - ttl/10 is promised).
    clock.advance(8.5)
    assert budget.balance == pytest.approx(7.0)
    # Past ttl the earned retries are gone and the reserve is what is left.
    clock.advance(2.0)
    assert budget.balance == pytest.approx(2.0)
    assert spend_all(budget) == 2
    # Spent retries are forgotten too (at most ttl + ttl/10 later).
    clock.advance(11.0 + 0.01)
    assert budget.balance == pytest.approx(2.0)
    assert spend_all(budget) == 2


def test_withdrawals_are_counted_for_the_whole_window() -> None:
    clock = FakeClock(1000.0)
    budget = rc.RetryBudget(ratio=0, min_per_second=0.2, ttl=10, clock=clock)
    assert spend_all(budget) == 2
    for _ in range(19):  # 9.5 s later: the retries spent are still counted
        clock.advance(0.5)
        assert budget.try_spend() is False
    stats = budget.stats
    assert stats.retries == 2
    assert stats.refused_by_budget == 20


def test_a_long_pause_resets_the_window() -> None:
    clock = FakeClock(0.0)
    budget = rc.RetryBudget(ratio=1.0, min_per_second=0.1, ttl=1.0, clock=clock)
    for _ in range(50):
        budget.deposit()
    assert spend_all(budget) == 50
    clock.advance(3600.0)
    assert budget.balance == pytest.approx(0.1)
    assert budget.try_spend() is False
    budget.deposit()
    assert budget.try_spend() is True


# -- the invariant, as a property ------------------------------------------


@dataclass
class Trace:
    """What happened, by (clock) time: deposits, allowed and refused retries."""

    deposits: list[float] = field(default_factory=list)
    allowed: list[float] = field(default_factory=list)
    refused: int = 0


def in_window(times: list[float], start: float, end: float) -> int:
    """How many of ``times`` lie in the half-open interval (start, end]."""
    return sum(1 for t in times if start < t <= end)


def run_and_check(
    ratio: float,
    min_per_second: float,
    ttl: float,
    start: float,
    ops: list[tuple[float, bool]],
    *,
    edge: float,
) -> Trace:
    """Replay ``ops`` (time step, is-a-deposit) on a budget with a fake clock,
    checking the invariant at every allowed retry and the documented floor at
    every refused one.  ``edge`` widens the windows by that much in the
    budget's favour (0 where time is exact; a hair for float rounding)."""
    clock = FakeClock(start)
    budget = rc.RetryBudget(ratio, min_per_second, ttl, clock=clock)
    reserve = min_per_second * ttl
    trace = Trace()
    for step, is_deposit in ops:
        clock.advance(step)
        t = clock()
        if is_deposit:
            budget.deposit()
            trace.deposits.append(t)
            continue
        if budget.try_spend():
            trace.allowed.append(t)
            # Safety: retries in (t - ttl, t] <= ratio * deposits there + reserve.
            retries = in_window(trace.allowed, t - ttl + edge, t)
            earned = in_window(trace.deposits, t - ttl - edge, t)
            assert retries <= ratio * earned + reserve + SLACK, (t, retries, earned)
        else:
            trace.refused += 1
            # Liveness, as documented: deposits count at least ttl - ttl/10,
            # withdrawals at most ttl + ttl/10, so a refusal means even that
            # pessimistic balance is short of one retry.
            earned = in_window(trace.deposits, t - 0.9 * ttl + edge, t)
            spent = in_window(trace.allowed, t - 1.1 * ttl - edge, t)
            assert reserve + ratio * earned - spent < 1.0 + SLACK, (t, earned, spent)
    stats = budget.stats
    assert stats.first_attempts == len(trace.deposits)
    assert stats.retries == len(trace.allowed)
    assert stats.refused_by_budget == trace.refused
    assert stats.attempts == len(trace.deposits) + len(trace.allowed)
    return trace


RATIOS = st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0, 2.5])
FLOORS = st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])


def bursts(
    step: st.SearchStrategy[float], max_size: int
) -> st.SearchStrategy[list[tuple[float, bool]]]:
    """(time step, is-a-deposit) operations, in bursts of one kind at one
    instant: bursts are what drain a budget and refill it."""
    burst = st.tuples(step, st.booleans(), st.integers(1, 40))
    return st.lists(burst, max_size=max_size).map(
        lambda items: [(s if i == 0 else 0.0, d) for s, d, n in items for i in range(n)]
    )


# Steps that probe the window's edges: a slice, most of a window, a window.
FRACTIONS = [0.05, 0.1, 0.15, 0.45, 0.5, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15]


@st.composite
def exact_patterns(draw: st.DrawFn) -> tuple[float, float, list[tuple[float, bool]]]:
    """ttl with a slice exact in binary; times on a 1/64 s grid (no rounding)."""
    ttl = draw(st.sampled_from([0.625, 1.25, 2.5, 5.0, 10.0, 20.0]))
    start = draw(st.integers(0, 10**6)) / 64
    grid = int(ttl * 64)
    ticks = st.one_of(
        st.just(0),
        st.integers(0, 8),
        st.integers(0, grid),
        st.sampled_from([round(f * grid) for f in FRACTIONS]),
    )
    ops = draw(bursts(ticks.map(lambda k: k / 64), max_size=40))
    return ttl, start, ops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ratio=RATIOS, min_per_second=FLOORS, pattern=exact_patterns())
def test_invariant_holds_over_random_arrivals_exact_time(
    ratio: float,
    min_per_second: float,
    pattern: tuple[float, float, list[tuple[float, bool]]],
) -> None:
    ttl, start, ops = pattern
    run_and_check(ratio, min_per_second, ttl, start, ops, edge=0.0)


@st.composite
def float_patterns(draw: st.DrawFn) -> tuple[float, float, list[tuple[float, bool]]]:
    """Any ttl, any float times."""
    ttl = draw(st.floats(0.01, 100.0))
    start = draw(st.floats(0.0, 1e6))
    step = st.one_of(
        st.just(0.0),
        st.floats(0.0, ttl / 50),
        st.floats(0.0, ttl * 1.2),
        st.sampled_from(FRACTIONS).map(lambda f: f * ttl),
    )
    ops = draw(bursts(step, max_size=40))
    return ttl, start, ops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ratio=RATIOS, min_per_second=FLOORS, pattern=float_patterns())
def test_invariant_holds_over_random_arrivals_float_time(
    ratio: float,
    min_per_second: float,
    pattern: tuple[float, float, list[tuple[float, bool]]],
) -> None:
    ttl, start, ops = pattern
    # A microsecond-relative hair at the window edges for float rounding of
    # time / slice; everything else is exact.
    run_and_check(
        ratio, min_per_second, ttl, start, ops, edge=1e-9 * max(1.0, start + ttl)
    )


def test_steady_traffic_gets_ratio_of_retries() -> None:
    """In a steady state the budget gives ratio retries per first attempt
    (not far less: it must not starve the retries that are needed)."""
    clock = FakeClock(0.0)
    budget = rc.RetryBudget(ratio=0.2, min_per_second=0, ttl=10, clock=clock)
    allowed = 0
    for _ in range(10_000):  # 100 requests a second for 100 s, all failing
        clock.advance(0.01)
        budget.deposit()
        allowed += budget.try_spend()
    # Up to 0.2 per request; the first slice of warm-up and the one-slice
    # lag of the window may cost a little.
    assert 0.2 * 10_000 * 0.85 <= allowed <= 0.2 * 10_000


# -- thread safety ---------------------------------------------------------


def test_threads_hammering_one_budget_stay_inside_it() -> None:
    clock = FakeClock(50.0)  # frozen: one window, so the bound is exact
    budget = rc.RetryBudget(ratio=0.3, min_per_second=2.0, ttl=10, clock=clock)
    reserve = 20.0
    threads = 8
    ops_per_thread = 4000
    barrier = threading.Barrier(threads)
    results: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        deposits = spends = allowed = 0
        barrier.wait(timeout=10)
        for _ in range(ops_per_thread):
            if rng.random() < 0.5:
                budget.deposit()
                deposits += 1
            else:
                spends += 1
                allowed += budget.try_spend()
        with lock:
            results.append((deposits, spends, allowed))

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert len(results) == threads

    deposits = sum(r[0] for r in results)
    spends = sum(r[1] for r in results)
    allowed = sum(r[2] for r in results)
    assert allowed <= 0.3 * deposits + reserve + SLACK
    stats = budget.stats
    assert stats.first_attempts == deposits
    assert stats.retries == allowed
    assert stats.refused_by_budget == spends - allowed
    assert stats.attempts == deposits + allowed
    # Nothing lost or double-counted: the balance is exactly what is left.
    assert stats.balance == pytest.approx(reserve + 0.3 * deposits - allowed)
    assert stats.balance >= 0.0


# -- per host --------------------------------------------------------------


def test_per_host_a_failing_host_cannot_spend_another_hosts_budget() -> None:
    clock = FakeClock()
    budget = rc.RetryBudget(
        ratio=1.0, min_per_second=0.3, ttl=10, per_host=True, clock=clock
    )
    for _ in range(4):
        budget.deposit("bad.example")
    assert spend_all(budget, "bad.example") == 7  # its reserve and its deposits
    assert budget.try_spend("bad.example") is False
    # The healthy host still has all of its own reserve, and nothing of the
    # failing host's deposits.
    assert spend_all(budget, "good.example") == 3
    assert budget.stats.retries == 10


def test_without_per_host_one_host_spends_the_shared_budget() -> None:
    clock = FakeClock()
    budget = rc.RetryBudget(ratio=1.0, min_per_second=0.3, ttl=10, clock=clock)
    for _ in range(4):
        budget.deposit("bad.example")
    assert spend_all(budget, "bad.example") == 7
    assert budget.try_spend("good.example") is False


def test_per_host_through_a_client(no_sleep: testing.TestingMode) -> None:
    """The clients spend per request host."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "bad.test":
            return httpx.Response(503)
        # good.test fails once per path, then answers.
        seen = handler_calls.setdefault(request.url.path, 0)
        handler_calls[request.url.path] = seen + 1
        return httpx.Response(503 if seen == 0 else 200)

    for per_host, expected in ((True, (200, None)), (False, (503, "budget"))):
        handler_calls: dict[str, int] = {}
        budget = rc.RetryBudget(ratio=0, min_per_second=0.2, ttl=10, per_host=per_host)
        with rc.Client(
            transport=httpx.MockTransport(handler),
            retry=rc.RetryPolicy(max_attempts=3),
            budget=budget,
        ) as c:
            for _ in range(5):
                assert c.get("http://bad.test/x").status_code == 503
            r = c.get("http://good.test/y")
            assert (r.status_code, rc.outcome(r).stopped_by) == expected


# -- the proof against a real server ---------------------------------------


def test_outage_traffic_stays_inside_the_budget(
    server: LoopbackServer,
    no_sleep: testing.TestingMode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.script("/down", Reply(503))
    budget = rc.RetryBudget(ratio=0.1, min_per_second=1)
    caplog.set_level(logging.INFO, logger="reliable_client")
    with rc.Client(
        base_url=server.url,
        timeout=TIMEOUT,
        retry=rc.RetryPolicy(max_attempts=3),
        budget=budget,
    ) as c:
        responses = [c.get("/down") for _ in range(1000)]
        stats = c.stats

    seen = len(server.requests("/down"))
    # At most (1 + ratio) x the calls plus the reserve (min_per_second x ttl).
    assert 1000 <= seen <= 1000 * 1.1 + 10 + 2
    # ...and the budget is used, not refused outright: about all of it.
    assert seen >= 1000 * 1.1 + 10 - 3
    assert all(r.status_code == 503 for r in responses)

    assert stats.calls == 1000
    assert stats.attempts == seen
    assert stats.refused_by_budget > 0
    refused = [r for r in responses if rc.outcome(r).stopped_by == "budget"]
    assert len(refused) == stats.refused_by_budget
    assert all(rc.outcome(r).attempts < 3 for r in refused)

    bstats = budget.stats
    assert bstats.first_attempts == 1000
    assert bstats.attempts == seen
    assert bstats.retries == seen - 1000
    assert bstats.refused_by_budget == stats.refused_by_budget
    # Nothing sleeps before a refusal: one recorded sleep per retry sent.
    assert len(no_sleep.sleeps) == seen - 1000

    stops = [r for r in caplog.records if "budget" in r.getMessage()]
    assert len(stops) == stats.refused_by_budget
    assert all(r.levelno >= logging.WARNING for r in stops)
    assert "/down" in stops[0].getMessage()


def test_without_a_limit_the_outage_triples_traffic(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/down", Reply(503))
    with rc.Client(
        base_url=server.url,
        timeout=TIMEOUT,
        retry=rc.RetryPolicy(max_attempts=3),
        budget=rc.RetryBudget(min_per_second=1e6),
    ) as c:
        for _ in range(1000):
            assert rc.outcome(c.get("/down")).attempts == 3
        assert c.stats.refused_by_budget == 0
    assert len(server.requests("/down")) == 3000


def test_two_clients_sharing_a_budget_stay_inside_it(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    server.script("/down", Reply(503))
    budget = rc.RetryBudget(ratio=0.1, min_per_second=1)
    policy = rc.RetryPolicy(max_attempts=3)
    clients = [
        rc.Client(base_url=server.url, timeout=TIMEOUT, retry=policy, budget=budget)
        for _ in range(2)
    ]
    errors: list[BaseException] = []

    def run(c: rc.Client) -> None:
        try:
            with c:
                for _ in range(500):
                    c.get("/down")
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(c,)) for c in clients]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors
    seen = len(server.requests("/down"))
    assert 1000 <= seen <= 1000 * 1.1 + 10 + 2
    assert budget.stats.first_attempts == 1000
    assert budget.stats.attempts == seen
    assert sum(c.stats.attempts for c in clients) == seen
    assert sum(c.stats.retries for c in clients) == budget.stats.retries
    assert all(c.stats.retries > 0 for c in clients)
    assert sum(c.stats.refused_by_budget for c in clients) == (
        budget.stats.refused_by_budget
    )


def test_default_budget_lets_needed_retries_through(
    server: LoopbackServer, no_sleep: testing.TestingMode
) -> None:
    rng = random.Random(7)
    actions = [Reply(503) if rng.random() < 0.2 else Reply(200) for _ in range(5000)]
    server.script("/flaky", *actions)
    started = time.monotonic()
    with rc.Client(
        base_url=server.url,
        timeout=TIMEOUT,
        retry=rc.RetryPolicy(max_attempts=4),
        budget=rc.RetryBudget(),
    ) as c:
        ok = sum(c.get("/flaky").status_code == 200 for _ in range(1000))
        stats = c.stats
    assert ok >= 990
    assert stats.retries > 150  # 20% failures really were retried
    assert stats.refused_by_budget == 0
    assert time.monotonic() - started < 20


# -- one clock reading per call -------------------------------------------------


@pytest.mark.parametrize("per_host", [False, True])
def test_deposit_files_under_the_callers_clock_reading(per_host: bool) -> None:
    clock = FakeClock(1000.0)
    budget = rc.RetryBudget(
        ratio=1.0, min_per_second=0, ttl=10, per_host=per_host, clock=clock
    )
    # Read "now" as 1015: the deposit belongs to that slice, not to 1000's.
    budget.deposit("h", now=1015.0)
    clock.advance(15.0)
    assert budget.balance == pytest.approx(1.0)
    clock.advance(10.0 + 1.0 + 0.01)  # past ttl + one slice: expired
    assert budget.balance == pytest.approx(0.0)


class CountingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def test_a_call_reads_a_shared_clock_once() -> None:
    clock = CountingClock()
    transport = rc.RetryTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        budget=rc.RetryBudget(clock=clock),
        clock=clock,
    )
    clock.reads = 0  # the budget read it once when it was made
    with httpx.Client(transport=transport) as client:
        for _ in range(5):
            assert client.get("http://example.test/").status_code == 200
    assert clock.reads == 5
    assert transport.budget.stats.first_attempts == 5


def test_a_budget_with_its_own_clock_reads_it() -> None:
    budget_clock, transport_clock = CountingClock(), CountingClock()
    transport = rc.RetryTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        budget=rc.RetryBudget(clock=budget_clock),
        clock=transport_clock,
    )
    budget_clock.reads = 0  # read once when the budget was made
    with httpx.Client(transport=transport) as client:
        for _ in range(3):
            client.get("http://example.test/")
    assert transport_clock.reads == 3
    assert budget_clock.reads == 3
