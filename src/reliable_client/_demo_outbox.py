"""The demo's fourth caller: reliable_client + outbox, with a relay that
the demo kills.

Each payment is enqueued in an outbox (a SQLite file); a relay in a process
of its own delivers them through the demo's reliable_client caller.  The
demo SIGKILLs the relay ``RELAY_KILLS`` times while it works (each time a
share of the run's requests has reached the server) and starts a new one at
once; a killed relay's payments are taken over when their lease runs out.
The server tells what happened, as for the other callers.

    python -m reliable_client._demo_outbox OUTBOX BASE_URL CONCURRENCY

runs the relay (the demo starts it; not a public command).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from ._budget import RetryBudget
from ._client import Client
from ._idempotency import Idempotency
from ._policy import RetryPolicy
from .outbox import Outbox

if TYPE_CHECKING:
    from ._demo import DemoConfig, Result
    from .testing import ChaosServer

__all__ = ["IDEMPOTENCY", "LEASE", "REDELIVERY", "main", "run_outbox_caller"]

#: Seconds before a killed relay's payments are taken over by the next one.
LEASE = 0.5
#: The demo's keys: the payment id in the header and in the body's "id".
IDEMPOTENCY = Idempotency(resource_id_field="id")
#: Short redelivery for a demo that lasts seconds (dead after a minute).
REDELIVERY = RetryPolicy(
    max_attempts=100, backoff_initial=0.05, backoff_max=1.0, deadline=60.0
)


def relay_client(base_url: str) -> Client:
    """The relay's client: the demo's reliable_client caller, as is."""
    return Client(
        base_url=base_url,
        timeout=httpx.Timeout(1.0),
        retry=RetryPolicy(max_attempts=6, backoff_initial=0.05, backoff_max=1.0),
        budget=RetryBudget(),
        idempotency=IDEMPOTENCY,
    )


def main(argv: Sequence[str]) -> int:
    """The relay process: deliver until SIGTERM."""
    target, base_url, concurrency = argv
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    outbox = Outbox(target, lease=LEASE, redelivery=REDELIVERY, idempotency=IDEMPOTENCY)
    with relay_client(base_url) as client:
        outbox.run(client, stop=stop, concurrency=int(concurrency), poll_interval=0.05)
    return 0


class _Relay:
    """The relay process, killed and restarted by the demo."""

    def __init__(self, target: str, base_url: str, concurrency: int) -> None:
        self._args = [
            sys.executable,
            "-m",
            "reliable_client._demo_outbox",
            target,
            base_url,
            str(concurrency),
        ]
        self.kills = 0
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def kill_and_restart(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1
        self.process = self._start()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck relay
            self.process.kill()
            self.process.wait()


def _killer(
    relay: _Relay, server: ChaosServer, every: int, kills: int, done: threading.Event
) -> None:
    """SIGKILL the relay each time ``every`` more requests reached the server."""
    goal = every
    while relay.kills < kills and not done.wait(0.005):
        if len(server.requests("/payments")) >= goal:
            relay.kill_and_restart()
            goal = len(server.requests("/payments")) + every


def run_outbox_caller(
    config: DemoConfig,
    folder: Path,
    progress: Callable[[str, int, int], None] | None = None,
) -> Result:
    from ._demo import (
        OUTBOX_CALLER,
        RELAY_KILLS,
        PaymentsApp,
        Result,
        _make_store,
        count_payments,
    )
    from .server import IdempotencyMiddleware
    from .testing import ChaosServer

    work = folder / "outbox"
    work.mkdir(parents=True, exist_ok=True)
    payments = PaymentsApp()
    # A request cut short by the killed relay goes no further (ChaosServer
    # drops it, as a real HTTP server does).
    app = IdempotencyMiddleware(payments, store=_make_store(config, work))
    result = Result(OUTBOX_CALLER, config.calls)
    path = str(work / "payments-outbox.db")
    outbox = Outbox(path, lease=LEASE, redelivery=REDELIVERY, idempotency=IDEMPOTENCY)
    with ChaosServer(app=app, seed=config.seed, io_timeout=5.0) as server:
        server.faults("/payments", config.faults)
        relay = _Relay(path, server.url, config.concurrency)
        done = threading.Event()
        every = max(1, config.calls // (RELAY_KILLS + 1))
        killer = threading.Thread(
            target=_killer, args=(relay, server, every, RELAY_KILLS, done), daemon=True
        )
        killer.start()
        outage_after = int(config.calls * config.outage_at) if config.outage else -1
        enqueued = 0
        lock = threading.Lock()
        start = time.monotonic()

        def one(index: int) -> None:
            nonlocal enqueued
            time.sleep(max(0.0, start + index / config.rate - time.monotonic()))
            body = {"amount": 100 + index, "reference": f"order-{index}"}
            outbox.enqueue("POST", "/payments", json=body)
            with lock:
                enqueued += 1
                if enqueued == outage_after:
                    server.outage(config.outage, retry_after=config.outage)
                    result.outage_start = time.monotonic() - start

        try:
            with ThreadPoolExecutor(config.concurrency) as pool:
                list(pool.map(one, range(config.calls)))
            deadline = time.monotonic() + 60 + config.calls / 10
            while time.monotonic() < deadline:
                stats = outbox.stats()
                finished = stats["delivered"] + stats["dead"]
                if progress is not None:
                    progress(OUTBOX_CALLER, finished, config.calls)
                if stats["pending"] == 0:
                    break
                time.sleep(0.05)
        finally:
            done.set()
            killer.join(10)
            relay.stop()
        seen = server.requests("/payments")
        result.requests = len(seen)
        result.request_times = [s.at - start for s in seen]
    entries = outbox.entries(limit=config.calls)
    outbox.close()
    delivered = [e for e in entries if e.state == "delivered"]
    result.succeeded = len(delivered)
    result.failed = config.calls - len(delivered)
    result.latencies = [
        (e.delivered_at or e.created_at) - e.created_at for e in delivered
    ]
    result.relay_kills = relay.kills
    count_payments(result, payments, config.calls)
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
