"""The relays' decision core: what a delivery's outcome means and what to
record.  Pure functions, shared by the sync and async relays (only their
I/O differs), built on the client's own decision core
(:func:`reliable_client._decision.decide`) for the redelivery schedule.

- 2xx and 303 deliver the entry (303: it existed already).
- Another 4xx, but 408, 409, 425 and 429, is dead at once, response kept.
- Anything else (408/409/425/429, 5xx, other statuses, transport errors, an
  error of the client) redelivers by the ``redelivery`` policy: its
  ``max_attempts`` counts deliveries, its ``deadline`` runs from the entry's
  ``created_at`` (or from a retry by hand), and when it gives up the entry
  is dead.
- An entry sent before whose deadline has passed is never sent again (the
  server may have forgotten its key): it is dead without a request.
"""

from __future__ import annotations

import tenacity

from .._decision import Verdict, decide
from .._policy import RetryPolicy
from .._retry_after import parse_retry_after
from ._model import DEAD, DELIVERED, PENDING, Claimed, Result, State

__all__ = [
    "DEFAULT_HORIZON",
    "DEFAULT_REDELIVERY",
    "MAX_HORIZON",
    "Response",
    "before_send",
    "check_redelivery",
    "from_error",
    "from_response",
]

#: Servers keep keys at least this long (seconds): no resend after it.
MAX_HORIZON = 86_400.0
#: The redelivery deadline when the policy sets none: 23 h, an hour's margin.
DEFAULT_HORIZON = 82_800.0
#: Seconds apart, then up to an hour apart; dead after 23 h.
DEFAULT_REDELIVERY = RetryPolicy(
    max_attempts=1_000,  # the deadline ends it first
    backoff_initial=2.0,
    backoff_multiplier=2.0,
    backoff_max=3_600.0,
    jitter="equal",
    max_retry_after=3_600.0,
    deadline=DEFAULT_HORIZON,
)
# Answers of the 4xx class that say "not now", not "never".
_NOT_FINAL_4XX = frozenset({408, 409, 425, 429})
# Never kept: a session handed to the relay is a secret at rest.
_DROPPED_HEADERS = frozenset({"set-cookie", "set-cookie2"})
# The shortest wait before a redelivery, so one pass never sends it twice.
_MIN_DELAY = 0.001
_RETRYING = tenacity.Retrying()

Response = tuple[int, tuple[tuple[str, str], ...], bytes]
"""A final response as recorded: status, headers, the (capped) body."""


def check_redelivery(policy: object) -> RetryPolicy:
    """The policy a relay redelivers by (a deadline of at most 24 h set)."""
    if not isinstance(policy, RetryPolicy):
        raise TypeError(
            f"Outbox(redelivery=...) must be a RetryPolicy, got {type(policy).__name__}"
        )
    if policy.deadline is None:
        return policy.replace(deadline=DEFAULT_HORIZON)
    if policy.deadline > MAX_HORIZON:
        raise ValueError(
            f"Outbox(redelivery=...).deadline must be at most {MAX_HORIZON:g} s "
            f"(24 h, the least time servers keep keys), got {policy.deadline:g}: "
            "a key must never be sent again after the server may have forgotten it"
        )
    return policy


def keep_headers(pairs: object) -> tuple[tuple[str, str], ...]:
    """A response's headers as kept (``Set-Cookie`` dropped)."""
    assert isinstance(pairs, (list, tuple))
    return tuple((n, v) for n, v in pairs if n.lower() not in _DROPPED_HEADERS)


def before_send(claimed: Claimed, policy: RetryPolicy, now: float) -> Result | None:
    """A result without sending when the entry must not be sent again."""
    assert policy.deadline is not None
    if claimed.deliveries > 1 and now - claimed.horizon_from >= policy.deadline:
        return Result(
            DEAD,
            0,
            reason=(
                f"not sent again: {policy.deadline:g} s passed since it was "
                "enqueued (the server may have forgotten its key)"
            ),
        )
    return None


def from_response(
    claimed: Claimed,
    response: Response,
    attempts: int,
    policy: RetryPolicy,
    now: float,
    *,
    already_existed: bool = False,
) -> Result:
    """What a final response means for the entry (``already_existed``: the
    client saw a 303 to it, followed or not)."""
    status, headers, _ = response
    if 200 <= status < 300 or status == 303 or already_existed:
        existed = already_existed or status == 303
        return _final(DELIVERED, attempts, None, response, already_existed=existed)
    reason = f"status {status}"
    if 400 <= status < 500 and status not in _NOT_FINAL_4XX:
        return _final(DEAD, attempts, reason, response)
    retry_after = parse_retry_after(_header(headers, "retry-after"), now)
    if retry_after is not None:
        retry_after = min(retry_after, policy.max_retry_after)
    verdict = Verdict(True, reason, retry_after)
    return _redeliver(claimed, verdict, attempts, policy, now, response)


def from_error(
    claimed: Claimed,
    error: BaseException,
    attempts: int,
    policy: RetryPolicy,
    now: float,
) -> Result:
    """What an error of the delivery (no final response) means."""
    reason = type(error).__name__
    return _redeliver(claimed, Verdict(True, reason), attempts, policy, now, None)


def _final(
    state: State,
    attempts: int,
    reason: str | None,
    response: Response | None,
    *,
    already_existed: bool = False,
) -> Result:
    if response is None:
        return Result(state, attempts, reason=reason)
    status, headers, body = response
    return Result(
        state,
        attempts,
        reason=reason,
        status=status,
        response_headers=headers,
        response_body=body,
        already_existed=already_existed,
    )


def _redeliver(
    claimed: Claimed,
    verdict: Verdict,
    attempts: int,
    policy: RetryPolicy,
    now: float,
    response: Response | None,
) -> Result:
    state = tenacity.RetryCallState(_RETRYING, None, (), {})
    state.attempt_number = claimed.deliveries
    decision = decide(
        verdict,
        policy,
        state,
        elapsed=now - claimed.horizon_from,
        spend_budget=lambda: True,
    )
    if decision.delay is None:
        why = decision.stopped_by or f"{claimed.deliveries} deliveries"
        reason = f"{verdict.reason}; redelivery gave up ({why})"
        return _final(DEAD, attempts, reason, response)
    return Result(
        PENDING,
        attempts,
        reason=verdict.reason,
        delay=max(decision.delay, _MIN_DELAY),
    )


def _header(pairs: tuple[tuple[str, str], ...], name: str) -> str | None:
    for key, value in pairs:
        if key.lower() == name:
            return value
    return None
