"""OpenTelemetry for reliable_client: spans for logical calls, resend counts
on the attempts' spans, and metrics (the ``otel`` extra: opentelemetry-api).

    from reliable_client.otel import instrument
    instrument()        # the global tracer and meter providers

After :func:`instrument`:

- every logical call (a ``Client``/``AsyncClient`` send, or a call through a
  ``RetryTransport``) has a span of its own, ``"{METHOD} call"`` (kind
  INTERNAL), made current while the call runs, so that the spans of its
  attempts (made by ``opentelemetry-instrumentation-httpx``, with its
  ``instrument()`` or ``instrument_client()``) are its children.  At its end
  it carries ``reliable_client.attempts``, ``reliable_client.retries``,
  ``reliable_client.retry_reasons``, ``reliable_client.stopped_by``,
  ``reliable_client.idempotency_key_present``, ``reliable_client.resource_id``
  and ``http.response.status_code`` or ``error.type``; each retry adds a
  ``retry`` span event with its reason and sleep (``reliable_client.sleep``,
  seconds);
- every resend's attempt span carries ``http.request.resend_count`` (1, 2,
  ...; absent on the first attempt), set from inside the attempt on httpx's
  own transports (through httpcore's ``trace`` extension);
- the counters of ``client.stats`` are exported as metrics (below).

Metrics, by the OpenTelemetry conventions (dot-separated names, UCUM
annotation units), with the attributes ``http.request.method`` and
``server.address``:

    reliable_client.calls             counter    {call}     logical calls
    reliable_client.attempts          counter    {attempt}  requests sent
    reliable_client.retries           counter    {retry}    retries sent
    reliable_client.refused_by_budget counter    {retry}    retries the budget refused
    reliable_client.throttled         counter    {request}  requests a throttle refused
    reliable_client.gave_up           counter    {call}     calls that gave up
    reliable_client.call.attempts     histogram  {attempt}  attempts per call
    reliable_client.budget.balance    gauge      {retry}    retries a budget allows now

Attribute values never hold query strings, headers or bodies: the URL is
``scheme://host:port/path``.  Without a configured exporter the API's no-op
providers make all of it free; without this module imported, nothing runs.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import httpx

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "reliable_client.otel needs OpenTelemetry's API: "
        "pip install 'reliable-client[otel]'"
    ) from exc

from . import _observe
from ._budget import RetryBudget
from ._decision import KEYS_EXTENSION
from ._outcome import RetryEvent, outcome, record_of, safe_url

__all__ = ["instrument", "is_instrumented", "uninstrument"]

_T = TypeVar("_T")
_SCOPE = "reliable_client"
_lock = threading.Lock()


class _Telemetry:
    """The observer :func:`instrument` installs."""

    def __init__(self, tracer: trace.Tracer, meter: metrics.Meter) -> None:
        self.tracer = tracer
        self.calls = meter.create_counter(
            "reliable_client.calls", unit="{call}", description="Logical calls made."
        )
        self.attempts = meter.create_counter(
            "reliable_client.attempts",
            unit="{attempt}",
            description="Requests sent, retries included.",
        )
        self.retries = meter.create_counter(
            "reliable_client.retries", unit="{retry}", description="Retries sent."
        )
        self.refused = meter.create_counter(
            "reliable_client.refused_by_budget",
            unit="{retry}",
            description="Retries the retry budget refused.",
        )
        self.throttled = meter.create_counter(
            "reliable_client.throttled",
            unit="{request}",
            description="Requests an AdaptiveThrottle refused (never sent).",
        )
        self.gave_up = meter.create_counter(
            "reliable_client.gave_up",
            unit="{call}",
            description="Calls that ended on a failure a retry might have cured.",
        )
        self.per_call = meter.create_histogram(
            "reliable_client.call.attempts",
            unit="{attempt}",
            description="Attempts per logical call.",
            explicit_bucket_boundaries_advisory=[1, 2, 3, 4, 5, 6, 8, 10],
        )
        # Each budget's series keeps its number while the budget lives.
        self.budgets: weakref.WeakKeyDictionary[RetryBudget, int] = (
            weakref.WeakKeyDictionary()
        )
        self._numbers = iter(range(1, 1 << 62))
        meter.create_observable_gauge(
            "reliable_client.budget.balance",
            callbacks=[self._balances],
            unit="{retry}",
            description="Retries each retry budget would allow now.",
        )

    def _balances(self, options: CallbackOptions) -> Iterable[Observation]:
        for budget, number in list(self.budgets.items()):
            yield Observation(budget.balance, {"reliable_client.budget": number})

    # -- the observer ----------------------------------------------------------

    def call(
        self, request: httpx.Request, budget: RetryBudget, run: Callable[[], _T]
    ) -> _T:
        span = self._start(request, budget)
        with trace.use_span(span, end_on_exit=False):
            try:
                result = run()
            except BaseException as exc:
                self._end(span, request, exc)
                raise
        self._end(span, request, result)
        return result

    async def acall(
        self,
        request: httpx.Request,
        budget: RetryBudget,
        run: Callable[[], Awaitable[_T]],
    ) -> _T:
        span = self._start(request, budget)
        with trace.use_span(span, end_on_exit=False):
            try:
                result = await run()
            except BaseException as exc:
                self._end(span, request, exc)
                raise
        self._end(span, request, result)
        return result

    def retry(self, event: RetryEvent) -> None:
        if event.request is None:
            # A decorated function's own retry (its requests are calls).
            if event.sleep is not None:
                self.retries.add(1, {"code.function": event.label})
            return
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {
            "reliable_client.attempt": event.attempt,
            "reliable_client.reason": event.reason,
        }
        if event.sleep is not None:
            attributes["reliable_client.sleep"] = event.sleep
            span.add_event("retry", attributes)
        else:
            attributes["reliable_client.stopped_by"] = event.stopped_by or ""
            span.add_event("retry.stopped", attributes)

    def resend(self, request: httpx.Request, attempt: int, aio: bool) -> None:
        previous = request.extensions.get("trace")
        if isinstance(previous, _ResendCount):
            previous = previous.previous  # ours, from the last resend
        call_span = trace.get_current_span()  # this call's span
        request.extensions["trace"] = (
            _AsyncResendCount(attempt - 1, previous, call_span)
            if aio
            else _ResendCount(attempt - 1, previous, call_span)
        )

    # -- spans and metrics -----------------------------------------------------

    def _start(self, request: httpx.Request, budget: RetryBudget) -> trace.Span:
        with _lock:
            if budget not in self.budgets:
                self.budgets[budget] = next(self._numbers)
        url = request.url
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "server.address": url.host,
            "url.full": safe_url(url),
        }
        if url.port is not None:
            attributes["server.port"] = url.port
        return self.tracer.start_span(
            f"{request.method} call", kind=SpanKind.INTERNAL, attributes=attributes
        )

    def _end(self, span: trace.Span, request: httpx.Request, result: object) -> None:
        hook = request.extensions.get("trace")
        if isinstance(hook, _ResendCount):  # the caller's own trace callback back
            if hook.previous is None:
                del request.extensions["trace"]
            else:
                request.extensions["trace"] = hook.previous
        facts = (
            outcome(result)
            if isinstance(result, (httpx.Response, BaseException))
            else None
        )
        record = record_of(result)
        metric = {
            "http.request.method": request.method,
            "server.address": request.url.host,
        }
        if facts is not None:
            retries = len(facts.retries)
            span.set_attribute("reliable_client.attempts", facts.attempts)
            span.set_attribute("reliable_client.retries", retries)
            if facts.retries:
                span.set_attribute("reliable_client.retry_reasons", list(facts.retries))
            if facts.stopped_by is not None:
                span.set_attribute("reliable_client.stopped_by", facts.stopped_by)
            # From the request itself: a transport's answer has no request yet.
            keys = request.extensions.get(KEYS_EXTENSION)
            key = facts.idempotency_key or (keys[1] if keys else None)
            resource_id = facts.resource_id or (keys[2] if keys else None)
            span.set_attribute(
                "reliable_client.idempotency_key_present", key is not None
            )
            if resource_id is not None:
                span.set_attribute("reliable_client.resource_id", resource_id)
            self.calls.add(1, metric)
            if facts.attempts:
                self.attempts.add(facts.attempts, metric)
                self.per_call.record(facts.attempts, metric)
            if retries:
                self.retries.add(retries, metric)
            if facts.stopped_by == "budget":
                self.refused.add(1, metric)
            elif facts.stopped_by == "throttle":
                self.throttled.add(1, metric)
            if record is not None and record.gave_up:
                self.gave_up.add(1, metric)
        if isinstance(result, BaseException):
            span.set_attribute("error.type", type(result).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(result).__qualname__))
        elif isinstance(result, httpx.Response):
            span.set_attribute("http.response.status_code", result.status_code)
            if result.status_code >= 500:
                span.set_attribute("error.type", str(result.status_code))
            if result.status_code >= 400:
                span.set_status(Status(StatusCode.ERROR))
        span.end()


class _ResendCount:
    """httpcore ``trace`` callback: on the attempt's first event (inside the
    attempt span of opentelemetry-instrumentation-httpx) set
    ``http.request.resend_count``; pass every event on to a caller's own."""

    __slots__ = ("call_span", "count", "done", "previous")

    def __init__(self, count: int, previous: Any, call_span: trace.Span) -> None:
        self.count = count
        self.previous = previous
        self.call_span = call_span
        self.done = False

    def _mark(self) -> None:
        if not self.done:
            self.done = True
            span = trace.get_current_span()
            # On the attempt's span; with no instrumentation making one, the
            # current span is the call's, which the count is not for.
            if span is not self.call_span and span.is_recording():
                span.set_attribute("http.request.resend_count", self.count)

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        self._mark()
        if self.previous is not None:
            self.previous(name, info)


class _AsyncResendCount(_ResendCount):
    __slots__ = ()

    async def __call__(self, name: str, info: dict[str, Any]) -> None:  # type: ignore[override]
        self._mark()
        if self.previous is not None:
            await self.previous(name, info)


def instrument(
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> None:
    """Turn reliable_client's telemetry on, for every client, transport and
    call in this process (``None``: the global providers).  Calling it
    again replaces the providers."""
    from . import __version__

    tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider)
    meter = metrics.get_meter(_SCOPE, __version__, meter_provider)
    with _lock:
        _observe.install(_Telemetry(tracer, meter))


def uninstrument() -> None:
    """Turn reliable_client's telemetry off again."""
    with _lock:
        _observe.install(None)


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return isinstance(_observe.observer, _Telemetry)
