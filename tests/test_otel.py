"""reliable_client.otel with OpenTelemetry's SDK (in-memory exporters) and
opentelemetry-instrumentation-httpx, against a loopback server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import reliable_client as rc
from reliable_client import otel
from reliable_client.testing import ChaosServer, Reply

from .callers import Caller

FAST = rc.RetryPolicy(backoff_initial=0.01, backoff_max=0.01, jitter="none")


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    made = Telemetry()
    otel.instrument(made.tracer_provider, made.meter_provider)
    try:
        yield made
    finally:
        otel.uninstrument()


@pytest.fixture
def instrumented_httpx(telemetry: Telemetry) -> Iterator[None]:
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def _sum(metric: Any) -> float:
    return sum(point.value for point in metric.data.data_points)


def _check_a_call_retried_twice(telemetry: Telemetry) -> None:
    spans = telemetry.finished()
    calls = [s for s in spans if s.name == "GET call"]
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(calls) == 1 and len(attempts) == 3  # one span each: no doubling
    call = calls[0]
    assert call.kind is SpanKind.INTERNAL
    for attempt in attempts:
        assert attempt.parent is not None
        assert attempt.parent.span_id == call.context.span_id
    counts = [a.attributes.get("http.request.resend_count") for a in attempts]
    assert sorted(counts, key=lambda c: c or 0) == [None, 1, 2]
    attributes = dict(call.attributes or {})
    assert attributes["reliable_client.attempts"] == 3
    assert attributes["reliable_client.retries"] == 2
    assert list(attributes["reliable_client.retry_reasons"]) == ["status 503"] * 2
    assert attributes["reliable_client.idempotency_key_present"] is False
    assert attributes["http.response.status_code"] == 200
    assert "?" not in str(attributes["url.full"])  # never the query string
    events = [e for e in call.events if e.name == "retry"]
    assert [e.attributes["reliable_client.sleep"] for e in events] == [0.01, 0.01]
    metrics = telemetry.metrics()
    assert _sum(metrics["reliable_client.calls"]) == 1
    assert _sum(metrics["reliable_client.attempts"]) == 3
    assert _sum(metrics["reliable_client.retries"]) == 2
    histogram = metrics["reliable_client.call.attempts"].data.data_points[0]
    assert (histogram.count, histogram.sum) == (1, 3)
    balance = metrics["reliable_client.budget.balance"].data.data_points
    assert balance and balance[0].value == pytest.approx(100 + 0.2 - 2)


@pytest.mark.usefixtures("instrumented_httpx")
async def test_a_call_retried_twice_with_instrument(
    kind: str, telemetry: Telemetry
) -> None:
    with ChaosServer(lifetime=60) as server:
        server.script("/items", Reply(503), Reply(503), Reply(200))
        caller = Caller(kind, base_url=server.url, retry=FAST)
        try:
            response = await caller.request("GET", "/items?token=secret")
        finally:
            await caller.close()
    assert response.status_code == 200
    _check_a_call_retried_twice(telemetry)


async def test_a_call_retried_twice_with_instrument_client(
    kind: str, telemetry: Telemetry
) -> None:
    with ChaosServer(lifetime=60) as server:
        server.script("/items", Reply(503), Reply(503), Reply(200))
        caller = Caller(kind, base_url=server.url, retry=FAST)
        HTTPXClientInstrumentor.instrument_client(
            caller.client, tracer_provider=telemetry.tracer_provider
        )
        try:
            response = await caller.request("GET", "/items?token=secret")
        finally:
            await caller.close()
    assert response.status_code == 200
    _check_a_call_retried_twice(telemetry)


@pytest.mark.usefixtures("instrumented_httpx")
def test_a_plain_client_with_the_transport_gets_a_call_span(
    telemetry: Telemetry,
) -> None:
    with ChaosServer(lifetime=60) as server:
        server.script("/items", Reply(503), Reply(200))
        transport = rc.RetryTransport(retry=FAST)
        with httpx.Client(transport=transport, base_url=server.url) as client:
            assert client.post("/items", json={}).status_code == 200
    spans = telemetry.finished()
    call = next(s for s in spans if s.name == "POST call")
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(attempts) == 2
    assert all(a.parent and a.parent.span_id == call.context.span_id for a in attempts)
    attributes = dict(call.attributes or {})
    assert attributes["reliable_client.idempotency_key_present"] is True
    assert isinstance(attributes["reliable_client.resource_id"], str)


def test_refusals_and_give_ups_are_counted(telemetry: Telemetry) -> None:
    budget = rc.RetryBudget(min_per_second=0.1, ttl=10.0)  # one retry in reserve
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    throttle = rc.AdaptiveThrottle(random=lambda: 0.9999)  # only forced refusals
    with rc.Client(
        transport=transport, budget=budget, retry=FAST, throttle=throttle
    ) as client:
        client.get("http://api.test/")  # 1 retry, then the budget refuses
        with (
            rc.testing.testing_mode(throttle=True),
            pytest.raises(rc.ThrottledError),
        ):
            client.get("http://api.test/")
    metrics = telemetry.metrics()
    assert _sum(metrics["reliable_client.calls"]) == 2
    assert _sum(metrics["reliable_client.attempts"]) == 2  # the refused one: none
    assert _sum(metrics["reliable_client.refused_by_budget"]) == 1
    assert _sum(metrics["reliable_client.gave_up"]) == 1
    assert _sum(metrics["reliable_client.throttled"]) == 1
    errors = {
        (s.attributes or {}).get("error.type"): s.attributes
        for s in telemetry.finished()
    }
    assert errors["ThrottledError"]["reliable_client.stopped_by"] == "throttle"
    assert errors["503"]["reliable_client.stopped_by"] == "budget"  # a final 5xx


def test_uninstrument_turns_it_off(telemetry: Telemetry) -> None:
    assert otel.is_instrumented()
    otel.uninstrument()
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with rc.Client(transport=transport) as client:
        client.get("http://api.test/")
    assert telemetry.finished() == []
    assert not otel.is_instrumented()


def test_log_records_carry_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="reliable_client")
    statuses = iter([503, 200])
    transport = httpx.MockTransport(lambda request: httpx.Response(next(statuses)))
    with rc.Client(transport=transport, retry=FAST) as client:
        client.get("http://api.test/items?token=secret")
    (record,) = [r for r in caplog.records if r.name == "reliable_client"]
    fields = {
        name: getattr(record, name)
        for name in ("method", "host", "path", "attempt", "reason", "sleep")
    }
    assert fields == {
        "method": "GET",
        "host": "api.test",
        "path": "/items",
        "attempt": 1,
        "reason": "status 503",
        "sleep": 0.01,
    }
    assert "secret" not in record.getMessage()
    assert record.stopped_by is None  # type: ignore[attr-defined]


def test_without_opentelemetry_nothing_breaks(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
        "import httpx, reliable_client as rc\n"
        "t = httpx.MockTransport(lambda r: httpx.Response(200))\n"
        "assert rc.Client(transport=t).get('http://x.test/').status_code == 200\n"
        "try:\n"
        "    import reliable_client.otel\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'reliable-client[otel]'" in done.stdout


# -- found in review --------------------------------------------------------------


def test_instrument_client_on_a_plain_client_with_the_transport_is_not_doubled(
    telemetry: Telemetry,
) -> None:
    with ChaosServer(lifetime=60) as server:
        server.script("/items", Reply(503), Reply(200))
        client = httpx.Client(
            transport=rc.RetryTransport(retry=FAST), base_url=server.url
        )
        HTTPXClientInstrumentor.instrument_client(
            client, tracer_provider=telemetry.tracer_provider
        )
        try:
            assert client.get("/items").status_code == 200
        finally:
            client.close()
    spans = telemetry.finished()
    # The instrumentation wraps the transport as a whole: one span of its
    # own around our call span, never a second one inside it.
    assert sum(1 for s in spans if s.kind is SpanKind.CLIENT) == 1
    assert sum(1 for s in spans if s.name == "GET call") == 1


def test_without_the_httpx_instrumentation_no_resend_count_lands_on_the_call(
    telemetry: Telemetry,
) -> None:
    seen: list[str] = []
    with ChaosServer(lifetime=60) as server:
        server.script("/items", Reply(503), Reply(503), Reply(200))
        with rc.Client(base_url=server.url, retry=FAST) as client:
            request = client.build_request("GET", "/items")
            request.extensions["trace"] = lambda name, info: seen.append(name)
            assert client.send(request).status_code == 200
    (call,) = telemetry.finished()
    assert "http.request.resend_count" not in (call.attributes or {})
    assert seen  # the caller's own trace callback still hears every event
    assert not type(request.extensions["trace"]).__name__.endswith("ResendCount")


def test_budget_series_keep_their_number(telemetry: Telemetry) -> None:
    import gc

    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    clients = [rc.Client(transport=transport) for _ in range(3)]
    for client in clients:
        client.get("http://api.test/")

    def numbers() -> list[int]:
        points = telemetry.metrics()["reliable_client.budget.balance"].data.data_points
        return sorted(p.attributes["reliable_client.budget"] for p in points)

    first = numbers()
    kept = clients[2]
    for client in clients[:2]:
        client.close()
    del clients, client
    gc.collect()
    later = numbers()
    assert len(first) == 3 and later == [first[2]]
    kept.close()


def test_a_decorated_functions_retries_are_counted(telemetry: Telemetry) -> None:
    attempts = 0

    @rc.retry(FAST, on=(RuntimeError,))
    def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("not yet")

    flaky()
    points = telemetry.metrics()["reliable_client.retries"].data.data_points
    (point,) = [p for p in points if "code.function" in p.attributes]
    assert point.value == 2
    assert point.attributes["code.function"].endswith("flaky")
