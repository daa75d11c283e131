"""The async relay: ``Outbox.adeliver`` and ``Outbox.arun``, through a
``reliable_client.AsyncClient``.

The sync relay's design with tasks for threads: ``concurrency`` worker
tasks each record their last result and claim their next entry in one
store transaction, then deliver it; the calling task renews leases, starts
extra workers for idle endpoints, purges (``arun``) and stops on the stop
event or SIGTERM.  The store's calls block, so they run in a worker thread:
the event loop never waits on a database.  What a result means is decided
by the shared core.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

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

__all__ = ["AsyncRelay", "StopEvent"]

StopEvent = threading.Event | asyncio.Event
_T = TypeVar("_T")
_STOP_CHECK = 0.1


class AsyncRelay:
    """One ``adeliver`` or ``arun`` of an outbox through an async client."""

    def __init__(
        self,
        outbox: Outbox,
        client: httpx.AsyncClient,
        *,
        concurrency: int,
        poll_interval: float,
        limit: int | None = None,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.core = RelayCore(outbox, concurrency, limit)
        self.poll_interval = poll_interval
        self._loop = asyncio.get_running_loop()
        self._work_ready = asyncio.Event()  # wake idle workers
        self._poller = False  # an idle worker looks at the store now and then
        self._main = asyncio.Event()
        self._stopping = False
        self._one_pass = True
        self._cutoff: float | None = None
        self._failure: OutboxError | None = None

    def wake(self) -> None:
        """Wake idle workers (an entry was enqueued); safe from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self._loop.call_soon_threadsafe(self._work_ready.set)

    async def _store(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- the calling task ------------------------------------------------------------

    async def deliver(self) -> DeliveryCounts:
        self._cutoff = await self._store(self.core.store.now)
        return await self._run_loop(stop=None)

    async def run(self, stop: StopEvent | None) -> DeliveryCounts:
        stop = stop if stop is not None else asyncio.Event()
        self._one_pass = False
        async with _sigterm_sets(stop, self._main.set):
            return await self._run_loop(stop=stop)

    async def _run_loop(self, *, stop: StopEvent | None) -> DeliveryCounts:
        core = self.core
        workers = {self._start(None) for _ in range(core.concurrency)}
        self.outbox._relays.add(self)
        try:
            while stop is None or not stop.is_set():
                workers = {w for w in workers if not w.done()}
                if self._one_pass and not workers:
                    break
                await self._renew()
                await self._flush(RECORD_AFTER)
                now = time.monotonic()
                if not self._one_pass and core.purge_due(now):
                    await self._purge()
                exclude = core.extra_worker(now)
                if exclude is not None:
                    workers.add(self._start(exclude))
                await self._wait_main(
                    core.next_wake(time.monotonic(), self.poll_interval)
                )
        except asyncio.CancelledError:
            for worker in workers:
                worker.cancel()  # their leases run out; then they are redelivered
            raise
        finally:
            self._stopping = True
            self._work_ready.set()
            while any(not w.done() for w in workers):
                await self._renew()
                await self._flush(RECORD_AFTER)
                await self._wait_main(core.next_wake(time.monotonic(), 1.0))
            for claimed in core.drain_ready():
                await self._release(claimed)  # claimed ahead, never sent
            give_up = time.monotonic() + core.lease
            while core.has_results() and time.monotonic() < give_up:
                if not await self._flush(0.0):
                    await asyncio.sleep(_STOP_CHECK)
            core.not_recorded(core.take_results(), final=True)
            self.outbox._relays.discard(self)
        if self._failure is not None:
            raise self._failure
        return core.counts()

    def _start(self, exclude: list[str] | None) -> asyncio.Task[None]:
        return asyncio.create_task(self._work(exclude))

    async def _wait_main(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self._main.wait(), min(seconds, _STOP_CHECK))
        self._main.clear()

    async def _flush(self, older_than: float) -> bool:
        """Record results that waited ``older_than`` seconds for a worker's
        store call; False if the store failed."""
        core = self.core
        items = core.take_results(older_than)
        if not items:
            return True
        try:
            written, _ = await self._store(
                core.store.settle,
                [(i.claimed, i.result) for i in items],
                core.holder,
                0,
                core.lease,
            )
        except OutboxError as exc:
            logger.warning("outbox relay: recording results failed: %s", exc)
            core.not_recorded(items)
            return False
        core.recorded(items, written)
        return True

    async def _purge(self) -> None:
        try:
            await self._store(self.outbox.purge, max_batches=PURGE_BATCHES)
        except OutboxError as exc:
            logger.warning("outbox relay: purging old entries failed: %s", exc)

    async def _renew(self) -> None:
        core = self.core
        asked = core.renewals(time.monotonic())
        if not asked:
            return
        try:
            kept = await self._store(core.store.renew, asked, core.lease)
        except OutboxError as exc:
            logger.warning("outbox relay: renewing leases failed: %s", exc)
            return
        core.renewed(asked, kept)

    # -- a worker ------------------------------------------------------------------

    async def _work(self, exclude: list[str] | None) -> None:
        """Claim, deliver, over and over, recording results with the claims
        (an extra worker, given the endpoints to leave out: once)."""
        core = self.core
        extra = exclude is not None
        claims_left = 1 if extra else -1  # -1: no end
        pause = record_delays()
        try:
            while True:
                plan = core.plan(
                    exclude, stopping=self._stopping, claims_left=claims_left
                )
                if plan.empty:
                    return
                written: list[bool] = []
                batch: list[Claimed] = []
                if plan.calls_store:
                    try:
                        written, batch = await self._store(
                            core.store.settle,
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
                                self._failure = (
                                    self._failure or exc
                                )  # adeliver() raises
                            return
                        logger.warning("outbox relay: the store failed: %s", exc)
                        await asyncio.sleep(pause())
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
                    if self._one_pass or extra or self._stopping:
                        if core.has_results():
                            continue  # record the rest before leaving
                        return
                    await self._idle()
                    continue
                if not extra and core.has_ready():
                    self._work_ready.set()  # an idle worker may take one
                await self._deliver_one(claimed)
        finally:
            if extra:
                core.extra_done()
            self._main.set()

    async def _idle(self) -> None:
        """Wait for work: one idle worker looks at the store every
        ``poll_interval``; the others sleep until woken."""
        if not self._work_ready.is_set():
            polling = not self._poller
            self._poller = self._poller or polling
            try:
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(
                        self._work_ready.wait(),
                        self.poll_interval if polling else _STOP_CHECK * 10,
                    )
            finally:
                if polling:
                    self._poller = False
        self._work_ready.clear()

    async def _deliver_one(self, claimed: Claimed) -> None:
        core = self.core
        request: httpx.Request | None = None
        try:
            if self._stopping:
                await self._release(claimed)
                return
            try:
                plan = core.prepare(claimed, self.client)
                if isinstance(plan, Result):
                    result = plan
                else:
                    request = plan
                    result = await self._send(claimed, request)
            except Exception as exc:
                result = core.failed(claimed, exc)
            core.finish(claimed, result, Label(claimed, request))
        except asyncio.CancelledError:
            core.let_go(claimed)  # its lease runs out; then it is delivered again
            raise
        except BaseException:
            core.let_go(claimed)
            logger.exception("outbox relay: delivering entry %s failed", claimed.id)

    async def _send(self, claimed: Claimed, request: httpx.Request) -> Result:
        response = await self.client.send(request)  # read, as the sync relay
        return self.core.answered(claimed, response, response.content)

    async def _release(self, claimed: Claimed) -> None:
        try:
            await self._store(self.core.store.release, claimed)
        except OutboxError as exc:
            logger.warning("outbox entry %s: release failed: %s", claimed.id, exc)
        self.core.released(claimed)


@contextlib.asynccontextmanager
async def _sigterm_sets(
    stop: StopEvent, wake: Callable[[], None]
) -> AsyncIterator[None]:
    """In the main thread, SIGTERM sets ``stop`` while the relay runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm() -> None:
        logger.info("outbox relay: SIGTERM, stopping")
        stop.set()
        wake()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous)
