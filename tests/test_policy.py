"""RetryPolicy: defaults, validation, copies, backoff maths and tenacity views."""

from __future__ import annotations

import dataclasses
import math
import random
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import tenacity
from hypothesis import given
from hypothesis import strategies as st
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from reliable_client import RetryPolicy

# -- helpers ---------------------------------------------------------------------------


def make_state(
    attempt_number: int = 1,
    *,
    upcoming_sleep: float = 0.0,
    start_time: float = 0.0,
    elapsed: float | None = None,
) -> tenacity.RetryCallState:
    """A tenacity state after ``attempt_number`` attempts (``elapsed`` seconds in)."""
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt_number
    state.upcoming_sleep = upcoming_sleep
    state.start_time = start_time
    if elapsed is not None:
        state.outcome_timestamp = start_time + elapsed
    return state


def base_wait(initial: float, multiplier: float, cap: float, n: int) -> float:
    """The contract's un-jittered wait for retry ``n``."""
    return min(cap, initial * multiplier ** (n - 1))


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


def names_field(field: str) -> str:
    """A ``match=`` pattern: the message names ``field`` as a whole word."""
    return rf"\b{re.escape(field)}\b"


# -- defaults, immutability, copies ----------------------------------------------------


def test_defaults_match_the_contract() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 3
    assert policy.methods == frozenset(
        {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}
    )
    assert policy.statuses == frozenset({408, 425, 429, 500, 502, 503, 504})
    assert policy.backoff_initial == 0.5
    assert policy.backoff_multiplier == 2.0
    assert policy.backoff_max == 10.0
    assert policy.jitter == "full"
    assert policy.respect_retry_after is True
    assert policy.max_retry_after == 60.0
    assert policy.deadline is None
    assert policy.wait is None
    assert policy.stop is None
    assert isinstance(policy.methods, frozenset)
    assert isinstance(policy.statuses, frozenset)


def test_policies_with_equal_values_are_equal_and_hash_alike() -> None:
    assert RetryPolicy() == RetryPolicy()
    assert hash(RetryPolicy()) == hash(RetryPolicy())
    assert RetryPolicy(max_attempts=4) != RetryPolicy()


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_attempts", 5), ("methods", frozenset({"GET"})), ("jitter", "none")],
)
def test_policy_is_frozen(field: str, value: object) -> None:
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(policy, field, value)
    assert policy == RetryPolicy()


@pytest.mark.parametrize("copy", ["replace", "evolve"])
def test_replace_returns_a_changed_copy(copy: str) -> None:
    original = RetryPolicy()
    changed = getattr(original, copy)(max_attempts=7, methods=["GET", "PROPFIND"])
    assert changed is not original
    assert changed.max_attempts == 7
    assert changed.methods == frozenset({"GET", "PROPFIND"})
    assert isinstance(changed.methods, frozenset)
    assert original == RetryPolicy()  # untouched
    assert changed.backoff_max == original.backoff_max


@pytest.mark.parametrize("copy", ["replace", "evolve"])
def test_replace_validates_the_copy(copy: str) -> None:
    with pytest.raises(ValueError, match=names_field("max_attempts")):
        getattr(RetryPolicy(), copy)(max_attempts=0)
    with pytest.raises(ValueError, match=names_field("jitter")):
        getattr(RetryPolicy(), copy)(jitter="wobbly")


@pytest.mark.parametrize("copy", ["replace", "evolve"])
@pytest.mark.parametrize("name", ["max_attemps", "bogus", "_methods", "_wait"])
def test_replace_rejects_unknown_fields(copy: str, name: str) -> None:
    with pytest.raises(TypeError, match=re.escape(name)):
        getattr(RetryPolicy(), copy)(**{name: 1})


def test_replace_rebuilds_the_derived_strategies() -> None:
    state = make_state(3)
    policy = RetryPolicy(random=fixed(0.5))
    assert policy.wait_strategy(state) == 0.5 * 2.0  # full jitter, base 2.0
    assert policy.replace(jitter="none").wait_strategy(state) == 2.0
    assert policy.replace(max_attempts=3).stop_strategy(make_state(3)) is True
    assert policy.replace(max_attempts=4).stop_strategy(make_state(3)) is False


