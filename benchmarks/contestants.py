"""The contestants: one factory per library, all under one shared configuration.

Every factory returns a :class:`Caller` whose ``call(method, url, body)`` sends
one *logical* call (with whatever retries the library makes) and returns the
final status code, or raises what the library raised.  ``body`` is a JSON
object sent with ``json=`` (``None``: no body).

Every retrying contestant makes at most :data:`CONFIG.attempts` attempts and
waits the same tiny backoff (1 ms initial, 2 ms cap), on the same statuses,
except where the point of a row is a library's defaults (``httpx-retries
(defaults)``).  The exact configuration of every row is in its ``config``
string, printed with the results.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

import reliable_client

__all__ = [
    "ASYNC_CONTESTANTS",
    "CONFIG",
    "CONTESTANTS",
    "AsyncCaller",
    "AsyncContestant",
    "Caller",
    "Config",
    "Contestant",
    "quiet_loggers",
]

Body = Any  # a JSON-serialisable object, or None


@dataclass(frozen=True)
class Config:
    """The one retry configuration every retrying contestant gets."""

    attempts: int = 3
    backoff_initial: float = 0.001
    backoff_max: float = 0.002
    statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})

    def describe(self) -> str:
        return (
            f"{self.attempts} attempts in all, backoff "
            f"{self.backoff_initial * 1e3:g} ms initial x2 capped at "
            f"{self.backoff_max * 1e3:g} ms (full jitter where the library "
            "jitters), retried statuses "
            f"{', '.join(str(s) for s in sorted(self.statuses))}"
        )


CONFIG = Config()

RC_POLICY = reliable_client.RetryPolicy(
    max_attempts=CONFIG.attempts,
    backoff_initial=CONFIG.backoff_initial,
    backoff_max=CONFIG.backoff_max,
)


def quiet_loggers() -> None:
    """Keep retry logging (WARNINGs on budget refusals, urllib3's retry
    warnings, stamina's hook) off stderr without changing any library's
    behaviour: a NullHandler means the records are still made."""
    for name in ("reliable_client", "httpx_retries", "stamina", "urllib3", "httpx"):
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


@dataclass
class Caller:
    call: Callable[[str, str, Body], int]
    close: Callable[[], None]
    client: Any = None  # the underlying client, for stats


@dataclass
class AsyncCaller:
    call: Callable[[str, str, Body], Awaitable[int]]
    close: Callable[[], Awaitable[None]]
    client: Any = None


Factory = Callable[[httpx.BaseTransport | None], Caller]
AsyncFactory = Callable[[httpx.AsyncBaseTransport | None, httpx.Limits], AsyncCaller]


@dataclass(frozen=True)
class Contestant:
    name: str
    make: Factory
    config: str
    retries: bool = True
    #: can run over httpx.MockTransport (measurement 1, 7)
    mockable: bool = True
    #: spends from a RetryBudget (its outage amplification depends on the count)
    budgeted: bool = False
    #: a reliable_client row: the targets apply to it
    ours: bool = False


@dataclass(frozen=True)
class AsyncContestant:
    name: str
    make: AsyncFactory
    config: str
    retries: bool = True
    budgeted: bool = False
    ours: bool = False


# -- shared pieces -------------------------------------------------------------


def _retryable(exc: BaseException) -> bool:
    """What the wrapper-style contestants retry: transport errors and a status
    in CONFIG.statuses (raised by raise_for_status)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in CONFIG.statuses
    return isinstance(exc, httpx.TransportError)


def _client(transport: httpx.BaseTransport | None) -> httpx.Client:
    return httpx.Client(transport=transport) if transport else httpx.Client()


def _status_of(exc: httpx.HTTPStatusError) -> int:
    return exc.response.status_code


def _direct(client: httpx.Client) -> Caller:
    """A caller that sends once through ``client`` and returns the status."""

    def call(method: str, url: str, body: Body) -> int:
        return client.request(method, url, json=body).status_code

    return Caller(call, client.close, client)


def _statuses_returned(
    send: Callable[[str, str, Body], int], client: httpx.Client
) -> Caller:
    """A caller around a retrying ``send`` that raises for a bad status: the
    last status is returned, as the other contestants return it."""

    def call(method: str, url: str, body: Body) -> int:
        try:
            return send(method, url, body)
        except httpx.HTTPStatusError as exc:
            return _status_of(exc)

    return Caller(call, client.close, client)


# -- sync contestants ------------------------------------------------------------


def _plain(transport: httpx.BaseTransport | None) -> Caller:
    client = _client(transport)

    return _direct(client)


def _httpx_transport_retries(transport: httpx.BaseTransport | None) -> Caller:
    if transport is not None:
        raise ValueError("HTTPTransport(retries=3) cannot wrap another transport")
    client = httpx.Client(transport=httpx.HTTPTransport(retries=3))

    return _direct(client)


def _httpx_retries(defaults: bool) -> Factory:
    def make(transport: httpx.BaseTransport | None) -> Caller:
        import httpx_retries

        if defaults:
            retry = httpx_retries.Retry()
        else:
            retry = httpx_retries.Retry(
                total=CONFIG.attempts - 1,
                backoff_factor=CONFIG.backoff_initial,
                max_backoff_wait=CONFIG.backoff_max,
                status_forcelist=CONFIG.statuses,
            )
        inner = transport if transport is not None else httpx.HTTPTransport()
        client = httpx.Client(
            transport=httpx_retries.RetryTransport(transport=inner, retry=retry)
        )

        return _direct(client)

    return make


def _tenacity(with_key: bool) -> Factory:
    def make(transport: httpx.BaseTransport | None) -> Caller:
        import tenacity

        client = _client(transport)

        @tenacity.retry(
            stop=tenacity.stop_after_attempt(CONFIG.attempts),
            wait=tenacity.wait_random_exponential(
                multiplier=CONFIG.backoff_initial, max=CONFIG.backoff_max
            ),
            retry=tenacity.retry_if_exception(_retryable),
            reraise=True,
        )
        def send(
            method: str, url: str, body: Body, headers: dict[str, str] | None
        ) -> int:
            response = client.request(method, url, json=body, headers=headers)
            response.raise_for_status()
            return response.status_code

        def call(method: str, url: str, body: Body) -> int:
            headers = None
            if with_key and method in ("POST", "PATCH"):
                # The careful user's fix: one key per logical call, made
                # outside the retry loop, so every attempt carries it.
                headers = {"Idempotency-Key": str(uuid.uuid4())}
            try:
                return send(method, url, body, headers)
            except httpx.HTTPStatusError as exc:
                return _status_of(exc)

        return Caller(call, client.close, client)

    return make


def _stamina(transport: httpx.BaseTransport | None) -> Caller:
    import stamina

    client = _client(transport)

    @stamina.retry(
        on=_retryable,
        attempts=CONFIG.attempts,
        timeout=None,
        wait_initial=CONFIG.backoff_initial,
        wait_max=CONFIG.backoff_max,
        wait_jitter=CONFIG.backoff_initial,
    )
    def send(method: str, url: str, body: Body) -> int:
        response = client.request(method, url, json=body)
        response.raise_for_status()
        return response.status_code

    return _statuses_returned(send, client)


def _retryhttp(transport: httpx.BaseTransport | None) -> Caller:
    import retryhttp
    import tenacity

    client = _client(transport)

    def tiny() -> tenacity.wait.wait_base:
        return tenacity.wait_random_exponential(
            multiplier=CONFIG.backoff_initial, max=CONFIG.backoff_max
        )

    @retryhttp.retry(
        max_attempt_number=CONFIG.attempts,
        wait_server_errors=tiny(),
        wait_network_errors=tiny(),
        wait_timeouts=tiny(),
        server_error_codes=tuple(sorted(CONFIG.statuses - {429})),
        reraise=True,
    )
    def send(method: str, url: str, body: Body) -> int:
        response = client.request(method, url, json=body)
        response.raise_for_status()
        return response.status_code

    return _statuses_returned(send, client)


def _requests_urllib3(transport: httpx.BaseTransport | None) -> Caller:
    if transport is not None:
        raise ValueError("requests cannot use an httpx transport")
    import requests
    import requests.adapters
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(
        total=CONFIG.attempts - 1,
        backoff_factor=CONFIG.backoff_initial,
        backoff_max=CONFIG.backoff_max,
        status_forcelist=sorted(CONFIG.statuses),
        raise_on_status=False,
    )
    session.mount("http://", requests.adapters.HTTPAdapter(max_retries=retry))

    def call(method: str, url: str, body: Body) -> int:
        return session.request(method, url, json=body).status_code

    return Caller(call, session.close, session)


def _rc_client(
    transport: httpx.BaseTransport | None,
    policy: reliable_client.RetryPolicy = RC_POLICY,
) -> Caller:
    client = (
        reliable_client.Client(retry=policy, transport=transport)
        if transport is not None
        else reliable_client.Client(retry=policy)
    )

    return _direct(client)


def _rc_transport(transport: httpx.BaseTransport | None) -> Caller:
    inner = transport if transport is not None else httpx.HTTPTransport()
    client = httpx.Client(
        transport=reliable_client.RetryTransport(inner, retry=RC_POLICY)
    )

    return _direct(client)


_SHARED = f"shared config ({CONFIG.attempts} attempts, tiny backoff)"
_RC = (
    f"RetryPolicy(max_attempts={CONFIG.attempts}, backoff_initial="
    f"{CONFIG.backoff_initial}, backoff_max={CONFIG.backoff_max}), default "
    "RetryBudget() and Idempotency()"
)

CONTESTANTS: tuple[Contestant, ...] = (
    Contestant("httpx", _plain, "httpx.Client(), no retries (the floor)", False),
    Contestant(
        "httpx (A/A)",
        _plain,
        "a second, identical httpx.Client: the noise gauge",
        False,
    ),
    Contestant(
        "httpx retries=3",
        _httpx_transport_retries,
        "httpx.HTTPTransport(retries=3): retries failed connects only",
        mockable=False,
    ),
    Contestant(
        "httpx-retries (defaults)",
        _httpx_retries(defaults=True),
        "httpx_retries.Retry(): total=10, backoff_factor=0 (no sleep), "
        "429/502/503/504, idempotent methods only",
    ),
    Contestant(
        "httpx-retries total=2",
        _httpx_retries(defaults=False),
        f"httpx_retries.Retry(total=2, backoff_factor={CONFIG.backoff_initial}, "
        f"max_backoff_wait={CONFIG.backoff_max}), idempotent methods only",
    ),
    Contestant(
        "tenacity",
        _tenacity(with_key=False),
        f"@tenacity.retry around client.request + raise_for_status, {_SHARED}, "
        "every method",
    ),
    Contestant(
        "stamina",
        _stamina,
        f"@stamina.retry(on=predicate, timeout=None), {_SHARED}, every method",
    ),
    Contestant(
        "retryhttp",
        _retryhttp,
        f"@retryhttp.retry(max_attempt_number=3, tiny waits), {_SHARED}, "
        "every method; its network errors exclude RemoteProtocolError",
    ),
    Contestant(
        "requests+urllib3",
        _requests_urllib3,
        f"requests.Session + HTTPAdapter(max_retries=Retry(total=2, backoff_factor="
        f"{CONFIG.backoff_initial}, backoff_max={CONFIG.backoff_max})), "
        "idempotent methods only; urllib3 does not sleep before its first retry",
        mockable=False,
    ),
    Contestant(
        "tenacity+key",
        _tenacity(with_key=True),
        "the careful user's fix: tenacity as above plus an Idempotency-Key "
        "(uuid4) made once per call",
    ),
    Contestant(
        "reliable_client.Client",
        _rc_client,
        f"reliable_client.Client({_RC})",
        budgeted=True,
        ours=True,
    ),
    Contestant(
        "RetryTransport",
        _rc_transport,
        f"httpx.Client(transport=reliable_client.RetryTransport(..., {_RC}))",
        budgeted=True,
        ours=True,
    ),
)

# (4) only: the transient-fault target's own arithmetic needs a fourth attempt.
RC_FOUR_ATTEMPTS = Contestant(
    "reliable_client.Client, 4 attempts",
    lambda transport: _rc_client(transport, RC_POLICY.replace(max_attempts=4)),
    f"reliable_client.Client(RetryPolicy(max_attempts=4, backoff_initial="
    f"{CONFIG.backoff_initial}, backoff_max={CONFIG.backoff_max})), default "
    "RetryBudget() and Idempotency(); in (4) only",
    mockable=False,
    budgeted=True,
    ours=True,
)


# -- async contestants -----------------------------------------------------------


def _aclient(
    transport: httpx.AsyncBaseTransport | None, limits: httpx.Limits
) -> httpx.AsyncClient:
    if transport is not None:
        return httpx.AsyncClient(transport=transport, limits=limits)
    return httpx.AsyncClient(limits=limits)


def _adirect(client: httpx.AsyncClient) -> AsyncCaller:
    """The async twin of :func:`_direct`."""

    async def call(method: str, url: str, body: Body) -> int:
        return (await client.request(method, url, json=body)).status_code

    return AsyncCaller(call, client.aclose, client)


def _astatuses_returned(
    send: Callable[[str, str, Body], Awaitable[int]], client: httpx.AsyncClient
) -> AsyncCaller:
    """The async twin of :func:`_statuses_returned`."""

    async def call(method: str, url: str, body: Body) -> int:
        try:
            return await send(method, url, body)
        except httpx.HTTPStatusError as exc:
            return _status_of(exc)

    return AsyncCaller(call, client.aclose, client)


def _a_plain(
    transport: httpx.AsyncBaseTransport | None, limits: httpx.Limits
) -> AsyncCaller:
    client = _aclient(transport, limits)

    return _adirect(client)


def _a_rc_client(
    transport: httpx.AsyncBaseTransport | None, limits: httpx.Limits
) -> AsyncCaller:
    if transport is not None:
        client = reliable_client.AsyncClient(
            retry=RC_POLICY, transport=transport, limits=limits
        )
    else:
        client = reliable_client.AsyncClient(retry=RC_POLICY, limits=limits)

    return _adirect(client)


def _a_rc_transport(
    transport: httpx.AsyncBaseTransport | None, limits: httpx.Limits
) -> AsyncCaller:
    inner = (
        transport if transport is not None else httpx.AsyncHTTPTransport(limits=limits)
    )
    client = httpx.AsyncClient(
        transport=reliable_client.AsyncRetryTransport(inner, retry=RC_POLICY)
    )

    return _adirect(client)


def _a_httpx_retries(
    transport: httpx.AsyncBaseTransport | None, limits: httpx.Limits
) -> AsyncCaller:
    import httpx_retries

    retry = httpx_retries.Retry(
        total=CONFIG.attempts - 1,
        backoff_factor=CONFIG.backoff_initial,
        max_backoff_wait=CONFIG.backoff_max,
        status_forcelist=CONFIG.statuses,
    )
    inner = (
        transport if transport is not None else httpx.AsyncHTTPTransport(limits=limits)
    )
    client = httpx.AsyncClient(
        transport=httpx_retries.RetryTransport(transport=inner, retry=retry)
    )

    return _adirect(client)


def _a_tenacity(
    transport: httpx.AsyncBaseTransport | None, limits: httpx.Limits
) -> AsyncCaller:
    import tenacity

    client = _aclient(transport, limits)

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(CONFIG.attempts),
        wait=tenacity.wait_random_exponential(
            multiplier=CONFIG.backoff_initial, max=CONFIG.backoff_max
        ),
        retry=tenacity.retry_if_exception(_retryable),
        reraise=True,
    )
    async def send(method: str, url: str, body: Body) -> int:
        response = await client.request(method, url, json=body)
        response.raise_for_status()
        return response.status_code

    return _astatuses_returned(send, client)


