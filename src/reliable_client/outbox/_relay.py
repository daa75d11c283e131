"""The sync relay: ``Outbox.deliver`` (one pass) and ``Outbox.run`` (until
stopped), deliveries in a thread pool through a ``reliable_client.Client``.

The main thread claims entries as slots free up, renews the leases of what
is running, and on stop (or SIGTERM) claims nothing more, gives back what
it has not sent yet and waits for what is being sent to finish and be
recorded.  What a result means is decided by the shared core.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx

from ._model import Claimed, DeliveryCounts, OutboxError, Result
from ._relay_core import (
    PURGE_BATCHES,
    RelayCore,
    label_of,
    logger,
    record_delays,
)

if TYPE_CHECKING:
    from ._outbox import Outbox

__all__ = ["SyncRelay"]

# The longest the main loop sleeps before looking at ``stop`` again.
_STOP_CHECK = 0.1


class SyncRelay:
    """One ``deliver`` or ``run`` of an outbox through a sync client."""

    def __init__(
        self,
        outbox: Outbox,
        client: httpx.Client,
        *,
        concurrency: int,
        poll_interval: float,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.core = RelayCore(outbox, concurrency)
        self.poll_interval = poll_interval
        self._cond = threading.Condition()
        self._changed = False
        self._stopping = threading.Event()

    def wake(self) -> None:
        """Look for work now (an entry was enqueued, a delivery ended)."""
        with self._cond:
            self._changed = True
            self._cond.notify_all()

    # -- the loop -------------------------------------------------------------

    def deliver(self, limit: int | None) -> DeliveryCounts:
        cutoff = self.core.store.now()
        return self._loop(limit=limit, stop=None, cutoff=cutoff)

    def run(self, stop: threading.Event | None) -> DeliveryCounts:
        stop = stop if stop is not None else threading.Event()
        with _sigterm_sets(stop, self.wake):
            return self._loop(limit=None, stop=stop, cutoff=None)

    def _loop(
        self,
        *,
        limit: int | None,
        stop: threading.Event | None,
        cutoff: float | None,
    ) -> DeliveryCounts:
        core = self.core
        one_pass = stop is None
        started = 0
        failure: OutboxError | None = None
        pause = record_delays()
        pool = ThreadPoolExecutor(
            max_workers=2 * core.concurrency, thread_name_prefix="outbox-relay"
        )
        self.outbox._relays.add(self)
        try:
            while stop is None or not stop.is_set():
                self._renew()
                if not one_pass and core.purge_due(time.monotonic()):
                    self._purge()
                want, exclude = core.wanted(time.monotonic())
                if limit is not None:
                    want = min(want, limit - started)
                drained = limit is not None and started >= limit
                if want > 0:
                    try:
                        batch = core.store.claim(
                            core.holder,
                            want,
                            core.lease,
                            cutoff=cutoff,
                            exclude=exclude,
                        )
                    except OutboxError as exc:
                        if one_pass:
                            failure = exc
                            break
                        logger.warning("outbox relay: claiming failed: %s", exc)
                        self._wait(pause())
                        continue
                    pause = record_delays()
                    for claimed in batch:
                        core.hold(claimed, time.monotonic())
                        pool.submit(self._deliver_one, claimed)
                    started += len(batch)
                    if batch and len(batch) == want:
                        continue  # there may be more
                    if exclude and not batch:
                        core.overflow_found_nothing(
                            time.monotonic(), self.poll_interval
                        )
                    drained = drained or not exclude
                if one_pass and drained and core.busy() == 0:
                    break
                self._wait(core.next_wake(time.monotonic(), self.poll_interval))
        finally:
            self._stopping.set()
            while core.busy():
                self._renew()
                self._wait(core.next_wake(time.monotonic(), _STOP_CHECK))
            pool.shutdown(wait=True)
            self.outbox._relays.discard(self)
        if failure is not None:
            raise failure
        return core.counts()

    def _wait(self, seconds: float) -> None:
        with self._cond:
            if not self._changed:
                self._cond.wait(min(seconds, _STOP_CHECK))
            self._changed = False

    def _purge(self) -> None:
        try:
            self.outbox.purge(max_batches=PURGE_BATCHES)
        except OutboxError as exc:
            logger.warning("outbox relay: purging old entries failed: %s", exc)

    def _renew(self) -> None:
        core = self.core
        asked = core.renewals(time.monotonic())
        if not asked:
            return
        try:
            kept = core.store.renew(asked, core.lease)
        except OutboxError as exc:
            logger.warning("outbox relay: renewing leases failed: %s", exc)
            return
        core.renewed(asked, kept)

    # -- one delivery ------------------------------------------------------------

    def _deliver_one(self, claimed: Claimed) -> None:
        core = self.core
        request: httpx.Request | None = None
        try:
            if self._stopping.is_set():
                self._release(claimed)
                return
            try:
                plan = core.prepare(claimed, self.client)
                if isinstance(plan, Result):
                    result = plan
                else:
                    request = plan
                    result = self._send(claimed, request)
            except Exception as exc:
                result = core.failed(claimed, exc)
            recorded = self._record(claimed, result)
            core.done(claimed, result, recorded, label_of(claimed, request))
        except BaseException:
            core.let_go(claimed)
            logger.exception("outbox relay: delivering entry %s failed", claimed.id)
        finally:
            self.wake()

    def _send(self, claimed: Claimed, request: httpx.Request) -> Result:
        core = self.core
        response = self.client.send(request, stream=True)
        try:
            body = _read(response, self.outbox.max_response_body)
        finally:
            response.close()
        return core.answered(claimed, response, body)

    def _record(self, claimed: Claimed, result: Result) -> bool:
        """Write the result, trying again while the store fails (at most a
        lease long: after that another relay may hold the entry)."""
        give_up = time.monotonic() + self.core.lease
        pause = record_delays()
        while True:
            try:
                return self.core.store.record(claimed, result)
            except OutboxError as exc:
                if time.monotonic() >= give_up:
                    logger.error(
                        "outbox entry %s: result not recorded (%s); it will be "
                        "delivered again, with the same key, after its lease",
                        claimed.id,
                        exc,
                    )
                    return False
                time.sleep(pause())

    def _release(self, claimed: Claimed) -> None:
        try:
            self.core.store.release(claimed)
        except OutboxError as exc:
            logger.warning("outbox entry %s: release failed: %s", claimed.id, exc)
        self.core.released(claimed)


def _read(response: httpx.Response, cap: int) -> bytes:
    """Up to ``cap`` bytes of the body (a body cut off mid-way keeps what
    arrived: the status is the answer)."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= cap:
                break
    except httpx.HTTPError:
        pass
    return b"".join(chunks)[:cap]


@contextlib.contextmanager
def _sigterm_sets(stop: Any, wake: Any) -> Iterator[None]:
    """In the main thread, SIGTERM sets ``stop`` (the previous handler is
    put back afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: object) -> None:
        logger.info("outbox relay: SIGTERM, stopping")
        stop.set()
        wake()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
