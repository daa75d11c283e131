"""The demo: the same payments workload through four callers, under faults.

Everything runs in-process on 127.0.0.1: a small payments API behind the
reference Idempotency-Key middleware, behind a ChaosServer that drops
connections (some after the payment was made), resets them, stalls, answers
503, and has a full outage window.  Four callers send the same logical
payments:

- plain httpx: one attempt, no keys;
- the naive fix: retry everything (tenacity), no keys;
- reliable_client: keys, client-generated ids, the safety rule, a budget;
- reliable_client + outbox: each payment written down in an outbox (SQLite)
  and delivered by a relay in a process of its own, which the demo kills
  with SIGKILL several times during the run and restarts.

The server then tells what really happened: payments created, duplicates,
payments missing.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import tenacity

from ._budget import RetryBudget
from ._client import Client
from ._idempotency import Idempotency
from ._policy import RetryPolicy
from .testing import ChaosServer, FaultMix

__all__ = ["DemoConfig", "PaymentsApp", "Result", "parse_faults", "run_demo"]

CALLERS = (
    "plain httpx",
    "naive retries",
    "reliable_client",
    "reliable_client + outbox",
)
OUTBOX_CALLER = CALLERS[3]
#: Times the outbox caller's relay process is SIGKILLed during a run.
RELAY_KILLS = 4
DEFAULT_FAULTS = (
    "drop_after=0.08,drop_before=0.03,reset=0.03,unavailable=0.06,stall=0.01"
)


class PaymentsApp:
    """A minimal payments API (bare ASGI).

    ``POST /payments`` with a JSON object ``{"amount": int, "reference": str}``
    creates a payment and answers 201 Created.  The payment id is the
    client-generated resource id (header ``X-Client-Resource-Id``, or the
    body's ``id``) when there is one, else a server-made UUID; a create for an
    id that exists already answers 303 See Other.  ``GET /payments/{id}``
    returns a payment.
    """

    def __init__(self, work_seconds: float = 0.002) -> None:
        self.work_seconds = work_seconds
        self.payments: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/payments":
            await self._create(scope, body, send)
        elif method == "GET" and path.startswith("/payments/"):
            payment = self.payments.get(path.removeprefix("/payments/"))
            if payment is None:
                await _respond(send, 404, {"detail": "no such payment"})
            else:
                await _respond(send, 200, payment)
        else:
            await _respond(send, 404, {"detail": "not found"})

    async def _create(self, scope: Any, body: bytes, send: Any) -> None:
        try:
            data = json.loads(body)
            amount, reference = int(data["amount"]), str(data["reference"])
        except (ValueError, KeyError, TypeError):
            await _respond(send, 400, {"detail": "want {amount, reference}"})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        payment_id = headers.get("x-client-resource-id") or data.get("id")
        await asyncio.sleep(self.work_seconds)  # the work: charging a card
        async with self._lock:  # create-if-absent is atomic
            if payment_id and payment_id in self.payments:
                location = f"/payments/{payment_id}"
                await _respond(send, 303, {"id": payment_id}, location)
                return
            payment_id = payment_id or str(uuid.uuid4())
            payment = {"id": payment_id, "amount": amount, "reference": reference}
            self.payments[payment_id] = payment
        await _respond(send, 201, payment, f"/payments/{payment_id}")


async def _respond(
    send: Any, status: int, payload: object, location: str | None = None
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json")]
    if location is not None:
        headers.append((b"location", location.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- callers ----------------------------------------------------------------

TIMEOUT = httpx.Timeout(1.0)


def _plain(
    base_url: str,
) -> tuple[Callable[[dict[str, Any]], bool], Callable[[], None]]:
    client = httpx.Client(base_url=base_url, timeout=TIMEOUT)

    def pay(body: dict[str, Any]) -> bool:
        return client.post("/payments", json=body).status_code == 201

    return pay, client.close


def _naive(
    base_url: str,
) -> tuple[Callable[[dict[str, Any]], bool], Callable[[], None]]:
    """What many codebases do: retry every failure, keys or not."""
    client = httpx.Client(base_url=base_url, timeout=TIMEOUT)

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(6),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
        retry=tenacity.retry_if_exception_type(httpx.HTTPError),
        reraise=True,
    )
    def pay(body: dict[str, Any]) -> bool:
        response = client.post("/payments", json=body)
        response.raise_for_status()
        return response.status_code == 201

    return pay, client.close


def _reliable(
    base_url: str,
) -> tuple[Callable[[dict[str, Any]], bool], Callable[[], None]]:
    client = Client(
        base_url=base_url,
        timeout=TIMEOUT,
        retry=RetryPolicy(max_attempts=6, backoff_initial=0.05, backoff_max=1.0),
        budget=RetryBudget(),
        idempotency=Idempotency(resource_id_field="id"),
    )

    def pay(body: dict[str, Any]) -> bool:
        # 303: the payment exists already (an earlier attempt made it).
        return client.post("/payments", json=body).status_code in (201, 303)

    return pay, client.close


_MAKERS = {"plain httpx": _plain, "naive retries": _naive, "reliable_client": _reliable}


# -- the run ----------------------------------------------------------------


@dataclass
class Result:
    caller: str
    calls: int
    succeeded: int = 0
    failed: int = 0
    payments: int = 0
    duplicates: int = 0
    missing: int = 0
    requests: int = 0
    relay_kills: int | None = None
    latencies: list[float] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    outage_start: float | None = None

    @property
    def amplification(self) -> float:
        return self.requests / self.calls if self.calls else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class DemoConfig:
    calls: int = 500
    concurrency: int = 16
    faults: FaultMix = field(default_factory=lambda: parse_faults(DEFAULT_FAULTS))
    outage: float = 0.5
    outage_at: float = 0.3
    rate: float = 200.0
    seed: int = 7
    store: str = "sqlite"
    redis_url: str | None = None


def _make_store(config: DemoConfig, folder: Path) -> Any:
    from .server import MemoryStore, RedisStore, SQLiteStore

    if config.store == "memory":
        return MemoryStore()
    if config.store == "redis":
        return RedisStore(config.redis_url or "redis://127.0.0.1:6379/0")
    return SQLiteStore(str(folder / "idempotency.sqlite3"))


def run_caller(
    name: str,
    config: DemoConfig,
    folder: Path,
    progress: Callable[[str, int, int], None] | None = None,
) -> Result:
    from .server import IdempotencyMiddleware

    if name == OUTBOX_CALLER:
        from ._demo_outbox import run_outbox_caller

        return run_outbox_caller(config, folder, progress)
    payments = PaymentsApp()
    app = IdempotencyMiddleware(payments, store=_make_store(config, folder / name))
    result = Result(name, config.calls)
    with ChaosServer(app=app, seed=config.seed, io_timeout=5.0) as server:
        server.faults("/payments", config.faults)
        pay, close = _MAKERS[name](server.url)
        # The outage starts when a share of the calls is done, so that every
        # caller meets it at the same point of its run.
        outage_after = int(config.calls * config.outage_at) if config.outage else -1
        done = 0
        lock = threading.Lock()
        start = time.monotonic()

        def one(index: int) -> None:
            nonlocal done
            # Payments arrive at a steady rate, as from users, not in a burst.
            time.sleep(max(0.0, start + index / config.rate - time.monotonic()))
            body = {"amount": 100 + index, "reference": f"order-{index}"}
            started = time.monotonic()
            try:
                ok = pay(body)
            except Exception:  # the caller saw a failure: a lost or unknown outcome
                ok = False
            elapsed = time.monotonic() - started
            with lock:
                done += 1
                if done == outage_after:
                    # A maintenance window: every request answers 503 with
                    # Retry-After until it ends.
                    server.outage(config.outage, retry_after=config.outage)
                    result.outage_start = time.monotonic() - start
                result.latencies.append(elapsed)
                if ok:
                    result.succeeded += 1
                else:
                    result.failed += 1
                if progress is not None:
                    progress(name, done, config.calls)

        try:
            with ThreadPoolExecutor(config.concurrency) as pool:
                list(pool.map(one, range(config.calls)))
        finally:
            close()
        seen = server.requests("/payments")
        result.requests = len(seen)
        result.request_times = [s.at - start for s in seen]
    count_payments(result, payments, config.calls)
    return result


def count_payments(result: Result, payments: PaymentsApp, calls: int) -> None:
    """What the server really did: payments made, duplicates, missing."""
    references = [p["reference"] for p in payments.payments.values()]
    result.payments = len(references)
    result.duplicates = len(references) - len(set(references))
    result.missing = calls - len(set(references))


def run_demo(
    config: DemoConfig, progress: Callable[[str, int, int], None] | None = None
) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="reliable-client-demo-") as tmp:
        folder = Path(tmp)
        results = []
        for name in CALLERS:
            (folder / name).mkdir(exist_ok=True)
            results.append(run_caller(name, config, folder, progress))
        return results


# -- command line -------------------------------------------------------------


def parse_faults(text: str) -> FaultMix:
    """``"drop_after=0.1,unavailable=0.05"`` as a FaultMix (clear errors)."""
    allowed = {"drop_after", "drop_before", "reset", "unavailable", "stall", "truncate"}
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or name not in allowed:
            raise ValueError(
                f"bad fault {part!r}: want NAME=RATE with NAME one of "
                f"{', '.join(sorted(allowed))}"
            )
        try:
            values[name] = float(raw)
        except ValueError:
            raise ValueError(f"bad rate in {part!r}: not a number") from None
    return FaultMix(retry_after=0.2, stall_seconds=2.0, **values)
