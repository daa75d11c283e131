"""Retry-After: the parser, and how clients obey it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from email.utils import formatdate

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reliable_client
from reliable_client import Client, RetryPolicy, testing
from reliable_client._retry_after import parse_retry_after
from reliable_client.testing import TestingMode

# Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110.
NOW = 784111777.0

# -- the parser: delay-seconds ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("\t12\t", 12.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        ("007", 7.0),
        ("86400", 86400.0),
    ],
)
def test_delay_seconds(value: str, expected: float) -> None:
    result = parse_retry_after(value, NOW)
    assert result == expected
    assert isinstance(result, float)


def test_delay_seconds_does_not_depend_on_now() -> None:
    assert parse_retry_after("30", 0.0) == parse_retry_after("30", time.time()) == 30.0


def test_absurdly_long_delay_is_infinite_not_an_error() -> None:
    result = parse_retry_after("9" * 400, NOW)
    assert result == math.inf
    assert result is not None
    assert result > RetryPolicy().max_retry_after


# -- the parser: HTTP-date -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:40 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:40 GMT",  # obsolete RFC 850 form
        "Sun Nov  6 08:49:40 1994",  # obsolete asctime form
    ],
    ids=["imf-fixdate", "rfc850", "asctime"],
)
def test_http_date_forms_relative_to_now(value: str) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(3.0)
    assert parse_retry_after(value, NOW + 1.0) == pytest.approx(2.0)
    assert parse_retry_after(value, NOW - 60.0) == pytest.approx(63.0)


def test_http_date_with_fractional_now() -> None:
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", NOW + 0.25) == (
        pytest.approx(2.75)
    )


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # exactly now
        "Sun, 06 Nov 1994 08:49:36 GMT",
        "Sat, 05 Nov 1994 08:49:40 GMT",
        "Thu, 01 Jan 1970 00:00:00 GMT",
    ],
)
def test_past_dates_mean_retry_now(value: str) -> None:
    assert parse_retry_after(value, NOW) == 0.0


def test_epoch_is_in_the_past_today() -> None:
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", time.time()) == 0.0


def test_far_future_date_is_a_huge_delay() -> None:
    result = parse_retry_after("Tue, 01 Jan 2999 00:00:00 GMT", time.time())
    assert result is not None
    assert result > 900 * 365 * 86400  # over 900 years
    assert result > RetryPolicy().max_retry_after


def test_date_from_a_real_formatter_round_trips() -> None:
    now = 1_700_000_000.0
    value = formatdate(now + 42, usegmt=True)
    assert parse_retry_after(value, now) == pytest.approx(42.0)


# -- the parser: hostile values --------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "-5",
        "-0",
        "1e999",
        "1e3",
        "abc",
        "",
        "   ",
        None,
        "0x10",
        "+3",
        "NaN",
        "nan",
        "inf",
        "Infinity",
        "-inf",
        "1.",
        ".5",
        "1,5",
        "5 5",
        "5s",
        "\u0663",  # ARABIC-INDIC DIGIT THREE: a digit, but not an ASCII one
        "x" * 10_240,
        "Sun, 06 Nov 1994 08:49:40 GMT" * 400,
        "Sun, 32 Nov 1994 08:49:40 GMT",
        "Sun, 06 Nov 1994 25:61:61 GMT",
        "Sun, 06 Foo 1994 08:49:40 GMT",
        "Sun, 06 Nov 99999 08:49:40 GMT",
        "Sun, 06 Nov",
        "\x00\x01\x02",
    ],
    ids=repr,
)
def test_hostile_values_give_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_ten_kilobytes_of_digits_is_infinite() -> None:
    assert parse_retry_after("1" * 10_240, NOW) == math.inf


@given(st.text(max_size=200), st.floats(0, 4e9))
def test_property_never_raises_and_never_negative(value: str, now: float) -> None:
    result = parse_retry_after(value, now)
    assert result is None or (isinstance(result, float) and result >= 0.0)
    assert result is None or not math.isnan(result)


@given(st.from_regex(r"\A[0-9]{1,12}(\.[0-9]{1,6})?\Z"))
def test_property_delay_seconds_read_as_floats(value: str) -> None:
    assert parse_retry_after(value, NOW) == float(value)


# -- end to end through Client ---------------------------------------------------------


class Server:
    """A mock transport that answers from a script and records requests."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0)


