"""The @retry decorator: retries of a user's own function, by the same rules.

Inside a decorated call, reliable clients and transports make one attempt per
request and leave retrying to the decorator (the outermost one, when
decorators nest), so retry layers never multiply.  Attempts replay the
idempotency keys of earlier ones by method and URL: the k-th keyed request of
an attempt to one method and URL carries the key and resource id of the k-th
such request of the first attempt that made one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any, ParamSpec, TypeVar, cast, overload

import httpx

from ._budget import RetryBudget
from ._context import OuterLayer, outer_layer
from ._core import Call, RetryCore, Step, resolve_policy
from ._decision import FINAL, Verdict, judge_exception
from ._loop import arun, run
from ._outcome import OnRetry
from ._policy import RetryPolicy
from ._throttle import AdaptiveThrottle, ThrottledError, accepted_error

__all__ = ["retry"]

P = ParamSpec("P")
R = TypeVar("R")


@overload
def retry(function: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def retry(
    policy: RetryPolicy | None = None,
    /,
    *,
    budget: RetryBudget | None = None,
    on: tuple[type[Exception], ...] = (),
    on_retry: OnRetry | None = None,
    throttle: AdaptiveThrottle | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def retry(
    policy: Any = None,
    /,
    *,
    budget: RetryBudget | None = None,
    on: tuple[type[BaseException], ...] = (),
    on_retry: OnRetry | None = None,
    throttle: AdaptiveThrottle | None = None,
) -> Any:
    """Retry a function (``def`` or ``async def``) when the safety rule allows.

    Use as ``@retry``, ``@retry()`` or ``@retry(policy, budget=..., on=...)``.

    Retried: httpx transport errors by whether their request could have
    reached the server, and ``httpx.HTTPStatusError`` with a retryable status
    (and its Retry-After), judged by the request they carry exactly as the
    transport would judge them; and any exception whose type is in ``on``.
    Everything else propagates at once, unchanged.

    Args:
        policy: a :class:`RetryPolicy` (default ``RetryPolicy()``).
        budget: a :class:`RetryBudget` to spend retries from (default: one of
            this decorator's own); pass the clients' budget to share it.
        on: ``Exception`` subclasses that are always worth a retry (a
            ``BaseException`` that is not an ``Exception``, such as
            ``KeyboardInterrupt``, is refused with ``TypeError``).
        on_retry: called with a :class:`RetryEvent` before each retry and when
            retrying is stopped early.
        throttle: an :class:`AdaptiveThrottle` asked before each attempt of
            the function (one decision per attempt; the requests inside it
            are not throttled again), default ``None``: off.
    """
    if callable(policy) and not isinstance(policy, RetryPolicy):
        return _decorate(policy, RetryPolicy(), budget, on, on_retry, throttle)
    chosen = (
        RetryPolicy() if policy is None else resolve_policy(policy, "retry(policy)")
    )
    if not isinstance(on, tuple) or not all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in on
    ):
        raise TypeError(f"retry(on=...) must be a tuple of exception types, got {on!r}")
    for kind in on:
        if not issubclass(kind, Exception):
            # KeyboardInterrupt, SystemExit, CancelledError, GeneratorExit: a
            # retry must never swallow them.
            raise TypeError(
                f"retry(on=...): {kind.__name__} is not an Exception subclass; "
                "cancellation and exits are never retried"
            )

    def decorator(function: Callable[P, R]) -> Callable[P, R]:
        return _decorate(function, chosen, budget, on, on_retry, throttle)

    return decorator


def _decorate(
    function: Callable[P, R],
    policy: RetryPolicy,
    budget: RetryBudget | None,
    on: tuple[type[BaseException], ...],
    on_retry: OnRetry | None,
    throttle: AdaptiveThrottle | None,
) -> Callable[P, R]:
    core = RetryCore(
        retry=policy,
        budget=budget,
        idempotency=None,
        on_retry=on_retry,
        clock=None,
        owner="retry",
        throttle=throttle,
    )
    label = getattr(function, "__qualname__", repr(function))

    def judge(exc: BaseException) -> Verdict:
        if isinstance(exc, ThrottledError):
            return FINAL  # refused locally: never retried, whatever ``on`` says
        if on and isinstance(exc, on):
            return Verdict(True, type(exc).__name__)
        if isinstance(exc, httpx.HTTPError):
            return judge_exception(exc, policy)
        return FINAL

    def begin() -> tuple[RetryPolicy, float, OuterLayer, bool]:
        probe = core.throttle is not None and core.admit_first()
        chosen, started = core.begin_call(policy, None)
        deadline = chosen.deadline
        layer = OuterLayer(
            deadline_at=None if deadline is None else started + deadline,
            throttled=core.throttle is not None,
        )
        return chosen, started, layer, probe

    def first_outcome(probe: bool, error: BaseException | None) -> None:
        if core.throttle is not None:
            accepted = error is None or accepted_error(error)
            core.throttle.record("", accepted, probe)

    def steps(
        chosen: RetryPolicy, started: float, error: Exception
    ) -> Generator[Step, Any, Any]:
        call = Call(core, None, chosen, started, label=label, judge=judge)
        return call.steps(None, error)

    if inspect.iscoroutinefunction(function):
        async_function = cast("Callable[P, Awaitable[Any]]", function)

        @functools.wraps(function)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            if outer_layer.get() is not None:
                return await async_function(*args, **kwargs)
            chosen, started, layer, probe = begin()
            token = outer_layer.set(layer)
            try:
                try:
                    result = await async_function(*args, **kwargs)
                except Exception as exc:
                    first_outcome(probe, exc)
                    first_error = exc
                except BaseException as exc:  # cancelled: the caller gave up
                    first_outcome(probe, exc)
                    raise
                else:
                    first_outcome(probe, None)
                    return result

                async def again() -> Any:
                    layer.journal.rewind()
                    return await async_function(*args, **kwargs)

                return await arun(steps(chosen, started, first_error), again)
            finally:
                outer_layer.reset(token)

        return cast("Callable[P, R]", async_wrapper)

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if outer_layer.get() is not None:
            return function(*args, **kwargs)
        chosen, started, layer, probe = begin()
        token = outer_layer.set(layer)
        try:
            try:
                result = function(*args, **kwargs)
            except Exception as exc:
                first_outcome(probe, exc)
                first_error = exc
            except BaseException as exc:  # interrupted: the caller gave up
                first_outcome(probe, exc)
                raise
            else:
                first_outcome(probe, None)
                return result

            def again() -> R:
                layer.journal.rewind()
                return function(*args, **kwargs)

            final: R = run(steps(chosen, started, first_error), again)
            return final
        finally:
            outer_layer.reset(token)

    return wrapper
