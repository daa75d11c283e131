"""The decision core: what may be retried, and when.

Everything here is pure: functions of the request, what the attempt produced,
the policy, the clock readings and the budget's answer.  The sync and async
transports, the clients' body-phase retries and the decorator all decide
through these functions; none of them decides on its own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import tenacity
from tenacity.retry import retry_base

from ._retry_after import parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._policy import RetryPolicy

__all__ = [
    "IDEMPOTENCY_HEADER",
    "Decision",
    "RetryIfSafe",
    "Verdict",
    "body_is_replayable",
    "decide",
    "is_keyed",
    "judge_error",
    "judge_response",
    "reached_server",
]

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Set on a request that reliable_client keyed: (key header, key, resource id,
# id() of that request).
KEYS_EXTENSION = "reliable_client.keys"
REPLAYED_HEADER = "Idempotent-Replayed"

# The request never left this machine: safe to send again, whatever the method.
NEVER_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# The request may have reached the server (and may have been processed).
MAYBE_SENT: tuple[type[Exception], ...] = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.CloseError,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.RemoteProtocolError,
    httpx.NetworkError,
)


class Verdict(NamedTuple):
    """What the safety rule says of one attempt's outcome."""

    retryable: bool
    reason: str
    """Why a retry is wanted ("status 503", "ReadTimeout"), or "" if not."""
    retry_after: float | None = None
    """A valid Retry-After delay in seconds, if the response carried one."""
    blocked_by: str | None = None
    """Why an otherwise retryable outcome must not be retried."""


FINAL = Verdict(False, "")


class Decision(NamedTuple):
    """What to do next: sleep ``delay`` seconds and retry, or stop."""

    delay: float | None
    """Seconds to sleep before the next attempt; ``None`` means stop."""
    stopped_by: str | None = None
    """Why retrying ended early ("budget", "deadline", "retry_after", ...)."""


def reached_server(exc: BaseException) -> bool | None:
    """``False`` if the request never left, ``True`` if it may have reached the
    server, ``None`` if the error is not one that a retry can cure."""
    if isinstance(exc, NEVER_SENT):
        return False
    if isinstance(exc, MAYBE_SENT):
        return True
    return None


def is_keyed(request: httpx.Request, header: str = IDEMPOTENCY_HEADER) -> bool:
    """Whether the request carries an idempotency key (ours or the caller's)."""
    headers = request.headers
    return header in headers or (
        header != IDEMPOTENCY_HEADER and IDEMPOTENCY_HEADER in headers
    )


def body_is_replayable(request: httpx.Request) -> bool:
    """Whether the request body can be sent again byte for byte.

    Bodies built from bytes, str, JSON or form data are held in memory.  A
    generator, an iterator or a file-like stream is consumed by sending it.
    Multipart bodies are replayable when every file in them can seek back.
    """
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return True
    fields = getattr(stream, "fields", None)
    if fields is None or type(stream).__name__ != "MultipartStream":
        return False
    for item in fields:
        file = getattr(item, "file", None)
        if file is None:
            continue
        if isinstance(file, (bytes, str)):
            continue
        seekable = getattr(file, "seekable", None)
        if seekable is None or not seekable():
            return False
    return True


def _idempotent(request: httpx.Request, policy: RetryPolicy, keyed: bool) -> bool:
    return keyed or request.method in policy._methods


def judge_response(
    request: httpx.Request,
    response: httpx.Response,
    policy: RetryPolicy,
    *,
    keyed: bool,
    now: float,
) -> Verdict:
    """Apply the safety rule to a response.  ``now`` is Unix time (seconds),
    used to read a Retry-After given as an HTTP-date."""
    status = response.status_code
    if status not in policy._judged_statuses:
        return FINAL
    if response.headers.get(REPLAYED_HEADER, "").lower() == "true":
        # A stored result: asking again gets the same answer.
        return FINAL
    reason = f"status {status}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
    if status == 409:
        # The server still works on an earlier attempt with the same key.
        if not keyed:
            return FINAL
    elif keyed and status in (303, 422):
        # "Already exists", or "key reused with another payload".
        return FINAL
    else:
        # 429, and 503 with a Retry-After, say the request was not processed.
        not_processed = status == 429 or (status == 503 and retry_after is not None)
        if not (not_processed or _idempotent(request, policy, keyed)):
            return Verdict(False, reason, retry_after, blocked_by="not_idempotent")
    if not body_is_replayable(request):
        # The body was sent (consumed) whatever the server did with it.
        return Verdict(False, reason, retry_after, blocked_by="body_not_replayable")
    if policy.respect_retry_after and retry_after is not None:
        if retry_after > policy.max_retry_after:
            return Verdict(False, reason, retry_after, blocked_by="retry_after")
        return Verdict(True, reason, retry_after)
    return Verdict(True, reason)


