"""What a call did: the outcome record, retry events, counters and logging."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from ._decision import IDEMPOTENCY_HEADER, KEYS_EXTENSION, REPLAYED_HEADER

__all__ = [
    "ClientStats",
    "Counters",
    "Outcome",
    "RetryEvent",
    "attempts_and_existed",
    "logger",
    "outcome",
    "safe_url",
]

logger = logging.getLogger("reliable_client")
# Like any library: silent unless the application configures logging.
logger.addHandler(logging.NullHandler())

RECORD_KEY = "reliable_client.record"
_RECORD_ATTR = "_reliable_client_record"


@dataclass(frozen=True)
class Outcome:
    """How a call ended: read it with :func:`reliable_client.outcome`."""

    attempts: int
    """Requests sent for this call, the first included."""
    retries: tuple[str, ...]
    """Why each retry happened, in order ("status 503", "ReadTimeout", ...)."""
    idempotency_key: str | None
    """The Idempotency-Key the request carried, if any."""
    resource_id: str | None
    """The client-generated resource id the request carried, if any."""
    already_existed: bool
    """A 303 See Other answered a keyed create: the resource existed already."""
    replayed: bool
    """The server replayed a stored result (``Idempotent-Replayed: true``)."""
    stopped_by: str | None
    """Why retrying ended early: ``None`` if it did not, else one of
    "budget", "deadline", "retry_after", "stop", "not_idempotent",
    "body_not_replayable", "throttle" (an AdaptiveThrottle refused the
    request, or its retry)."""
    in_progress: bool = False
    """The last answer was ``409 Conflict`` to a keyed request: the server is
    still working on an attempt with this key (or a dead worker's claim has
    not yet run out).  The call has not failed: it may have happened or be
    about to; send it again later with the same key (and resource id) to
    learn its result."""


class Record:
    """The part of an outcome that cannot be read off the request and response."""

    __slots__ = (
        "attempts",
        "gave_up",
        "key_header",
        "resource_id_header",
        "retries",
        "stopped_by",
    )

    def __init__(
        self,
        attempts: int,
        retries: tuple[str, ...],
        stopped_by: str | None,
        key_header: str,
        resource_id_header: str | None,
        gave_up: bool = False,
    ) -> None:
        self.attempts = attempts
        self.retries = retries
        self.stopped_by = stopped_by
        self.key_header = key_header
        self.resource_id_header = resource_id_header
        self.gave_up = gave_up
        """The call ended on a failure a retry might have cured."""


DEFAULT_RESOURCE_ID_HEADER = "X-Client-Resource-Id"
_NO_RECORD = Record(1, (), None, IDEMPOTENCY_HEADER, DEFAULT_RESOURCE_ID_HEADER)


def attach(target: httpx.Response | BaseException, record: Record) -> None:
    if isinstance(target, httpx.Response):
        target.extensions[RECORD_KEY] = record
        return
    setattr(target, _RECORD_ATTR, record)
    if record.retries and hasattr(target, "add_note"):
        target.add_note(
            f"reliable_client: {record.attempts} attempts; retried after "
            f"{', '.join(record.retries)}"
            + (f"; stopped by {record.stopped_by}" if record.stopped_by else "")
        )


def record_of(result: object) -> Record | None:
    """The record a call attached to its response or error, if any."""
    if isinstance(result, httpx.Response):
        found: Record | None = result.extensions.get(RECORD_KEY)
        return found
    return getattr(result, _RECORD_ATTR, None)


def outcome(result: httpx.Response | BaseException) -> Outcome:
    """The outcome record of a call, from the response it returned or the
    exception it raised (an ``httpx.HTTPStatusError`` from
    ``raise_for_status()`` included).

    A response or error that did not come through reliable_client reads as one
    attempt without retries.
    """
    request: httpx.Request | None = None
    response: httpx.Response | None = None
    record: Record | None = None
    if isinstance(result, httpx.Response):
        response = result
    elif isinstance(result, httpx.HTTPStatusError):
        response = result.response
        record = getattr(result, _RECORD_ATTR, None)
    elif isinstance(result, BaseException):
        record = getattr(result, _RECORD_ATTR, None)
        if isinstance(result, httpx.RequestError):
            try:
                request = result.request
            except RuntimeError:
                request = None
    else:
        raise TypeError(
            "outcome() takes an httpx.Response or an exception, "
            f"got {type(result).__name__}"
        )
    if response is not None:
        record = record or response.extensions.get(RECORD_KEY)
        # After redirects, the call's key is on the request that began it.
        first = response.history[0] if response.history else response
        try:
            request = first.request
        except RuntimeError:
            request = None
    record = record or _NO_RECORD
    key = rid = None
    if request is not None:
        keys = request.extensions.get(KEYS_EXTENSION)
        if keys is not None:
            key, rid = keys[1], keys[2]
        else:
            key = request.headers.get(record.key_header)
            if record.resource_id_header is not None:
                rid = request.headers.get(record.resource_id_header)
    return Outcome(
        attempts=record.attempts,
        retries=record.retries,
        idempotency_key=key,
        resource_id=rid,
        already_existed=response is not None and _answered_see_other(response, record),
        replayed=response is not None
        and response.headers.get(REPLAYED_HEADER, "").lower() == "true",
        stopped_by=record.stopped_by,
        in_progress=response is not None
        and response.status_code == 409
        and key is not None,
    )


def attempts_and_existed(response: httpx.Response) -> tuple[int, bool]:
    """The attempts a call's response took, and whether it answered that the
    resource existed already (303): the part of :func:`outcome` a relay
    records, without reading headers."""
    record: Record = response.extensions.get(RECORD_KEY) or _NO_RECORD
    return record.attempts, _answered_see_other(response, record)


def _answered_see_other(response: httpx.Response, record: Record) -> bool:
    """A keyed request was answered 303 (followed or not): it existed already."""
    for hop in (*response.history, response):
        if hop.status_code == 303:
            try:
                sent = hop.request
            except RuntimeError:  # a response built without a request
                continue
            keys = sent.extensions.get(KEYS_EXTENSION)
            if (record.key_header if keys is None else keys[0]) in sent.headers:
                return True
    return False


@dataclass(frozen=True)
class RetryEvent:
    """Passed to ``on_retry`` before each retry, and when retrying is stopped
    early (by the budget, the deadline or a long Retry-After)."""

    label: str
    """What is retried: "GET http://host/path" (no query), or for the
    decorator the function's qualified name."""
    request: httpx.Request | None
    """The request retried (``None`` for a decorated function's own error)."""
    attempt: int
    """Attempts made so far."""
    reason: str
    """Why the last attempt is worth retrying ("status 503", "ReadTimeout")."""
    sleep: float | None
    """Seconds until the next attempt, or ``None`` when stopped."""
    stopped_by: str | None
    """Why no retry follows ("budget", "deadline", ...), else ``None``."""
    response: httpx.Response | None = None
    exception: BaseException | None = None