def busy(status: int = 503, retry_after: str | None = None) -> httpx.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return httpx.Response(status, headers=headers, content=b"busy")


def ok() -> httpx.Response:
    return httpx.Response(200, content=b"ok")


@pytest.fixture
def mode() -> Iterator[TestingMode]:
    with testing.testing_mode() as active:
        yield active


def test_retry_after_seconds_is_slept_exactly(mode: TestingMode) -> None:
    server = Server(busy(retry_after="2"), ok())
    with Client(transport=server.transport) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 200
    assert mode.sleeps == [2.0]
    assert len(server.requests) == 2
    assert reliable_client.outcome(response).attempts == 2


def test_decimal_retry_after_is_slept_exactly(mode: TestingMode) -> None:
    server = Server(busy(retry_after="1.5"), busy(retry_after="0"), ok())
    with Client(transport=server.transport) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 200
    assert mode.sleeps == [1.5, 0.0]


def test_retry_after_date_is_slept_until(mode: TestingMode) -> None:
    target = math.floor(time.time()) + 3  # HTTP dates have whole seconds
    server = Server(busy(retry_after=formatdate(target, usegmt=True)), ok())
    with Client(transport=server.transport) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 200
    assert len(mode.sleeps) == 1
    assert 1.5 < mode.sleeps[0] <= 3.0


def test_retry_after_date_in_the_past_retries_at_once(mode: TestingMode) -> None:
    server = Server(busy(retry_after="Thu, 01 Jan 1970 00:00:00 GMT"), ok())
    with Client(transport=server.transport) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 200
    assert mode.sleeps == [0.0]


@pytest.mark.parametrize(
    "value", ["120", "60.5", "9" * 400, "Tue, 01 Jan 2999 00:00:00 GMT"]
)
def test_retry_after_above_max_returns_that_response_at_once(
    mode: TestingMode, value: str
) -> None:
    server = Server(busy(retry_after=value), ok())
    with Client(transport=server.transport) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == value
    assert response.content == b"busy"
    assert len(server.requests) == 1
    assert mode.sleeps == []
    result = reliable_client.outcome(response)
    assert result.attempts == 1
    assert result.stopped_by == "retry_after"


def test_retry_after_equal_to_max_is_slept(mode: TestingMode) -> None:
    server = Server(busy(retry_after="60"), ok())
    with Client(transport=server.transport) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 200
    assert mode.sleeps == [60.0]


def test_max_retry_after_is_configurable(mode: TestingMode) -> None:
    server = Server(busy(retry_after="5"), ok())
    policy = RetryPolicy(max_retry_after=4.0)
    with Client(transport=server.transport, retry=policy) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 503
    assert reliable_client.outcome(response).stopped_by == "retry_after"
    assert mode.sleeps == []


@pytest.mark.parametrize(
    "value", ["abc", "-5", "1e999", "", "0x10", "+3", "NaN", "x" * 10_240]
)
def test_garbage_retry_after_falls_back_to_backoff(
    mode: TestingMode, value: str
) -> None:
    server = Server(busy(retry_after=value), ok())
    with Client(transport=server.transport) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 200
    assert len(mode.sleeps) == 1
    assert 0.0 <= mode.sleeps[0] <= RetryPolicy().backoff_initial