def judge_error(
    request: httpx.Request,
    exc: BaseException,
    policy: RetryPolicy,
    *,
    keyed: bool,
) -> Verdict:
    """Apply the safety rule to an exception raised by an attempt.

    An error on a later leg of the attempt (a redirect hop) comes after
    ``request`` itself was answered: whatever the error, ``request`` reached
    the server.
    """
    if isinstance(exc, httpx.HTTPStatusError):
        # raise_for_status() in a response hook: the status decides, as it
        # would without the hook.
        return judge_response(
            request, exc.response, policy, keyed=keyed, now=_unix_now()
        )
    reached = reached_server(exc)
    if reached is None:
        return FINAL
    if not reached and getattr(exc, "_request", None) not in (None, request):
        reached = True
    reason = type(exc).__name__
    if not reached:
        return Verdict(True, reason)
    if not _idempotent(request, policy, keyed):
        return Verdict(False, reason, blocked_by="not_idempotent")
    if not body_is_replayable(request):
        return Verdict(False, reason, blocked_by="body_not_replayable")
    return Verdict(True, reason)


def decide(
    verdict: Verdict,
    policy: RetryPolicy,
    retry_state: tenacity.RetryCallState,
    *,
    elapsed: float,
    spend_budget: Callable[[], bool],
    admit: Callable[[], bool] | None = None,
) -> Decision:
    """Decide whether to retry after the attempt ``retry_state`` describes.

    ``retry_state.attempt_number`` is the number of attempts made so far, and
    its ``upcoming_sleep`` the previous sleep (both kept by the caller).
    ``elapsed`` is the time since the call began, in seconds.  ``admit``
    asks an AdaptiveThrottle whether the retry may be sent; it decides before
    the budget, which is asked last, so that it is only spent on a retry that
    will happen.
    """
    if not verdict.retryable:
        return Decision(None, verdict.blocked_by)
    if retry_state.attempt_number >= policy.max_attempts:
        return Decision(None, None)
    if verdict.retry_after is not None and policy.respect_retry_after:
        delay = verdict.retry_after
    else:
        delay = max(0.0, float(policy._wait(retry_state)))
    if policy.deadline is not None and elapsed + delay >= policy.deadline:
        return Decision(None, "deadline")
    if policy.stop is not None:
        retry_state.upcoming_sleep = delay
        if policy.stop(retry_state):
            return Decision(None, "stop")
    if admit is not None and not admit():
        return Decision(None, "throttle")
    if not spend_budget():
        return Decision(None, "budget")
    return Decision(delay)


class RetryIfSafe(retry_base):
    """tenacity retry strategy: the safety rule, for use with tenacity directly.

    The attempt's result must be an ``httpx.Response`` (judged by its status and
    request); an exception must carry its request (httpx errors do), and an
    ``httpx.HTTPStatusError`` is judged by the response it carries.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None:
            return False
        if outcome.failed:
            exc = outcome.exception()
            return exc is not None and judge_exception(exc, self.policy).retryable
        result: Any = outcome.result()
        if not isinstance(result, httpx.Response):
            return False
        return judge_response(
            result.request,
            result,
            self.policy,
            keyed=_keyed_as_sent(result.request),
            now=_unix_now(),
        ).retryable


def judge_exception(exc: BaseException, policy: RetryPolicy) -> Verdict:
    """Judge an exception by the request it carries, as the transport would:
    httpx transport errors by whether the request could have reached the
    server, ``httpx.HTTPStatusError`` by its response."""
    if isinstance(exc, httpx.HTTPStatusError):
        request = exc.request
        return judge_response(
            request,
            exc.response,
            policy,
            keyed=_keyed_as_sent(request),
            now=_unix_now(),
        )
    if isinstance(exc, httpx.RequestError):
        try:
            request = exc.request
        except RuntimeError:
            # No request to judge by: only a never-sent error is safe.
            if reached_server(exc) is False:
                return Verdict(True, type(exc).__name__)
            return FINAL
        return judge_error(request, exc, policy, keyed=_keyed_as_sent(request))
    return FINAL


def _keyed_as_sent(request: httpx.Request) -> bool:
    keys = request.extensions.get(KEYS_EXTENSION)
    return is_keyed(request, IDEMPOTENCY_HEADER if keys is None else keys[0])


_unix_now = time.time
