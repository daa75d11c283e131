"""A relay in a process of its own, for the crash tests (and nothing else).

    python -m tests.outbox_relay_child TARGET BASE_URL LEASE CONCURRENCY KIND POLL

Runs ``Outbox(TARGET).run(Client(base_url=BASE_URL))`` (KIND ``async``:
``arun`` with an ``AsyncClient``) until SIGTERM, looking at the store every
POLL seconds when idle, with the tests' fast redelivery; logs deliveries to
stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading

import httpx

from reliable_client import AsyncClient, Client, RetryPolicy
from reliable_client.outbox import Outbox

from .outbox_support import FAST


def main(argv: list[str]) -> int:
    target, base_url, lease, concurrency, kind, poll = argv
    if kind == "async":
        return asyncio.run(
            arun(target, base_url, float(lease), int(concurrency), float(poll))
        )
    logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    outbox = Outbox(target, lease=float(lease), redelivery=FAST)
    client = Client(
        base_url=base_url,
        timeout=httpx.Timeout(2.0),
        retry=RetryPolicy(max_attempts=4, backoff_initial=0.005, backoff_max=0.02),
    )
    stop = threading.Event()
    # run() sets ``stop`` on SIGTERM too; this handler covers the moment
    # before it is in place.
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print(f"{os.getpid()} relay ready", file=sys.stderr, flush=True)
    with client:
        counts = outbox.run(
            client, stop=stop, concurrency=int(concurrency), poll_interval=float(poll)
        )
    print(f"relay stopped: {dict(counts)}", file=sys.stderr)
    return 0


async def arun(
    target: str, base_url: str, lease: float, concurrency: int, poll: float
) -> int:
    logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    outbox = Outbox(target, lease=lease, redelivery=FAST)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"{os.getpid()} relay ready", file=sys.stderr, flush=True)
    async with AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(2.0),
        retry=RetryPolicy(max_attempts=4, backoff_initial=0.005, backoff_max=0.02),
    ) as client:
        counts = await outbox.arun(
            client, stop=stop, concurrency=concurrency, poll_interval=poll
        )
    print(f"relay stopped: {dict(counts)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