# -- validation ------------------------------------------------------------------------

BAD_VALUES: list[tuple[str, object]] = [
    ("max_attempts", 0),
    ("max_attempts", -1),
    ("max_attempts", 1.5),
    ("max_attempts", True),
    ("max_attempts", "3"),
    ("max_attempts", None),
    ("backoff_initial", -0.1),
    ("backoff_initial", math.nan),
    ("backoff_initial", math.inf),
    ("backoff_initial", "1"),
    ("backoff_max", -1.0),
    ("backoff_max", math.nan),
    ("backoff_max", math.inf),
    ("backoff_max", 0.1),  # below the default backoff_initial 0.5
    ("backoff_multiplier", 0.5),
    ("backoff_multiplier", 0.0),
    ("backoff_multiplier", -2.0),
    ("backoff_multiplier", math.nan),
    ("backoff_multiplier", math.inf),
    ("max_retry_after", -1.0),
    ("max_retry_after", math.nan),
    ("max_retry_after", math.inf),
    ("max_retry_after", False),
    ("deadline", 0),
    ("deadline", 0.0),
    ("deadline", -5.0),
    ("deadline", math.nan),
    ("deadline", math.inf),
    ("deadline", "10"),
    ("jitter", "random"),
    ("jitter", "FULL"),
    ("jitter", None),
    ("respect_retry_after", "yes"),
    ("respect_retry_after", 1),
    ("statuses", {99}),
    ("statuses", {600}),
    ("statuses", {503, 0}),
    ("statuses", {"503"}),
    ("statuses", {True}),
    ("statuses", {503.0}),
    ("statuses", 503),
    ("statuses", "503"),
    ("methods", {"get"}),
    ("methods", {"Get"}),
    ("methods", {"GE T"}),
    ("methods", {""}),
    ("methods", {"GET\n"}),
    ("methods", {5}),
    ("methods", {"GET", None}),
    ("methods", "GET"),
    ("methods", b"GET"),
    ("methods", 5),
    ("wait", 1.0),
    ("wait", lambda state: 1.0),
    ("stop", 3),
    ("stop", lambda state: True),
    ("random", 0.5),
    ("random", None),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_bad_value_is_rejected_naming_the_field(field: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError), match=names_field(field)):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_backoff_max_below_backoff_initial_is_rejected() -> None:
    with pytest.raises(ValueError, match=names_field("backoff_max")):
        RetryPolicy(backoff_initial=5.0, backoff_max=4.99)
    assert RetryPolicy(backoff_initial=5.0, backoff_max=5.0).backoff_max == 5.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 1},
        {"max_attempts": 100},
        {"backoff_initial": 0, "backoff_max": 0},
        {"backoff_multiplier": 1},
        {"max_retry_after": 0},
        {"deadline": 0.001},
        {"deadline": 30},
        {"jitter": "equal"},
        {"jitter": "decorrelated"},
        {"jitter": "none"},
        {"respect_retry_after": False},
        {"statuses": {100, 599}},
        {"statuses": set()},
        {"methods": {"PROPFIND", "M-SEARCH", "GET"}},
        {"methods": []},
        {"wait": tenacity.wait_fixed(1)},
        {"stop": tenacity.stop_after_delay(5)},
        {"random": random.Random(1).random},
    ],
)
def test_good_values_are_accepted(kwargs: dict[str, Any]) -> None:
    policy = RetryPolicy(**kwargs)
    for name, value in kwargs.items():
        if name in ("methods", "statuses"):
            assert getattr(policy, name) == frozenset(value)
        else:
            assert getattr(policy, name) == value


def test_extension_method_is_accepted() -> None:
    assert "PROPFIND" in RetryPolicy(methods={"PROPFIND"}).methods


def test_numbers_are_stored_as_floats() -> None:
    policy = RetryPolicy(backoff_initial=1, backoff_max=8, deadline=30)
    assert type(policy.backoff_initial) is float
    assert type(policy.backoff_max) is float
    assert type(policy.deadline) is float