OnRetry = Callable[[RetryEvent], object]


def safe_url(url: httpx.URL) -> str:
    """scheme://host[:port]/path: what may be logged (no query, no user info)."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


def request_label(request: httpx.Request) -> str:
    """ "METHOD URL", safe to log."""
    return f"{request.method} {safe_url(request.url)}"


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of a client's (or transport's) counters."""

    calls: int
    """Calls made (a call may send several requests)."""
    attempts: int
    """Requests sent, retries included."""
    retries: int
    """Retries sent."""
    refused_by_budget: int
    """Retries the budget refused."""
    gave_up: int
    """Calls that ended on a retryable failure: out of attempts, or stopped."""
    throttled: int = 0
    """Requests an AdaptiveThrottle refused (first attempts and retries):
    never sent, so not in ``attempts``."""


class Counters:
    """Thread-safe counters behind :class:`ClientStats`.

    ``lock`` guards them; a client passes its budget's lock, so that a call's
    first attempt (counted here, deposited there) takes a single lock.
    """

    __slots__ = (
        "calls",
        "gave_up",
        "lock",
        "refused_by_budget",
        "retries",
        "throttled",
        "throttled_calls",
    )

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self.lock = lock or threading.Lock()
        self.calls = 0  # each call's first attempt: attempts = calls + retries
        self.retries = 0
        self.refused_by_budget = 0
        self.gave_up = 0
        self.throttled = 0
        self.throttled_calls = 0  # calls refused before their first attempt

    def count_call(self) -> None:
        with self.lock:
            self.calls += 1

    def count_throttled(self, *, first: bool) -> None:
        with self.lock:
            self.throttled += 1
            if first:
                self.calls += 1
                self.throttled_calls += 1

    def count_retry(self) -> None:
        with self.lock:
            self.retries += 1

    def count_end(self, *, gave_up: bool, refused: bool) -> None:
        with self.lock:
            self.gave_up += gave_up
            self.refused_by_budget += refused

    def snapshot(self) -> ClientStats:
        with self.lock:
            return ClientStats(
                calls=self.calls,
                attempts=self.calls - self.throttled_calls + self.retries,
                retries=self.retries,
                refused_by_budget=self.refused_by_budget,
                gave_up=self.gave_up,
                throttled=self.throttled,
            )


def log_fields(event: RetryEvent) -> dict[str, object]:
    """The record's structured fields (``extra=``), for JSON and structlog
    users: method, host, path (never the query), attempt, reason, sleep
    (seconds, or None when stopped) and stopped_by; a decorated call has
    ``function`` instead of method, host and path."""
    fields: dict[str, object] = {
        "attempt": event.attempt,
        "reason": event.reason,
        "sleep": event.sleep,
        "stopped_by": event.stopped_by,
    }
    request = event.request
    if request is None:
        fields["function"] = event.label
    else:
        fields["method"] = request.method
        fields["host"] = request.url.host
        fields["path"] = request.url.path
    return fields


def log_retry(event: RetryEvent) -> None:
    if event.stopped_by is None:
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "retrying %s after %s (attempt %d), sleeping %.3fs",
                event.label,
                event.reason,
                event.attempt,
                event.sleep or 0.0,
                extra=log_fields(event),
            )
    elif logger.isEnabledFor(logging.WARNING):
        logger.warning(
            "not retrying %s after %s (attempt %d): stopped by %s",
            event.label,
            event.reason,
            event.attempt,
            event.stopped_by,
            extra=log_fields(event),
        )
