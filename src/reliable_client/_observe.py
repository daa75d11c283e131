"""The hook that telemetry (``reliable_client.otel``) plugs into.

Nothing here imports OpenTelemetry: the engine calls the installed
:class:`Observer`, if any, at four moments of a call.  With none installed
(the default) each costs a global lookup, so the happy path stays as cheap
as without telemetry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx

if TYPE_CHECKING:
    from ._budget import RetryBudget
    from ._outcome import RetryEvent

__all__ = ["Observer", "install", "observer"]

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


def install(new: Observer | None) -> Observer | None:
    """Install ``new`` (or none); return the one it replaces."""
    global observer
    previous, observer = observer, new
    return previous


def current() -> Any:
    return observer