@pytest.mark.parametrize(
    "make",
    [list, tuple, set, frozenset, lambda items: (item for item in items)],
    ids=["list", "tuple", "set", "frozenset", "generator"],
)
def test_collections_are_normalised_to_frozenset(
    make: Callable[[list[Any]], Any],
) -> None:
    policy = RetryPolicy(methods=make(["GET", "POST", "GET"]), statuses=make([503]))
    assert policy.methods == frozenset({"GET", "POST"})
    assert isinstance(policy.methods, frozenset)
    assert policy.statuses == frozenset({503})
    assert isinstance(policy.statuses, frozenset)


# -- backoff maths ---------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 9))
def test_no_jitter_is_the_capped_exponential(n: int) -> None:
    policy = RetryPolicy(jitter="none", random=fixed(0.123))
    expected = min(10.0, 0.5 * 2.0 ** (n - 1))
    assert policy.wait_strategy(make_state(n)) == expected


def test_no_jitter_sequence_with_other_parameters() -> None:
    policy = RetryPolicy(
        jitter="none", backoff_initial=0.1, backoff_multiplier=3.0, backoff_max=5.0
    )
    waits = [policy.wait_strategy(make_state(n)) for n in range(1, 9)]
    assert waits == pytest.approx([0.1, 0.3, 0.9, 2.7, 5.0, 5.0, 5.0, 5.0])


@pytest.mark.parametrize("value", [0.0, 0.5, 0.999])
@pytest.mark.parametrize("n", range(1, 9))
def test_full_jitter_is_random_times_base(value: float, n: int) -> None:
    policy = RetryPolicy(jitter="full", random=fixed(value))
    assert policy.wait_strategy(make_state(n)) == value * base_wait(0.5, 2.0, 10.0, n)


@pytest.mark.parametrize("value", [0.0, 0.5, 0.999])
@pytest.mark.parametrize("n", range(1, 9))
def test_equal_jitter_is_half_base_plus_random_half(value: float, n: int) -> None:
    policy = RetryPolicy(jitter="equal", random=fixed(value))
    base = base_wait(0.5, 2.0, 10.0, n)
    assert policy.wait_strategy(make_state(n)) == pytest.approx(
        base / 2 + value * base / 2
    )


def test_full_jitter_with_a_seeded_random_is_exact() -> None:
    policy = RetryPolicy(jitter="full", random=random.Random(1234).random)
    reference = random.Random(1234)
    for n in range(1, 9):
        expected = reference.random() * base_wait(0.5, 2.0, 10.0, n)
        assert policy.wait_strategy(make_state(n)) == expected


def test_equal_jitter_with_a_seeded_random_is_exact() -> None:
    policy = RetryPolicy(jitter="equal", random=random.Random(99).random)
    reference = random.Random(99)
    for n in range(1, 9):
        base = base_wait(0.5, 2.0, 10.0, n)
        expected = base / 2 + reference.random() * base / 2
        assert policy.wait_strategy(make_state(n)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("previous", "value", "expected"),
    [
        (0.0, 0.0, 0.5),  # no previous sleep: draw from [initial, 3 * initial]
        (0.0, 0.5, 1.0),
        (0.0, 0.999, 0.5 + 0.999 * 1.0),
        (2.0, 0.0, 0.5),
        (2.0, 0.5, 0.5 + 0.5 * 5.5),
        (2.0, 0.999, 0.5 + 0.999 * 5.5),
        (3.0, 0.999, 0.5 + 0.999 * 8.5),
        (5.0, 0.5, 7.75),
        (5.0, 0.999, 10.0),  # 14.98... capped at backoff_max
        (100.0, 0.5, 10.0),
    ],
)
def test_decorrelated_jitter_exact_values(
    previous: float, value: float, expected: float
) -> None:
    policy = RetryPolicy(jitter="decorrelated", random=fixed(value))
    wait = policy.wait_strategy(make_state(2, upcoming_sleep=previous))
    assert wait == pytest.approx(expected)


