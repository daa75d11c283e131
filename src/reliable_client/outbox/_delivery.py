"""What one delivery of a relay records and tells, for the sync and async
relays alike: the request it sends (or a result without sending), what its
answer or error means (by :mod:`._decision`), the counts, the log records
(never a query string, header or body) and the application's callbacks and
waiters."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import httpx

from .._outcome import attempts_and_existed, outcome, safe_url
from ._decision import Response, before_send, from_error, from_response, keep_headers
from ._model import DEAD, DELIVERED, Claimed, DeliveryCounts, OutboxEntry, Result
from ._store import headers_of, storable

if TYPE_CHECKING:
    from .._policy import RetryPolicy
    from ._outbox import Outbox

__all__ = ["DeliveryBook", "Ended", "Label", "label_of", "logger"]

# A delivery's end: the claim, its result, whether the store recorded it,
# and its label for the logs.
Ended = tuple[Claimed, Result, bool, object]

logger = logging.getLogger("reliable_client.outbox")
logger.addHandler(logging.NullHandler())


class DeliveryBook:
    """Deliveries' requests, results, counts and logs (a relay's half that
    does not deal with slots)."""

    outbox: Outbox
    policy: RetryPolicy
    _lock: threading.Lock
    _counts: Counter[str]

    # RelayCore's (the slots' half): claims given back (the lock held).
    forget: Callable[[Claimed], None]

    @staticmethod
    def store_now(claimed: Claimed) -> float:
        """The store's clock now, from the claim's reading."""
        return claimed.claimed_at + (time.monotonic() - claimed.read_at)

    def prepare(
        self, claimed: Claimed, client: httpx.Client | httpx.AsyncClient
    ) -> Result | httpx.Request:
        """The request to send, or a result without sending."""
        early = before_send(claimed, self.policy, self.store_now(claimed))
        if early is not None:
            return early
        return client.build_request(
            claimed.method,
            claimed.url,
            headers=list(claimed.headers),
            content=claimed.body,
        )

    def answered(
        self, claimed: Claimed, response: httpx.Response, body: bytes
    ) -> Result:
        attempts, existed = attempts_and_existed(response)
        kept: Response = (
            response.status_code,
            keep_headers(response.headers.multi_items()),
            body[: self.outbox.max_response_body],
        )
        return from_response(
            claimed,
            kept,
            attempts,
            self.policy,
            self.store_now(claimed),
            already_existed=existed,
        )

    def failed(self, claimed: Claimed, error: BaseException) -> Result:
        attempts = outcome(error).attempts if isinstance(error, Exception) else 1
        if not isinstance(error, httpx.HTTPError):
            logger.error(
                "outbox entry %s: the client raised %s; redelivering",
                claimed.id,
                type(error).__name__,
                exc_info=error,
            )
        return from_error(
            claimed, error, attempts, self.policy, self.store_now(claimed)
        )

    def done(self, ended: Sequence[Ended]) -> None:
        """Count, log and tell the application (callbacks, waiters): the
        deliveries whose results were recorded, or not."""
        names = []
        with self._lock:
            for claimed, result, recorded, _ in ended:
                self.forget(claimed)
                name = {"pending": "rescheduled"}.get(result.state, result.state)
                name = name if recorded else "lost"
                self._counts[name] += 1
                names.append(name)
        self.outbox._count(names, sum(e[1].attempts for e in ended))
        for (claimed, result, _, label), name in zip(ended, names, strict=True):
            self._tell(claimed, result, name, label)

    def _tell(self, claimed: Claimed, result: Result, name: str, label: object) -> None:
        if name == "lost":
            logger.warning(
                "%s (entry %s): result not recorded, another relay holds it now",
                label,
                claimed.id,
            )
            return
        if result.state == DELIVERED:
            logger.info(
                "delivered %s (entry %s): status %s after %d attempt(s)",
                label,
                claimed.id,
                result.status,
                result.attempts,
            )
        elif result.state == DEAD:
            logger.warning(
                "dead %s (entry %s) after %d deliveries: %s",
                label,
                claimed.id,
                claimed.deliveries,
                result.reason,
            )
        else:
            logger.info(
                "redelivering %s (entry %s) in %.3fs after %s (delivery %d)",
                label,
                claimed.id,
                result.delay or 0.0,
                result.reason,
                claimed.deliveries,
            )
        if result.state != "pending" and self.outbox._told(claimed.id):
            self.outbox._finished(self.entry_of(claimed, result))

    def entry_of(self, claimed: Claimed, result: Result) -> OutboxEntry:
        """The entry as just recorded (no read from the store)."""
        now = self.store_now(claimed)
        return OutboxEntry(
            id=uuid.UUID(claimed.id),
            idempotency_key=claimed.idempotency_key,
            resource_id=claimed.resource_id,
            method=claimed.method,
            url=claimed.url,
            group=claimed.group,
            state=result.state,
            attempts=claimed.attempts + result.attempts,
            deliveries=claimed.deliveries,
            last_error=storable(result.reason),
            status=result.status,
            response_headers=headers_of(result.response_headers),
            response_body=result.response_body,
            already_existed=result.already_existed,
            created_at=claimed.created_at,
            delivered_at=now if result.state == DELIVERED else None,
        )

    def released(self, claimed: Claimed) -> None:
        with self._lock:
            self.forget(claimed)
            self._counts["released"] += 1
        self.outbox._count(["released"], 0)

    def counts(self) -> DeliveryCounts:
        with self._lock:
            c = self._counts
            return DeliveryCounts(
                delivered=c["delivered"],
                dead=c["dead"],
                rescheduled=c["rescheduled"],
                lost=c["lost"],
                released=c["released"],
            )


class Label:
    """ "METHOD URL" without query or user info, made only when logged."""

    __slots__ = ("_claimed", "_request")

    def __init__(self, claimed: Claimed, request: httpx.Request | None) -> None:
        self._claimed = claimed
        self._request = request

    def __str__(self) -> str:
        return label_of(self._claimed, self._request)


def label_of(claimed: Claimed, request: httpx.Request | None) -> str:
    """ "METHOD URL" without query or user info, safe to log."""
    if request is not None:
        return f"{request.method} {safe_url(request.url)}"
    return f"{claimed.method} {claimed.url.split('?', 1)[0]}"
