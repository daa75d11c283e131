"""Observability: the log, on_retry events, stats, outcome() and testing mode."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx

import reliable_client as rc
from reliable_client import testing

from .callers import BASE, Caller

LOGGER = "reliable_client"


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def leaks(record: logging.LogRecord, secret: str) -> bool:
    """Whether ``secret`` shows up anywhere a handler could print it."""
    formatted = logging.Formatter(
        "%(name)s %(levelname)s %(message)s %(pathname)s"
    ).format(record)
    return secret in formatted or secret in repr(record.args)


# -- the log ----------------------------------------------------------------


async def test_one_info_record_per_retry(
    make: Callable[..., Caller],
    api: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    no_sleep: testing.TestingMode,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    api.get("/orders/7").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),
            httpx.ConnectError("refused"),
            httpx.Response(200),
        ]
    )
    await make().request("GET", f"{BASE}/orders/7")
    logged = records(caplog)
    assert len(logged) == 2
    assert all(r.levelno == logging.INFO for r in logged)
    first, second = (r.getMessage() for r in logged)
    for message in (first, second):
        assert "GET" in message
        assert "/orders/7" in message
    assert "ReadTimeout" in first
    assert "ConnectError" in second


async def test_no_record_without_retries(
    make: Callable[..., Caller],
    api: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    no_sleep: testing.TestingMode,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    api.get("/ok").mock(return_value=httpx.Response(200))
    await make().request("GET", f"{BASE}/ok")
    assert records(caplog) == []


async def test_log_never_holds_secrets(
    make: Callable[..., Caller],
    api: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    no_sleep: testing.TestingMode,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    api.put("/vault/items").mock(
        side_effect=[
            httpx.ReadError("reset"),
            httpx.Response(503),
            httpx.Response(503),
            httpx.Response(503),
        ]
    )
    caller = make(budget=rc.RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10))
    response = await caller.request(
        "PUT",
        "https://user:SECRETPW@api.test/vault/items?token=SECRET&x=1",
        headers={"Authorization": "Bearer SECRET", "X-Api-Key": "SECRET"},
        content=b'{"password": "SECRET"}',
    )
    assert response.status_code == 503
    logged = records(caplog)
    # One retry (the budget's reserve), then the budget stops the call.
    assert [r.levelno for r in logged] == [logging.INFO, logging.WARNING]
    for record in logged:
        message = record.getMessage()
        assert "PUT" in message
        assert "/vault/items" in message
        assert not leaks(record, "SECRET")
        assert "token" not in message
        assert "user" not in message


async def test_warning_when_budget_stops(
    make: Callable[..., Caller],
    api: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    no_sleep: testing.TestingMode,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    api.get("/r").mock(side_effect=httpx.ConnectError("refused"))
    caller = make(budget=rc.RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10))
    with pytest.raises(httpx.ConnectError):
        await caller.request("GET", f"{BASE}/r")
    warnings = [r for r in records(caplog) if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "budget" in warnings[0].getMessage()
    assert "GET" in warnings[0].getMessage()


async def test_warning_when_deadline_stops(
    make: Callable[..., Caller],
    api: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    no_sleep: testing.TestingMode,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    route = api.get("/r").mock(side_effect=httpx.ConnectError("refused"))
    policy = rc.RetryPolicy(jitter="none", backoff_initial=5.0, deadline=1.0)
    with pytest.raises(httpx.ConnectError) as excinfo:
        await make(retry=policy).request("GET", f"{BASE}/r")
    assert route.call_count == 1
    assert rc.outcome(excinfo.value).stopped_by == "deadline"
    logged = records(caplog)
    assert [r.levelno for r in logged] == [logging.WARNING]
    assert "deadline" in logged[0].getMessage()
    assert no_sleep.sleeps == []


# -- on_retry -----------------------------------------------------------------


async def test_on_retry_events_for_retries(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    events: list[rc.RetryEvent] = []
    api.get("/r").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),
            httpx.Response(503),
            httpx.Response(200),
        ]
    )
    policy = rc.RetryPolicy(jitter="none", backoff_initial=0.5)
    response = await make(retry=policy, on_retry=events.append).request(
        "GET", f"{BASE}/r?secret=1"
    )
    assert response.status_code == 200
    assert [(e.attempt, e.reason, e.sleep, e.stopped_by) for e in events] == [
        (1, "ReadTimeout", 0.5, None),
        (2, "status 503", 1.0, None),
    ]
    assert all(isinstance(e, rc.RetryEvent) for e in events)
    assert isinstance(events[0].exception, httpx.ReadTimeout)
    assert events[1].response is not None
    assert events[1].response.status_code == 503
    assert events[0].label == f"GET {BASE}/r"  # no query string
    assert events[0].request is not None
    assert events[0].request.url.path == "/r"
    assert no_sleep.sleeps == [0.5, 1.0]


async def test_on_retry_event_for_a_stop(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    events: list[rc.RetryEvent] = []
    api.get("/r").mock(side_effect=httpx.ConnectError("refused"))
    caller = make(
        budget=rc.RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10),
        on_retry=events.append,
    )
    with pytest.raises(httpx.ConnectError):
        await caller.request("GET", f"{BASE}/r")
    assert [(e.attempt, e.reason, e.stopped_by) for e in events] == [
        (1, "ConnectError", None),
        (2, "ConnectError", "budget"),
    ]
    assert events[0].sleep is not None
    assert events[1].sleep is None


def test_on_retry_on_a_transport(no_sleep: testing.TestingMode) -> None:
    events: list[rc.RetryEvent] = []
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(502 if len(calls) == 1 else 200)

    transport = rc.RetryTransport(httpx.MockTransport(handler), on_retry=events.append)
    with httpx.Client(transport=transport) as client:
        assert client.get(f"{BASE}/r").status_code == 200
    assert [(e.attempt, e.reason) for e in events] == [(1, "status 502")]


def test_on_retry_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_retry"):
        rc.Client(on_retry=42)  # type: ignore[arg-type]


# -- stats and the budget -------------------------------------------------------


async def test_client_stats_after_a_mix_of_calls(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    api.get("/ok").mock(return_value=httpx.Response(200))
    api.get("/flaky").mock(side_effect=[httpx.ReadError("reset"), httpx.Response(200)])
    api.get("/down").mock(side_effect=httpx.ConnectError("refused"))
    caller = make()
    await caller.request("GET", f"{BASE}/ok")  # 1 attempt
    await caller.request("GET", f"{BASE}/flaky")  # 2 attempts, 1 retry
    with pytest.raises(httpx.ConnectError):
        await caller.request("GET", f"{BASE}/down")  # 3 attempts, gave up
    stats = caller.client.stats
    assert isinstance(stats, rc.ClientStats)
    assert stats.calls == 3
    assert stats.attempts == 6
    assert stats.retries == 3
    assert stats.gave_up == 1
    assert stats.refused_by_budget == 0
    # A snapshot: later calls do not change it.
    await caller.request("GET", f"{BASE}/ok")
    assert stats.calls == 3
    assert caller.client.stats.calls == 4


async def test_budget_stops_the_second_retry(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    route = api.get("/r").mock(side_effect=httpx.ConnectError("refused"))
    budget = rc.RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10)
    caller = make(budget=budget)
    assert caller.client.budget is budget
    with pytest.raises(httpx.ConnectError) as excinfo:
        await caller.request("GET", f"{BASE}/r")
    assert route.call_count == 2
    result = rc.outcome(excinfo.value)
    assert result.stopped_by == "budget"
    assert result.attempts == 2
    assert result.retries == ("ConnectError",)
    stats = caller.client.stats
    assert stats.refused_by_budget == 1
    assert stats.retries == 1
    assert stats.attempts == 2
    assert stats.gave_up == 1
    assert budget.stats.refused_by_budget == 1
    assert budget.stats.retries == 1


async def test_budget_stops_a_status_retry(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    route = api.get("/r").mock(return_value=httpx.Response(503, text="down"))
    caller = make(budget=rc.RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10))
    response = await caller.request("GET", f"{BASE}/r")
    assert response.status_code == 503
    assert response.text == "down"
    assert route.call_count == 2
    assert rc.outcome(response).stopped_by == "budget"
    assert caller.client.stats.refused_by_budget == 1


async def test_shared_budget_across_clients(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    route = api.get("/r").mock(side_effect=httpx.ConnectError("refused"))
    budget = rc.RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10)
    first, second = make(budget=budget), make(budget=budget)
    with pytest.raises(httpx.ConnectError):
        await first.request("GET", f"{BASE}/r")
    assert route.call_count == 2  # the reserve's one retry
    with pytest.raises(httpx.ConnectError) as excinfo:
        await second.request("GET", f"{BASE}/r")
    assert route.call_count == 3  # nothing left for the second client
    assert rc.outcome(excinfo.value).stopped_by == "budget"
    assert budget.stats.refused_by_budget == 2


# -- testing mode ---------------------------------------------------------------


async def test_testing_mode_caps_attempts_and_records_sleeps(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.get("/r").mock(side_effect=httpx.ConnectError("refused"))
    policy = rc.RetryPolicy(jitter="none", backoff_initial=3.0, max_attempts=5)
    caller = make(retry=policy)
    with testing.testing_mode(attempts=2) as mode:
        assert testing.is_testing()
        with pytest.raises(httpx.ConnectError) as excinfo:
            await caller.request("GET", f"{BASE}/r")
    assert route.call_count == 2
    assert rc.outcome(excinfo.value).attempts == 2
    assert mode.sleeps == [3.0]
    assert mode.retries == 1


async def test_testing_mode_without_cap_keeps_the_policy(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.get("/r").mock(side_effect=httpx.ConnectError("refused"))
    policy = rc.RetryPolicy(jitter="none", backoff_initial=1.0, max_attempts=4)
    with testing.testing_mode() as mode, pytest.raises(httpx.ConnectError):
        await make(retry=policy).request("GET", f"{BASE}/r")
    assert route.call_count == 4
    assert mode.sleeps == [1.0, 2.0, 4.0]


def test_testing_mode_rejects_bad_attempts() -> None:
    with (
        pytest.raises((TypeError, ValueError), match="attempts"),
        testing.testing_mode(attempts=0),
    ):
        pass


def test_testing_mode_restores_previous_state() -> None:
    assert not testing.is_testing()
    with testing.testing_mode(attempts=3):
        with testing.testing_mode():
            assert testing.is_testing()
        assert testing.is_testing()
    assert not testing.is_testing()


# -- outcome() --------------------------------------------------------------------


async def test_outcome_of_http_status_error(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    api.get("/r").mock(return_value=httpx.Response(503))
    response = await make().request("GET", f"{BASE}/r")
    with pytest.raises(httpx.HTTPStatusError) as excinfo:
        response.raise_for_status()
    result = rc.outcome(excinfo.value)
    assert result == rc.outcome(response)
    assert result.attempts == 3
    assert result.retries == ("status 503", "status 503")


def test_outcome_of_plain_httpx_results() -> None:
    response = httpx.Response(200, request=httpx.Request("GET", f"{BASE}/r"))
    result = rc.outcome(response)
    assert result.attempts == 1
    assert result.retries == ()
    assert result.stopped_by is None
    assert rc.outcome(ValueError("x")).attempts == 1
    assert rc.outcome(httpx.ConnectError("no request")).idempotency_key is None


@pytest.mark.parametrize("bad", [42, "response", None, object()])
def test_outcome_rejects_other_types(bad: Any) -> None:
    with pytest.raises(TypeError, match="outcome"):
        rc.outcome(bad)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="add_note needs 3.11")
async def test_exception_carries_a_note(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    api.get("/r").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
            httpx.ConnectTimeout("slow"),
        ]
    )
    with pytest.raises(httpx.ConnectTimeout) as excinfo:
        await make().request("GET", f"{BASE}/r")
    notes = getattr(excinfo.value, "__notes__", [])
    assert len(notes) == 1
    assert "3 attempts" in notes[0]
    assert "ConnectError" in notes[0]
    assert "ReadTimeout" in notes[0]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="add_note needs 3.11")
async def test_note_names_the_stop(
    make: Callable[..., Caller], api: respx.MockRouter, no_sleep: testing.TestingMode
) -> None:
    api.get("/r").mock(side_effect=httpx.ConnectError("refused"))
    caller = make(budget=rc.RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10))
    with pytest.raises(httpx.ConnectError) as excinfo:
        await caller.request("GET", f"{BASE}/r")
    notes = getattr(excinfo.value, "__notes__", [])
    assert len(notes) == 1
    assert "2 attempts" in notes[0]
    assert "budget" in notes[0]