def test_decorrelated_jitter_stays_in_its_range_over_a_chain() -> None:
    policy = RetryPolicy(jitter="decorrelated", random=random.Random(7).random)
    previous = 0.0
    for n in range(1, 50):
        wait = policy.wait_strategy(make_state(n, upcoming_sleep=previous))
        upper = min(10.0, 3 * (previous or 0.5))
        assert 0.5 <= wait <= upper
        previous = wait


@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
@pytest.mark.parametrize("n", [1_100, 10_000, 10**9])
def test_huge_attempt_numbers_do_not_overflow(jitter: str, n: int) -> None:
    policy = RetryPolicy(jitter=jitter, random=fixed(0.999))  # type: ignore[arg-type]
    wait = policy.wait_strategy(make_state(n, upcoming_sleep=10.0))
    assert math.isfinite(wait)
    if jitter == "none":
        assert wait == 10.0
    else:
        assert 0.0 <= wait <= 10.0
        assert wait >= 0.999 * 10.0 / 2


@pytest.mark.parametrize("n", [2, 1_100, 10**6])
def test_zero_initial_backoff_means_no_wait_at_any_attempt(n: int) -> None:
    # min(backoff_max, 0 * multiplier ** (n - 1)) is 0 however large n is.
    policy = RetryPolicy(jitter="none", backoff_initial=0.0)
    assert policy.wait_strategy(make_state(n)) == 0.0


@given(
    initial=st.floats(0.0, 100.0),
    multiplier=st.floats(1.0, 10.0),
    extra=st.floats(0.0, 1000.0),
    n=st.integers(1, 5_000),
    value=st.floats(0.0, 1.0, exclude_max=True),
    previous=st.floats(0.0, 2000.0),
)
def test_property_waits_stay_within_zero_and_backoff_max(
    initial: float,
    multiplier: float,
    extra: float,
    n: int,
    value: float,
    previous: float,
) -> None:
    maximum = initial + extra
    for jitter in ("none", "full", "equal", "decorrelated"):
        policy = RetryPolicy(
            jitter=jitter,
            backoff_initial=initial,
            backoff_multiplier=multiplier,
            backoff_max=maximum,
            random=fixed(value),
        )
        wait = policy.wait_strategy(make_state(n, upcoming_sleep=previous))
        assert 0.0 <= wait <= maximum, jitter


@given(
    initial=st.floats(0.001, 100.0),
    multiplier=st.floats(1.0, 10.0),
    extra=st.floats(0.0, 1000.0),
    n=st.integers(1, 3_000),
)
def test_property_no_jitter_is_monotone_in_n(
    initial: float, multiplier: float, extra: float, n: int
) -> None:
    policy = RetryPolicy(
        jitter="none",
        backoff_initial=initial,
        backoff_multiplier=multiplier,
        backoff_max=initial + extra,
    )
    now = policy.wait_strategy(make_state(n))
    later = policy.wait_strategy(make_state(n + 1))
    much_later = policy.wait_strategy(make_state(n + 1_000))
    assert now <= later <= much_later <= initial + extra


# -- tenacity views: wait and stop -----------------------------------------------------


def test_policy_exposes_tenacity_strategies() -> None:
    policy = RetryPolicy()
    assert isinstance(policy.wait_strategy, wait_base)
    assert isinstance(policy.stop_strategy, stop_base)
    assert isinstance(policy.retry_strategy, retry_base)


def test_user_wait_replaces_the_backoff() -> None:
    user_wait = tenacity.wait_fixed(1.25)
    policy = RetryPolicy(wait=user_wait, jitter="none")
    assert policy.wait_strategy is user_wait
    assert [policy.wait_strategy(make_state(n)) for n in (1, 2, 5)] == [1.25] * 3


