"""The async relay: ``Outbox.adeliver`` and ``Outbox.arun``, deliveries as
tasks through a ``reliable_client.AsyncClient``.

The same loop as the sync relay: claim as slots free up, renew leases, on
stop (or SIGTERM) give back what is unsent and let what is being sent
finish.  The store's calls block, so they run in a worker thread; the event
loop never waits on a database.  What a result means is decided by the
shared core.
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
    RelayCore,
    label_of,
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
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.core = RelayCore(outbox, concurrency)
        self.poll_interval = poll_interval
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look for work now; safe from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self._loop.call_soon_threadsafe(self._changed.set)

    async def _store(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- the loop -----------------------------------------------------------------

    async def deliver(self, limit: int | None) -> DeliveryCounts:
        cutoff = await self._store(self.core.store.now)
        return await self._run_loop(limit=limit, stop=None, cutoff=cutoff)

    async def run(self, stop: StopEvent | None) -> DeliveryCounts:
        stop = stop if stop is not None else asyncio.Event()
        async with _sigterm_sets(stop, self.wake):
            return await self._run_loop(limit=None, stop=stop, cutoff=None)

    async def _run_loop(
        self,
        *,
        limit: int | None,
        stop: StopEvent | None,
        cutoff: float | None,
    ) -> DeliveryCounts:
        core = self.core
        one_pass = stop is None
        started = 0
        failure: OutboxError | None = None
        pause = record_delays()
        self.outbox._relays.add(self)
        try:
            while stop is None or not stop.is_set():
                await self._renew()
                if not one_pass and core.purge_due(time.monotonic()):
                    await self._purge()
                want, exclude = core.wanted(time.monotonic())
                if limit is not None:
                    want = min(want, limit - started)
                drained = limit is not None and started >= limit
                if want > 0:
                    try:
                        batch = await self._store(
                            core.store.claim,
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
                        await self._wait(pause())
                        continue
                    pause = record_delays()
                    for claimed in batch:
                        core.hold(claimed, time.monotonic())
                        task = asyncio.create_task(self._deliver_one(claimed))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
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
                await self._wait(core.next_wake(time.monotonic(), self.poll_interval))
        except asyncio.CancelledError:
            for task in list(self._tasks):
                task.cancel()
            raise
        finally:
            self._stopping = True
            while self._tasks:
                await self._renew()
                await self._wait(core.next_wake(time.monotonic(), _STOP_CHECK))
            self.outbox._relays.discard(self)
        if failure is not None:
            raise failure
        return core.counts()

    async def _wait(self, seconds: float) -> None:
        if not self._changed.is_set():
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(seconds, _STOP_CHECK))
        self._changed.clear()

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

    # -- one delivery ------------------------------------------------------------

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
            recorded = await self._record(claimed, result)
            core.done(claimed, result, recorded, label_of(claimed, request))
        except asyncio.CancelledError:
            core.let_go(claimed)  # its lease runs out; then it is redelivered
            raise
        except BaseException:
            core.let_go(claimed)
            logger.exception("outbox relay: delivering entry %s failed", claimed.id)
        finally:
            self._changed.set()

    async def _send(self, claimed: Claimed, request: httpx.Request) -> Result:
        response = await self.client.send(request, stream=True)
        try:
            body = await _read(response, self.outbox.max_response_body)
        finally:
            await response.aclose()
        return self.core.answered(claimed, response, body)

    async def _record(self, claimed: Claimed, result: Result) -> bool:
        give_up = time.monotonic() + self.core.lease
        pause = record_delays()
        while True:
            try:
                return await self._store(self.core.store.record, claimed, result)
            except OutboxError as exc:
                if time.monotonic() >= give_up:
                    logger.error(
                        "outbox entry %s: result not recorded (%s); it will be "
                        "delivered again, with the same key, after its lease",
                        claimed.id,
                        exc,
                    )
                    return False
                await asyncio.sleep(pause())

    async def _release(self, claimed: Claimed) -> None:
        try:
            await self._store(self.core.store.release, claimed)
        except OutboxError as exc:
            logger.warning("outbox entry %s: release failed: %s", claimed.id, exc)
        self.core.released(claimed)


async def _read(response: httpx.Response, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= cap:
                break
    except httpx.HTTPError:
        pass
    return b"".join(chunks)[:cap]


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
