"""The hook that telemetry (``reliable_client.otel``) plugs into.

Nothing here imports OpenTelemetry: the engine calls the installed
:class:`Observer`, if any, at four moments of a call.  With none installed
(the default) each costs a global lookup, so the happy path stays as cheap
as without telemetry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import httpx

if TYPE_CHECKING:
    from ._budget import RetryBudget
    from ._outcome import RetryEvent

__all__ = ["KEY", "Observer", "aobserved", "install", "observed", "observer"]

_T = TypeVar("_T")


class Observer(Protocol):
    """What telemetry hears of each call."""

    def call(
        self, request: httpx.Request, budget: RetryBudget, run: Callable[[], _T]
    ) -> _T:
        """Run a sync call (``run()``) as one logical call of ``request``."""

    async def acall(
        self,
        request: httpx.Request,
        budget: RetryBudget,
        run: Callable[[], Awaitable[_T]],
    ) -> _T:
        """Run an async call as one logical call of ``request``."""

    def retry(self, event: RetryEvent) -> None:
        """A retry is about to sleep (or retrying was stopped early)."""

    def resend(self, request: httpx.Request, attempt: int, aio: bool) -> None:
        """``request`` is about to be sent again, as attempt ``attempt``
        (``aio``: by an async client or transport)."""


observer: Observer | None = None
"""The installed observer (``None``: no telemetry)."""

KEY = "reliable_client.observed"
"""Request extension: the call is already in telemetry's hands (the engine,
entered again by the observer, runs it as usual)."""


def observed(
    call: Callable[[httpx.Request, RetryBudget, Callable[[], _T]], _T],
    request: httpx.Request,
    budget: RetryBudget,
    run: Callable[[], _T],
) -> _T:
    """``call`` (an observer's) runs ``run()``, the engine entered again with
    the request marked, so that it does not hand the call over twice."""
    request.extensions = {**request.extensions, KEY: True}
    try:
        return call(request, budget, run)
    finally:
        request.extensions.pop(KEY, None)


async def aobserved(
    call: Callable[
        [httpx.Request, RetryBudget, Callable[[], Awaitable[_T]]], Awaitable[_T]
    ],
    request: httpx.Request,
    budget: RetryBudget,
    run: Callable[[], Awaitable[_T]],
) -> _T:
    """:func:`observed` for async calls."""
    request.extensions = {**request.extensions, KEY: True}
    try:
        return await call(request, budget, run)
    finally:
        request.extensions.pop(KEY, None)


def install(new: Observer | None) -> Observer | None:
    """Install ``new`` (or none); return the one it replaces."""
    global observer
    previous, observer = observer, new
    return previous