def test_garbage_retry_after_backoff_is_exact_with_injected_random(
    mode: TestingMode,
) -> None:
    server = Server(busy(retry_after="soon"), busy(retry_after="-1"), ok())
    policy = RetryPolicy(random=lambda: 0.5)
    with Client(transport=server.transport, retry=policy) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 200
    assert mode.sleeps == [0.25, 0.5]  # half of 0.5, then half of 1.0


def test_respect_retry_after_false_uses_the_backoff(mode: TestingMode) -> None:
    server = Server(busy(retry_after="2"), ok())
    policy = RetryPolicy(respect_retry_after=False, random=lambda: 0.5)
    with Client(transport=server.transport, retry=policy) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 200
    assert mode.sleeps == [0.25]


def test_respect_retry_after_false_ignores_a_long_one_too(mode: TestingMode) -> None:
    server = Server(busy(retry_after="120"), ok())
    policy = RetryPolicy(respect_retry_after=False, random=lambda: 0.5)
    with Client(transport=server.transport, retry=policy) as client:
        response = client.get("http://api.test/things")
    assert response.status_code == 200
    assert mode.sleeps == [0.25]
    assert reliable_client.outcome(response).stopped_by is None


# -- which methods: 429 and 503 with and without Retry-After ---------------------------


def test_429_without_retry_after_is_retried_for_unkeyed_post(
    mode: TestingMode,
) -> None:
    server = Server(busy(429), ok())
    with Client(transport=server.transport, idempotency=None) as client:
        response = client.post("http://api.test/orders", json={"n": 1})
    assert response.status_code == 200
    assert len(server.requests) == 2
    assert "Idempotency-Key" not in server.requests[0].headers
    assert len(mode.sleeps) == 1
    assert 0.0 <= mode.sleeps[0] <= RetryPolicy().backoff_initial


@pytest.mark.parametrize("method", ["POST", "PATCH", "PROPFIND", "GET"])
def test_429_with_retry_after_is_retried_for_any_method(
    mode: TestingMode, method: str
) -> None:
    server = Server(busy(429, retry_after="3"), ok())
    with Client(transport=server.transport, idempotency=None) as client:
        response = client.request(method, "http://api.test/orders", content=b"x")
    assert response.status_code == 200
    assert mode.sleeps == [3.0]


def test_503_with_retry_after_is_retried_for_unkeyed_post(mode: TestingMode) -> None:
    server = Server(busy(retry_after="1"), ok())
    with Client(transport=server.transport, idempotency=None) as client:
        response = client.post("http://api.test/orders", json={"n": 1})
    assert response.status_code == 200
    assert len(server.requests) == 2
    assert "Idempotency-Key" not in server.requests[1].headers
    assert mode.sleeps == [1.0]


def test_503_without_retry_after_is_not_retried_for_unkeyed_post(
    mode: TestingMode,
) -> None:
    server = Server(busy(), ok())
    with Client(transport=server.transport, idempotency=None) as client:
        response = client.post("http://api.test/orders", json={"n": 1})
    assert response.status_code == 503
    assert len(server.requests) == 1
    assert mode.sleeps == []
    assert reliable_client.outcome(response).attempts == 1


def test_503_with_garbage_retry_after_is_not_retried_for_unkeyed_post(
    mode: TestingMode,
) -> None:
    server = Server(busy(retry_after="later, maybe"), ok())
    with Client(transport=server.transport, idempotency=None) as client:
        response = client.post("http://api.test/orders", json={"n": 1})
    assert response.status_code == 503
    assert len(server.requests) == 1
    assert mode.sleeps == []


def test_503_with_long_retry_after_for_unkeyed_post_stops_at_once(
    mode: TestingMode,
) -> None:
    server = Server(busy(retry_after="3600"), ok())
    with Client(transport=server.transport, idempotency=None) as client:
        response = client.post("http://api.test/orders", json={"n": 1})
    assert response.status_code == 503
    assert len(server.requests) == 1
    assert mode.sleeps == []
    assert reliable_client.outcome(response).stopped_by == "retry_after"
