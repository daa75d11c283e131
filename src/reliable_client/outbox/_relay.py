"""The sync relay: ``Outbox.deliver`` (one pass) and ``Outbox.run`` (until
stopped), through a ``reliable_client.Client``.

``concurrency`` worker threads each record their last result and claim
their next entry in one store transaction, then deliver it.  The calling
thread renews the leases of what is being delivered, starts extra workers
for idle endpoints when a slow one holds every worker, purges old entries
(``run``), and on stop (or SIGTERM) lets the workers finish what they are
sending, record it and claim nothing more.  What a result means is decided
by the shared core.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from ._model import Claimed, DeliveryCounts, OutboxError, Result
from ._relay_core import (
    PURGE_BATCHES,
    RECORD_AFTER,
    Label,
    RelayCore,
    logger,
    record_delays,
)

if TYPE_CHECKING:
    from ._outbox import Outbox

__all__ = ["SyncRelay"]

# The longest the calling thread sleeps before looking at ``stop`` again.
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
        limit: int | None = None,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.core = RelayCore(outbox, concurrency, limit)
        self.poll_interval = poll_interval
        self._cond = threading.Condition()
        self._wakes = 0  # wake-ups for idle workers not yet taken
        self._poller = False  # an idle worker looks at the store now and then
        self._main = threading.Event()
        self._stopping = threading.Event()
        self._one_pass = True
        self._cutoff: float | None = None
        self._failure: OutboxError | None = None

    def wake(self, workers: int = 1) -> None:
        """Wake an idle worker: an entry was enqueued, or there may be more."""
        with self._cond:
            self._wakes = min(self._wakes + workers, self.core.concurrency)
            self._cond.notify(workers)

    # -- the calling thread ----------------------------------------------------------

    def deliver(self) -> DeliveryCounts:
        self._cutoff = self.core.store.now()
        return self._loop(stop=None)

    def run(self, stop: threading.Event | None) -> DeliveryCounts:
        stop = stop if stop is not None else threading.Event()
        self._one_pass = False
        with _sigterm_sets(stop, self._main.set):
            return self._loop(stop=stop)

    def _loop(self, *, stop: threading.Event | None) -> DeliveryCounts:
        core = self.core
        workers = [self._start(None) for _ in range(core.concurrency)]
        self.outbox._relays.add(self)
        try:
            while stop is None or not stop.is_set():
                workers = [w for w in workers if w.is_alive()]
                if self._one_pass and not workers:
                    break
                self._renew()
                self._flush(RECORD_AFTER)
                now = time.monotonic()
                if not self._one_pass and core.purge_due(now):
                    self._purge()
                exclude = core.extra_worker(now)
                if exclude is not None:
                    workers.append(self._start(exclude))
                wait = core.next_wake(time.monotonic(), self.poll_interval)
                self._main.wait(min(wait, _STOP_CHECK))
                self._main.clear()
        finally:
            self._stopping.set()
            with self._cond:
                self._cond.notify_all()
            while any(w.is_alive() for w in workers):
                self._renew()
                self._flush(RECORD_AFTER)
                self._main.wait(min(core.next_wake(time.monotonic(), 1.0), _STOP_CHECK))
                self._main.clear()
            for claimed in core.drain_ready():
                self._release(claimed)  # claimed ahead, never sent
            give_up = time.monotonic() + core.lease
            while core.has_results() and time.monotonic() < give_up:
                if not self._flush(0.0):
                    time.sleep(_STOP_CHECK)
            core.not_recorded(core.take_results(), final=True)
            self.outbox._relays.discard(self)
        if self._failure is not None:
            raise self._failure
        return core.counts()

    def _start(self, exclude: list[str] | None) -> threading.Thread:
        thread = threading.Thread(
            target=self._work, args=(exclude,), name="outbox-relay", daemon=True
        )
        thread.start()
        return thread

    def _flush(self, older_than: float) -> bool:
        """Record results that waited ``older_than`` seconds for a worker's
        store call; False if the store failed."""
        core = self.core
        items = core.take_results(older_than)
        if not items:
            return True
        try:
            written, _ = core.store.settle(
                [(i.claimed, i.result) for i in items], core.holder, 0, core.lease
            )
        except OutboxError as exc:
            logger.warning("outbox relay: recording results failed: %s", exc)
            core.not_recorded(items)
            return False
        core.recorded(items, written)
        return True

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

    # -- a worker ------------------------------------------------------------------

    def _work(self, exclude: list[str] | None) -> None:
        """Claim, deliver, over and over, recording results with the claims
        (an extra worker, given the endpoints to leave out: once)."""
        core = self.core
        extra = exclude is not None
        claims_left = 1 if extra else -1  # -1: no end
        pause = record_delays()
        try:
            while True:
                plan = core.plan(
                    exclude, stopping=self._stopping.is_set(), claims_left=claims_left
                )
                if plan.empty:
                    return
                written: list[bool] = []
                batch: list[Claimed] = []
                if plan.calls_store:
                    try:
                        written, batch = core.store.settle(
                            plan.results,
                            core.holder,
                            plan.want,
                            core.lease,
                            cutoff=self._cutoff,
                            exclude=exclude or (),
                        )
                    except OutboxError as exc:
                        core.settle_failed(plan, extra=extra, poll=self.poll_interval)
                        if self._one_pass or extra:
                            if self._one_pass:
                                self._failure = self._failure or exc  # deliver() raises
                            return
                        logger.warning("outbox relay: the store failed: %s", exc)
                        time.sleep(pause())
                        continue
                pause = record_delays()
                if plan.want or plan.took is not None:
                    claims_left -= 1
                claimed = core.settled(
                    plan, written, batch, extra=extra, poll=self.poll_interval
                )
                if claimed is None and plan.items and plan.want:
                    # The claim may not see the results it was sent with (one
                    # statement): the next of their groups is due now.  Again.
                    continue
                if claimed is None:
                    if self._one_pass or extra or self._stopping.is_set():
                        if core.has_results():
                            continue  # record the rest before leaving
                        return
                    self._idle()
                    continue
                if not extra and core.has_ready():
                    self.wake()  # an idle worker may take one
                self._deliver_one(claimed)
        finally:
            if extra:
                core.extra_done()
            self._main.set()

    def _idle(self) -> None:
        """Wait for work: one idle worker looks at the store every
        ``poll_interval``; the others sleep until woken (an enqueue here, a
        claim that found more, stop)."""
        with self._cond:
            if not self._wakes and not self._stopping.is_set():
                polling = not self._poller
                self._poller = self._poller or polling
                try:
                    self._cond.wait(self.poll_interval if polling else _STOP_CHECK * 10)
                finally:
                    if polling:
                        self._poller = False
            self._wakes = max(self._wakes - 1, 0)

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
            core.finish(claimed, result, Label(claimed, request))
        except BaseException:
            core.let_go(claimed)  # its lease runs out; then it is delivered again
            logger.exception("outbox relay: delivering entry %s failed", claimed.id)

    def _send(self, claimed: Claimed, request: httpx.Request) -> Result:
        # Not streamed: the client reads the body inside its retry loop (a
        # failure mid-body is retried like any other); max_response_body
        # bytes of it are kept.
        response = self.client.send(request)
        return self.core.answered(claimed, response, response.content)

    def _release(self, claimed: Claimed) -> None:
        try:
            self.core.store.release(claimed)
        except OutboxError as exc:
            logger.warning("outbox entry %s: release failed: %s", claimed.id, exc)
        self.core.released(claimed)


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