def test_user_wait_is_used_by_the_client() -> None:
    from reliable_client import Client
    from reliable_client.testing import testing_mode

    replies = iter([httpx.Response(503), httpx.Response(503), httpx.Response(200)])
    transport = httpx.MockTransport(lambda request: next(replies))
    policy = RetryPolicy(wait=tenacity.wait_fixed(0.25))
    with testing_mode() as mode, Client(transport=transport, retry=policy) as client:
        assert client.get("http://api.test/").status_code == 200
    assert mode.sleeps == [0.25, 0.25]


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 10])
def test_stop_strategy_stops_at_max_attempts(max_attempts: int) -> None:
    stop = RetryPolicy(max_attempts=max_attempts).stop_strategy
    for n in range(1, max_attempts):
        assert stop(make_state(n)) is False
    assert stop(make_state(max_attempts)) is True


@pytest.mark.parametrize(
    ("max_attempts", "user_limit", "expected"), [(5, 2, 2), (3, 10, 3), (4, 4, 4)]
)
def test_user_stop_is_added_whichever_stops_first(
    max_attempts: int, user_limit: int, expected: int
) -> None:
    policy = RetryPolicy(
        max_attempts=max_attempts, stop=tenacity.stop_after_attempt(user_limit)
    )
    stops = [policy.stop_strategy(make_state(n)) for n in range(1, 12)]
    assert stops.index(True) + 1 == expected


def test_user_stop_of_another_kind_is_added() -> None:
    flag = tenacity.stop_when_event_set(threading.Event())
    policy = RetryPolicy(max_attempts=5, stop=flag)
    assert policy.stop_strategy(make_state(1)) is False
    flag.event.set()
    assert policy.stop_strategy(make_state(1)) is True


def test_deadline_stops_before_a_sleep_that_would_pass_it() -> None:
    policy = RetryPolicy(max_attempts=100, deadline=5.0)
    stop = policy.stop_strategy
    # stop_before_delay: elapsed + upcoming sleep >= deadline.
    assert stop(make_state(2, elapsed=4.0, upcoming_sleep=0.5)) is False
    assert stop(make_state(2, elapsed=4.0, upcoming_sleep=1.0)) is True
    assert stop(make_state(2, elapsed=4.5, upcoming_sleep=2.0)) is True
    assert stop(make_state(2, elapsed=5.0, upcoming_sleep=0.0)) is True
    # Without the deadline the same states go on.
    no_deadline = RetryPolicy(max_attempts=100).stop_strategy
    assert no_deadline(make_state(2, elapsed=4.5, upcoming_sleep=2.0)) is False


def test_deadline_and_max_attempts_and_user_stop_combine() -> None:
    policy = RetryPolicy(
        max_attempts=3, deadline=5.0, stop=tenacity.stop_after_delay(2.0)
    )
    stop = policy.stop_strategy
    assert stop(make_state(1, elapsed=1.0)) is False
    assert stop(make_state(3, elapsed=1.0)) is True  # max_attempts
    assert stop(make_state(1, elapsed=2.0)) is True  # user's stop_after_delay
    no_user = policy.replace(stop=None).stop_strategy
    assert no_user(make_state(1, elapsed=2.0, upcoming_sleep=2.0)) is False
    assert no_user(make_state(1, elapsed=2.0, upcoming_sleep=3.0)) is True  # deadline


def test_stop_strategy_drives_a_real_tenacity_loop() -> None:
    calls: list[int] = []

    def always_fails() -> None:
        calls.append(1)
        raise OSError("nope")

    retrying = tenacity.Retrying(
        stop=RetryPolicy(max_attempts=4).stop_strategy,
        wait=tenacity.wait_none(),
        reraise=True,
    )
    with pytest.raises(OSError, match="nope"):
        retrying(always_fails)
    assert len(calls) == 4


# -- tenacity view: retry (the safety rule) --------------------------------------------


