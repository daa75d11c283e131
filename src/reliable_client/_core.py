"""The retry engine shared by the sync and async transports.

A transport sends the first attempt itself and looks at its status, which
costs a set lookup.  Only when that attempt failed does it create a
:class:`Call`, which keeps the state of
the retries and asks the decision core (:mod:`._decision`) what to do.  The
sync and async loops differ only in how they send, read and sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

import httpx
import tenacity

from . import _observe, _testing_state
from ._budget import RetryBudget
from ._context import outer_layer
from ._deadline import Remaining, bound_timeouts
from ._decision import (
    FINAL,
    IDEMPOTENCY_HEADER,
    KEYS_EXTENSION,
    Decision,
    Verdict,
    decide,
    is_keyed,
    judge_error,
    judge_response,
)
from ._idempotency import Idempotency
from ._outcome import (
    DEFAULT_RESOURCE_ID_HEADER,
    Counters,
    OnRetry,
    Record,
    RetryEvent,
    attach,
    log_retry,
    logger,
)
from ._policy import NO_RETRY, RetryPolicy
from ._throttle import (
    PROBE,
    REFUSE,
    AdaptiveThrottle,
    ThrottledError,
    accepted_error,
    accepted_status,
)
from ._throttle import accepted as throttle_accepted

__all__ = [
    "ATTEMPT",
    "ATTEMPT_KEY",
    "OUTER_KEY",
    "RETRY_KEY",
    "Call",
    "Discard",
    "Read",
    "RetryCore",
    "Step",
    "resolve_policy",
]

RETRY_KEY = "retry"
ATTEMPT_KEY = "reliable_client.attempt"
"""Request extension: which attempt of its call this request is (1 for the
first, 2 for the first retry, ...).  Set before every attempt."""
THROTTLE_KEY = "reliable_client.throttle"
"""Request extension, set when a throttle let a call's first attempt go: the
host's history in the throttle (to count an accept in), or, for a probe,
(the history's key, True), so that its answer is reported to the throttle
(an accepted probe ends the throttling)."""
OUTER_KEY = "reliable_client.outer"
"""Request extension, set while a reliable_client layer (a client, or a
transport) sends the request: it owns the request's retries and keys, so a
``RetryTransport`` below it makes one attempt and adds nothing."""


class _Attempt:
    def __repr__(self) -> str:
        return "ATTEMPT"


ATTEMPT = _Attempt()
"""Step: make the next attempt (send the request, call the function)."""


class Read(NamedTuple):
    """Step: read this response's body into memory (by ``deadline``, a
    ``clock()`` reading, when not ``None``)."""

    response: httpx.Response
    request: httpx.Request
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic


class Discard(NamedTuple):
    """Step: close this response, which a retry replaces."""

    response: httpx.Response
    request: httpx.Request | None = None


Step = _Attempt | Read | Discard | float

# tenacity wants a retrying object in its call state; none of ours uses it.
_RETRYING = tenacity.Retrying()


def _forget_last_call(request: httpx.Request, resource_id_header: str | None) -> None:
    """A Request sent again is another call: it gets fresh keys (not the ones
    reliable_client gave it last time; a caller's own stay) and a fresh
    deadline."""
    extensions = request.extensions
    timeouts = extensions.get("timeout")
    if isinstance(timeouts, Remaining):
        extensions["timeout"] = dict(timeouts.configured)
    keys = extensions.get(KEYS_EXTENSION)
    if keys is None or keys[3] != id(request):
        return  # a redirect hop shares the extensions: its keys travel on
    del extensions[KEYS_EXTENSION]
    header, key, rid, _ = keys
    headers = request.headers
    if headers.get(header) == key:
        del headers[header]
        if (
            resource_id_header is not None
            and rid is not None
            and headers.get(resource_id_header) == rid
        ):
            del headers[resource_id_header]


def _host_of(request: httpx.Request) -> str:
    """The request's host as sent (an IDNA name stays in its ASCII form),
    without decoding it again: the throttle's history key."""
    try:
        host: str = request.url._uri_reference.host
        return host
    except AttributeError:  # pragma: no cover - another httpx's URL
        return request.url.host


_POP = object()


def resolve_policy(value: object, where: str) -> RetryPolicy:
    """A ``retry=`` value as a policy: a RetryPolicy, or False for no retries."""
    if isinstance(value, RetryPolicy):
        return value
    if value is False:
        return NO_RETRY
    raise TypeError(
        f"{where} must be a RetryPolicy or False, got {type(value).__name__}"
    )


class RetryCore:
    """Configuration and bookkeeping shared by a transport's calls."""

    def __init__(
        self,
        *,
        retry: RetryPolicy | bool,
        budget: RetryBudget | None,
        idempotency: Idempotency | None,
        on_retry: OnRetry | None,
        clock: Callable[[], float] | None,
        owner: str,
        throttle: AdaptiveThrottle | None = None,
    ) -> None:
        self.policy = resolve_policy(
            RetryPolicy() if retry is True else retry, f"{owner}(retry=...)"
        )
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(
                f"{owner}(budget=...) must be a RetryBudget or None, "
                f"got {type(budget).__name__}"
            )
        if idempotency is not None and not isinstance(idempotency, Idempotency):
            raise TypeError(
                f"{owner}(idempotency=...) must be an Idempotency or None, "
                f"got {type(idempotency).__name__}"
            )
        if on_retry is not None and not callable(on_retry):
            raise TypeError(f"{owner}(on_retry=...) must be callable")
        if clock is not None and not callable(clock):
            raise TypeError(f"{owner}(clock=...) must be callable")
        if throttle is not None and not isinstance(throttle, AdaptiveThrottle):
            raise TypeError(
                f"{owner}(throttle=...) must be an AdaptiveThrottle or None, "
                f"got {type(throttle).__name__}"
            )
        self.throttle = throttle
        self.budget = budget if budget is not None else RetryBudget()
        self.idempotency = idempotency
        self.on_retry = on_retry
        self.clock = clock or time.monotonic
        self.counters = Counters(self.budget._lock)
        self.key_header = idempotency.header if idempotency else IDEMPOTENCY_HEADER
        self.resource_id_header = (
            idempotency.resource_id_header
            if idempotency
            else DEFAULT_RESOURCE_ID_HEADER
        )
        # The record of a call that succeeded at once: shared, never copied.
        self.first_try = Record(1, (), None, self.key_header, self.resource_id_header)
        # One clock reading serves the call's start and the budget's deposit.
        self._budget_reads_clock = self.budget._clock is self.clock

    def prepare(
        self, request: httpx.Request, override: object = None
    ) -> tuple[RetryPolicy, float]:
        """Ready ``request`` for its first attempt: mark it as ours, give it
        its keys; return the policy to use (``override``, a per-call
        ``retry=``, before the request's ``extensions["retry"]``) and the
        call's start, a ``clock()`` reading."""
        # A copy: the caller's dict may be shared by other requests.
        extensions = dict(request.extensions)
        policy = self.policy
        if override is not None:
            policy = resolve_policy(override, "retry=")
        elif RETRY_KEY in extensions:
            policy = resolve_policy(extensions[RETRY_KEY], 'extensions["retry"]')
        if ATTEMPT_KEY in extensions:  # sent before (or a redirect hop)
            request.extensions = extensions
            _forget_last_call(request, self.resource_id_header)
        extensions[OUTER_KEY] = True
        extensions[ATTEMPT_KEY] = 1
        request.extensions = extensions
        idempotency = self.idempotency
        if idempotency is not None and request.method in idempotency._methods:
            idempotency.apply(request)
        layer = outer_layer.get()
        if layer is not None:
            # An enclosing @retry owns the retries (and the budget deposit) of
            # this call: one attempt here, within the decorator's deadline
            # (and the client's, if that is shorter).
            self.counters.count_call()
            if self.throttle is not None and not layer.throttled:
                # The decorator has no throttle of its own: this one decides
                # for the request's one attempt.
                self._admit_request(request)
            started = self.clock()
            left = policy.deadline
            if layer.deadline_at is not None:
                outer = max(layer.deadline_at - time.monotonic(), 0.001)
                left = outer if left is None else min(left, outer)
            if left is None:
                return NO_RETRY, started
            # This one attempt's deadline: every phase and the body included.
            bound_timeouts(request, started + left, self.clock)
            return NO_RETRY.replace(deadline=left), started
        now = None
        throttle = self.throttle
        if throttle is not None:
            now = self.clock()
            # Inline (every request pays it): ask the throttle, keep what it
            # answered on the request for the answer to be told.
            key = request.url._uri_reference.host if throttle.per_host else ""
            entered = throttle.enter(
                key, now if throttle._clock is self.clock else None
            )
            if entered.__class__ is not int:
                request.extensions[THROTTLE_KEY] = entered
            else:
                self.refuse_or_probe(request, key, entered)
        host = request.url.host if self.budget.per_host else None
        policy, started = self.begin_call(policy, host, now)
        if policy.deadline is not None:
            bound_timeouts(request, started + policy.deadline, self.clock)
        return policy, started

    def _admit_request(self, request: httpx.Request) -> None:
        """Ask the throttle before a request's first attempt (in a decorated
        call without a throttle of its own)."""
        throttle = self.throttle
        assert throttle is not None
        key = _host_of(request) if throttle.per_host else ""
        entered = throttle.enter(key)
        if entered.__class__ is not int:  # admitted: the history to tell
            request.extensions[THROTTLE_KEY] = entered
        else:
            self.refuse_or_probe(request, key, entered)

    def refuse_or_probe(self, request: httpx.Request, key: str, verdict: int) -> None:
        """The throttle did not simply admit a request's first attempt: a
        probe (or, in testing mode, an admission) is marked for its answer
        to be told; a refused one raises ThrottledError."""
        if verdict == REFUSE:
            self.refuse(request)
        request.extensions[THROTTLE_KEY] = (key, verdict == PROBE)

    def admit_first(self) -> bool:
        """Ask the throttle before a decorated call's first attempt (its
        attempts share one history); return whether it goes as a probe."""
        assert self.throttle is not None
        verdict = self.throttle.admit("")
        if verdict == REFUSE:
            self.refuse(None)
        return verdict == PROBE

    def refuse(self, request: httpx.Request | None) -> None:
        """A first attempt the throttle refused: ThrottledError, never sent
        (nor counted as sent, nor deposited in the budget)."""
        self.counters.count_throttled(first=True)
        error = ThrottledError(
            "refused by the client's AdaptiveThrottle: the server accepted too "
            "few of the latest requests",
            request=request,
        )
        attach(
            # Not one request was sent.
            error,
            Record(0, (), "throttle", self.key_header, self.resource_id_header),
        )
        raise error

    def record_first(
        self, request: httpx.Request, accepted: bool | None, admitted: Any = _POP
    ) -> None:
        """Tell the throttle what the server did with a call's first attempt
        (if it asked it: an enclosing @retry with a throttle decides
        instead).  ``admitted``: what the throttle answered, if the caller
        took it off the request already."""
        if admitted is _POP:
            admitted = request.extensions.pop(THROTTLE_KEY, None)
        if admitted is None:
            return
        assert self.throttle is not None
        if admitted.__class__ is not tuple:  # admitted plainly: no lookup
            if accepted:
                throttle_accepted(admitted)
            else:
                self.throttle.failed(admitted, gave_up=accepted is None)
            return
        self.throttle.record(admitted[0], accepted, admitted[1])

    def begin_call(
        self, policy: RetryPolicy, host: str | None, started: float | None = None
    ) -> tuple[RetryPolicy, float]:
        """Count a call and its first attempt; return ``policy`` as testing
        mode allows it, and the call's start (a ``clock()`` reading, taken
        here unless given)."""
        if started is None:
            started = self.clock()
        budget = self.budget
        # One lock for the call's count and its deposit (the counters share
        # the budget's lock); acquire/release costs half a with block.
        lock = budget._lock
        lock.acquire()
        try:
            self.counters.calls += 1
            budget._deposit(host, started if self._budget_reads_clock else None)
        finally:
            lock.release()
        if _testing_state._current is not None:
            capped = _testing_state.cap_attempts(policy.max_attempts)
            if capped != policy.max_attempts:
                policy = policy.replace(max_attempts=capped)
        return policy, started


class Call:
    """The retry state of one call, made after its first attempt failed."""

    __slots__ = (
        "aio",
        "before_retry",
        "core",
        "gave_up",
        "judge",
        "keyed",
        "label",
        "policy",
        "probe",
        "request",
        "retries",
        "started",
        "state",
        "stopped_by",
        "unrecorded",
    )

    def __init__(
        self,
        core: RetryCore,
        request: httpx.Request | None,
        policy: RetryPolicy,
        started: float,
        *,
        label: str = "",
        judge: Callable[[BaseException], Verdict] | None = None,
        before_retry: Callable[[httpx.Request, httpx.Response], None] | None = None,
        aio: bool = False,
    ) -> None:
        self.core = core
        self.aio = aio
        """Whether the call's I/O is async (for telemetry's httpcore hook)."""
        self.before_retry = before_retry
        """Called with the request and the response a retry replaces, before
        the retry is sent (a client brings the cookie jar up to date)."""
        self.request = request
        self.policy = policy
        self.started = started
        self.label = label
        self.judge = judge
        self.keyed = request is not None and is_keyed(request, core.key_header)
        self.retries: list[str] = []
        self.stopped_by: str | None = None
        self.gave_up = False
        self.probe = False  # the throttle let the next attempt through as a probe
        self.unrecorded = False  # the throttle awaits this attempt's answer
        state = tenacity.RetryCallState(_RETRYING, None, (), {})
        state.start_time = started
        self.state = state

    @property
    def deadline_at(self) -> float | None:
        """The deadline as a ``core.clock()`` reading, if the policy has one."""
        deadline = self.policy.deadline
        return None if deadline is None else self.started + deadline

    def steps(
        self, result: Any, error: Exception | None, *, read_body: bool = False
    ) -> Generator[Step, Any, Any]:
        """The retry loop without its I/O, for the sync and async drivers
        (see :meth:`_steps`).  A driver interrupted while a retry was out (a
        cancellation, KeyboardInterrupt) closes it: that retry was not
        accepted."""
        try:
            return (yield from self._steps(result, error, read_body))
        except GeneratorExit:
            self._record(None)  # the caller gave up; once: nothing if told
            raise

    def _steps(
        self, result: Any, error: Exception | None, read_body: bool
    ) -> Generator[Step, Any, Any]:
        """The retry loop without its I/O.

        Starts from the first attempt's ``result`` or ``error``; yields what to
        do next (:data:`ATTEMPT`, a :class:`Read`, a :class:`Discard`, or a
        delay in seconds to sleep) and is sent what happened: ``(result,
        error)`` after an attempt, the error (or ``None``) after a read.
        Returns the final result, or raises the final error.
        """
        while True:
            replaced = None
            if error is None:
                delay = self._after_result(result)
                if delay is None:
                    if read_body:
                        assert self.request is not None
                        error = yield Read(
                            result, self.request, self.deadline_at, self.core.clock
                        )
                        if error is not None:
                            continue  # a failure mid-body is this attempt's outcome
                    self._record(
                        not isinstance(result, httpx.Response)
                        or accepted_status(result.status_code)
                    )
                    self.finish(result)
                    return result
                yield Discard(result, self.request)
                replaced = result
            else:
                delay = self._after_error(error)
                if delay is None:
                    self.finish(error)
                    raise error
            yield delay
            deadline_at = self.deadline_at
            if deadline_at is not None and self.core.clock() >= deadline_at:
                # The wait, or reading the discarded body, took what was left:
                # a retry sent now would be cut at once.  The deadline ends it.
                self.retries.pop()
                self.stopped_by = "deadline"
                self.gave_up = True
                if error is None:
                    self.finish(replaced)
                    return replaced
                self.finish(error)
                raise error
            self.next_attempt(replaced)
            self.unrecorded = True
            result, error = yield ATTEMPT

    def _after_result(self, result: Any) -> float | None:
        """Seconds to sleep before retrying, or ``None`` to return ``result``."""
        if self.request is None or not isinstance(result, httpx.Response):
            return None  # a decorated function's return value is final
        verdict = judge_response(
            self.request, result, self.policy, keyed=self.keyed, now=time.time()
        )
        if not verdict.retryable and verdict.blocked_by is None:
            return None
        self._record(accepted_status(result.status_code))
        self._set_outcome(result, failed=False)
        return self._decide(verdict, response=result)

    def _after_error(self, exc: Exception) -> float | None:
        """Seconds to sleep before retrying, or ``None`` to raise ``exc``."""
        if self.judge is not None:
            verdict = self.judge(exc)
        elif self.request is not None:
            verdict = judge_error(self.request, exc, self.policy, keyed=self.keyed)
        else:  # pragma: no cover - every Call has a request or a judge
            verdict = FINAL
        self._record(accepted_error(exc))
        if not verdict.retryable and verdict.blocked_by is None:
            return None
        self._set_outcome(exc, failed=True)
        return self._decide(verdict, exception=exc)

    def _set_outcome(self, value: Any, *, failed: bool) -> None:
        state = self.state
        future = tenacity.Future(state.attempt_number)
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)
        state.outcome = future
        state.outcome_timestamp = self.core.clock()

    def _decide(
        self,
        verdict: Verdict,
        *,
        response: httpx.Response | None = None,
        exception: BaseException | None = None,
    ) -> float | None:
        core = self.core
        state = self.state
        elapsed = (state.outcome_timestamp or self.started) - self.started
        host = (
            self.request.url.host
            if self.request is not None and core.budget.per_host
            else None
        )
        decision: Decision = decide(
            verdict,
            self.policy,
            state,
            elapsed=elapsed,
            spend_budget=lambda: core.budget.try_spend(host),
            admit=None if core.throttle is None else self._admit,
        )
        self.stopped_by = decision.stopped_by
        # Stopping here (out of attempts, or stopped early) ends the call on a
        # failure that a retry might have cured.
        self.gave_up = decision.delay is None
        if decision.delay is not None or decision.stopped_by in _REPORTED_STOPS:
            event = RetryEvent(
                label=self.label,
                request=self.request,
                attempt=state.attempt_number,
                reason=verdict.reason,
                sleep=decision.delay,
                stopped_by=decision.stopped_by,
                response=response,
                exception=exception,
            )
            log_retry(event)
            observer = _observe.observer
            if observer is not None:
                observer.retry(event)
            if core.on_retry is not None:
                try:
                    core.on_retry(event)
                except Exception:
                    # A broken callback must not leak the response being
                    # discarded, nor change what the caller gets.
                    logger.exception("on_retry callback raised; ignored")
        if decision.delay is None:
            return None
        self.retries.append(verdict.reason)
        state.upcoming_sleep = decision.delay
        state.idle_for += decision.delay
        return decision.delay

    def _throttle_key(self) -> str:
        throttle = self.core.throttle
        assert throttle is not None
        # A decorated call has no request: its attempts share one history.
        if self.request is None or not throttle.per_host:
            return ""
        return _host_of(self.request)

    def _admit(self) -> bool:
        """The throttle's answer for the retry about to be decided."""
        throttle = self.core.throttle
        assert throttle is not None
        verdict = throttle.admit(self._throttle_key())
        if verdict == REFUSE:
            self.core.counters.count_throttled(first=False)
            return False
        self.probe = verdict == PROBE
        return True

    def _record(self, accepted: bool | None) -> None:
        """Tell the throttle what became of a retry this call sent (once;
        the first attempt's is its caller's to tell)."""
        if not self.unrecorded:
            return
        self.unrecorded = False
        throttle = self.core.throttle
        if throttle is not None:
            throttle.record(self._throttle_key(), accepted, self.probe)
        self.probe = False

    def next_attempt(self, replaced: httpx.Response | None = None) -> None:
        """Book the attempt about to be sent (after ``replaced``, the response
        it replaces, if there was one)."""
        state = self.state
        state.prepare_for_next_attempt()
        self.core.counters.count_retry()
        request = self.request
        if request is not None:
            request.extensions[ATTEMPT_KEY] = state.attempt_number
            observer = _observe.observer
            if observer is not None:
                observer.resend(request, state.attempt_number, self.aio)
            if replaced is not None and self.before_retry is not None:
                self.before_retry(request, replaced)

    def finish(self, target: object) -> None:
        """Attach the record to what the caller gets, and count the ending."""
        core = self.core
        core.counters.count_end(
            gave_up=self.gave_up, refused=self.stopped_by == "budget"
        )
        if self.gave_up:
            core.budget.record_gave_up()
        if isinstance(target, BaseException):
            if not (self.gave_up or self.state.attempt_number > 1):
                return  # an error never worth a retry passes through untouched
        elif not isinstance(target, httpx.Response):
            return  # a decorated function's own return value
        attach(
            target,
            Record(
                self.state.attempt_number,
                tuple(self.retries),
                self.stopped_by,
                core.key_header,
                core.resource_id_header,
                self.gave_up,
            ),
        )


_REPORTED_STOPS = frozenset(
    {"budget", "deadline", "retry_after", "stop", "body_not_replayable", "throttle"}
)