def _a_stamina(
    transport: httpx.AsyncBaseTransport | None, limits: httpx.Limits
) -> AsyncCaller:
    import stamina

    client = _aclient(transport, limits)

    @stamina.retry(
        on=_retryable,
        attempts=CONFIG.attempts,
        timeout=None,
        wait_initial=CONFIG.backoff_initial,
        wait_max=CONFIG.backoff_max,
        wait_jitter=CONFIG.backoff_initial,
    )
    async def send(method: str, url: str, body: Body) -> int:
        response = await client.request(method, url, json=body)
        response.raise_for_status()
        return response.status_code

    return _astatuses_returned(send, client)


ASYNC_CONTESTANTS: tuple[AsyncContestant, ...] = (
    AsyncContestant("httpx", _a_plain, "httpx.AsyncClient(), no retries", False),
    AsyncContestant("httpx (A/A)", _a_plain, "a second httpx.AsyncClient", False),
    AsyncContestant(
        "httpx-retries total=2",
        _a_httpx_retries,
        "httpx_retries.RetryTransport, as in the sync rows",
    ),
    AsyncContestant("tenacity", _a_tenacity, "async @tenacity.retry, as sync"),
    AsyncContestant("stamina", _a_stamina, "async @stamina.retry, as sync"),
    AsyncContestant(
        "reliable_client.AsyncClient",
        _a_rc_client,
        f"reliable_client.AsyncClient({_RC})",
        budgeted=True,
        ours=True,
    ),
    AsyncContestant(
        "AsyncRetryTransport",
        _a_rc_transport,
        "httpx.AsyncClient(transport=reliable_client.AsyncRetryTransport(...))",
        budgeted=True,
        ours=True,
    ),
)