class Scripted:
    """An ``httpx.Client`` over a mock transport answering from a script."""

    def __init__(self, *steps: int | type[Exception]) -> None:
        self.steps: Iterator[int | type[Exception]] = iter(steps)
        self.requests: list[httpx.Request] = []
        self.client = httpx.Client(transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = next(self.steps)
        if isinstance(step, int):
            return httpx.Response(step)
        raise step("scripted failure", request=request)  # type: ignore[call-arg]


def run(
    policy: RetryPolicy, call: Callable[[], httpx.Response]
) -> httpx.Response | BaseException:
    retrying = tenacity.Retrying(
        retry=policy.retry_strategy,
        stop=policy.stop_strategy,
        wait=tenacity.wait_none(),
        reraise=True,
    )
    try:
        return retrying(call)
    except Exception as exc:
        return exc


def test_retry_strategy_retries_a_503_for_get() -> None:
    server = Scripted(503, 200)
    result = run(RetryPolicy(), lambda: server.client.get("http://api.test/x"))
    assert isinstance(result, httpx.Response)
    assert result.status_code == 200
    assert len(server.requests) == 2


def test_retry_strategy_does_not_retry_a_503_for_unkeyed_post() -> None:
    server = Scripted(503, 200)
    result = run(
        RetryPolicy(), lambda: server.client.post("http://api.test/x", content=b"a")
    )
    assert isinstance(result, httpx.Response)
    assert result.status_code == 503
    assert len(server.requests) == 1


def test_retry_strategy_retries_a_503_for_keyed_post() -> None:
    server = Scripted(503, 200)
    result = run(
        RetryPolicy(),
        lambda: server.client.post(
            "http://api.test/x", content=b"a", headers={"Idempotency-Key": "k-1"}
        ),
    )
    assert isinstance(result, httpx.Response)
    assert result.status_code == 200
    assert len(server.requests) == 2


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "PROPFIND"])
def test_retry_strategy_retries_connect_error_for_any_method(method: str) -> None:
    server = Scripted(httpx.ConnectError, 200)
    result = run(
        RetryPolicy(), lambda: server.client.request(method, "http://api.test/x")
    )
    assert isinstance(result, httpx.Response)
    assert result.status_code == 200
    assert len(server.requests) == 2


def test_retry_strategy_does_not_retry_read_error_for_unkeyed_post() -> None:
    server = Scripted(httpx.ReadError, 200)
    result = run(
        RetryPolicy(), lambda: server.client.post("http://api.test/x", content=b"a")
    )
    assert isinstance(result, httpx.ReadError)
    assert len(server.requests) == 1


def test_retry_strategy_stops_at_max_attempts_with_the_last_error() -> None:
    server = Scripted(httpx.ConnectError, httpx.ConnectError, httpx.ConnectError, 200)
    result = run(
        RetryPolicy(max_attempts=3), lambda: server.client.get("http://api.test/x")
    )
    assert isinstance(result, httpx.ConnectError)
    assert len(server.requests) == 3


def test_retry_strategy_judges_http_status_error_by_its_request() -> None:
    def checked(method: str, server: Scripted) -> Callable[[], httpx.Response]:
        def call() -> httpx.Response:
            response = server.client.request(method, "http://api.test/x")
            return response.raise_for_status()

        return call

    get_server = Scripted(502, 200)
    result = run(RetryPolicy(), checked("GET", get_server))
    assert isinstance(result, httpx.Response)
    assert result.status_code == 200
    assert len(get_server.requests) == 2

    post_server = Scripted(502, 200)
    result = run(RetryPolicy(), checked("POST", post_server))
    assert isinstance(result, httpx.HTTPStatusError)
    assert len(post_server.requests) == 1


def test_retry_strategy_ignores_statuses_outside_the_policy() -> None:
    server = Scripted(404, 200)
    result = run(RetryPolicy(), lambda: server.client.get("http://api.test/x"))
    assert isinstance(result, httpx.Response)
    assert result.status_code == 404
    assert len(server.requests) == 1


def test_retry_strategy_does_not_retry_unrelated_results_or_errors() -> None:
    calls: list[int] = []

    def not_http() -> str:
        calls.append(1)
        return "not a response"

    retrying = tenacity.Retrying(
        retry=RetryPolicy().retry_strategy,
        stop=RetryPolicy().stop_strategy,
        wait=tenacity.wait_none(),
        reraise=True,
    )
    assert retrying(not_http) == "not a response"
    assert len(calls) == 1

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not a network failure")

    with pytest.raises(ValueError):
        retrying(broken)
    assert len(calls) == 2
