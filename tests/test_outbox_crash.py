"""Crashes: relays SIGKILLed at random moments, stopped (SIGSTOP) past their
lease, terminated; four relays on one store; a PostgreSQL server that goes
away mid-run.  Against a loopback server that honours keys and loses 15% of
its answers after doing the work, counting what it did per key and per
resource id: every entry is delivered exactly once."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliable_client import Client, RetryPolicy
from reliable_client.outbox import DeliveryCounts, Outbox, OutboxEntry
from reliable_client.server import IdempotencyMiddleware, MemoryStore
from reliable_client.testing import ChaosServer, FaultMix

from .outbox_support import (
    FAST,
    EffectsApp,
    RelayProcess,
    wait_until,
)
from .pg import PostgresServer

SEED = int(os.environ.get("OUTBOX_CRASH_SEED", "20261201"))


@pytest.fixture
def app() -> EffectsApp:
    return EffectsApp()


@pytest.fixture
def lossy_server(app: EffectsApp) -> Iterator[ChaosServer]:
    """Keys honoured (the reference middleware); 15% of answers lost after
    the work was done."""
    # A request cut short by a killed relay goes no further: ChaosServer drops
    # it, as a real HTTP server does.
    keyed = IdempotencyMiddleware(app, store=MemoryStore())
    with ChaosServer(app=keyed, seed=SEED, lifetime=120) as server:
        server.faults("/things*", FaultMix(drop_after=0.15))
        yield server


def enqueue_many(outbox: Outbox, count: int) -> list[OutboxEntry]:
    return [
        outbox.enqueue(
            "POST",
            f"/things/{n}",
            json={"n": n},
            group=f"account-{n % 3}" if n % 5 == 0 else None,
        )
        for n in range(count)
    ]


def assert_each_once(
    outbox: Outbox, entries: list[OutboxEntry], app: EffectsApp, server: ChaosServer
) -> None:
    """Delivered, the work done once per entry, one key and id per entry."""
    rid_of = {e.idempotency_key: e.resource_id for e in entries}
    for entry in entries:
        got = outbox.get(entry.id)
        assert got is not None and got.state == "delivered", got
        assert got.status in (201, 303)
        assert app.runs[entry.idempotency_key] == 1
        assert app.made[entry.resource_id] == 1
    assert set(app.runs) == set(rid_of)  # no key the outbox did not make
    seen = server.requests()
    assert len(seen) >= len(entries)
    for request in seen:
        key = request.headers["idempotency-key"]
        assert request.headers["x-client-resource-id"] == rid_of[key]
    assert app.pairs == set(rid_of.items())


def test_relays_killed_at_random_moments_deliver_each_entry_once(
    outbox_target: str,
    lossy_server: ChaosServer,
    app: EffectsApp,
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    outbox = Outbox(outbox_target)
    entries = enqueue_many(outbox, 60)
    kills = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        relay = RelayProcess(  # sync and async relays in turn
            outbox_target,
            lossy_server.url,
            tmp_path / "relays.log",
            kind="async" if kills % 2 else "sync",
        )
        if kills < 5:
            # After a random number of requests reached the server: SIGKILL.
            goal = len(lossy_server.requests()) + rng.randint(1, 12)

            def reached(goal: int = goal, relay: RelayProcess = relay) -> bool:
                return len(lossy_server.requests()) >= goal or not relay.alive()

            wait_until(reached, timeout=20)
            relay.kill()
            kills += 1
            continue
        wait_until(lambda: outbox.stats()["pending"] == 0, timeout=30)
        assert relay.stop() == 0
        break
    assert kills == 5
    assert_each_once(outbox, entries, app, lossy_server)
    assert outbox.stats()["in_flight"] == 0


def test_four_relays_on_one_store_deliver_each_entry_once(
    outbox_target: str, lossy_server: ChaosServer, app: EffectsApp, tmp_path: Path
) -> None:
    outbox = Outbox(outbox_target)
    relays = [  # two sync relays, two async ones
        RelayProcess(
            outbox_target, lossy_server.url, tmp_path / "relays.log", kind=kind
        )
        for kind in ("sync", "async", "sync", "async")
    ]
    wait_until(lambda: all(relay.ready() for relay in relays), timeout=20)
    entries = enqueue_many(outbox, 150)  # while all four are polling
    # One of them dies on the way.
    wait_until(lambda: len(lossy_server.requests()) >= 40, timeout=20)
    relays[0].kill()
    wait_until(lambda: outbox.stats()["pending"] == 0, timeout=30)
    assert [relay.stop() for relay in relays[1:]] == [0, 0, 0]
    assert_each_once(outbox, entries, app, lossy_server)
    log = (tmp_path / "relays.log").read_text()
    senders = {line.split()[0] for line in log.splitlines() if " delivered " in line}
    assert len(senders) >= 2  # they shared the work


def test_a_relay_stopped_past_its_lease_cannot_record_over_its_successor(
    outbox_target: str, tmp_path: Path
) -> None:
    app = EffectsApp(delay=1.5)  # no middleware: the second request runs too
    outbox = Outbox(outbox_target, lease=0.9)
    entry = outbox.enqueue("POST", "/things/1")
    log = tmp_path / "relay.log"
    with ChaosServer(app=app, lifetime=60) as server:
        # Renewing every 0.3 s and looking for work every second, it is
        # almost surely waiting for the answer, not writing, when stopped (a
        # SQLite relay frozen while it writes would hold the file's lock).
        frozen = RelayProcess(outbox_target, server.url, log, lease=0.9, poll=1.0)
        wait_until(lambda: server.requests(), timeout=20)
        os.kill(frozen.process.pid, signal.SIGSTOP)  # a paused VM, a GC pause
        time.sleep(1.0)  # its lease runs out; it cannot renew it
        with Client(base_url=server.url) as client:
            counts = outbox.deliver(client)  # the successor takes over
        assert counts == DeliveryCounts(delivered=1)
        os.kill(frozen.process.pid, signal.SIGCONT)
        wait_until(lambda: "result not recorded" in log.read_text(), timeout=20)
        assert frozen.stop() == 0
    done = outbox.get(entry.id)
    assert done is not None and done.state == "delivered"
    assert done.status == 303 and done.already_existed  # the successor's result
    assert app.made[entry.resource_id] == 1
    assert app.runs[entry.idempotency_key] == 2  # both sent it, with one key


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigterm_lets_a_delivery_finish_and_record(
    outbox_target: str, tmp_path: Path, kind: str
) -> None:
    app = EffectsApp(delay=0.5)
    outbox = Outbox(outbox_target)
    entry = outbox.enqueue("POST", "/things/1")
    with ChaosServer(app=app, lifetime=60) as server:
        relay = RelayProcess(
            outbox_target, server.url, tmp_path / "relay.log", kind=kind
        )
        wait_until(lambda: server.requests(), timeout=20)
        assert relay.stop() == 0  # SIGTERM mid-delivery
    done = outbox.get(entry.id)
    assert done is not None and done.state == "delivered" and done.status == 201
    assert outbox.stats()["in_flight"] == 0
    assert "relay stopped: {'delivered': 1" in (tmp_path / "relay.log").read_text()


def test_postgres_going_away_mid_run_loses_and_doubles_nothing(
    lossy_server: ChaosServer, app: EffectsApp
) -> None:
    database = PostgresServer()
    try:
        url = database.url()
        outbox = Outbox(url, lease=1.0, redelivery=FAST, timeout=1.0)
        entries = enqueue_many(outbox, 40)
        stop = threading.Event()
        counts: list[DeliveryCounts] = []
        client = Client(
            base_url=lossy_server.url,
            retry=RetryPolicy(max_attempts=4, backoff_initial=0.005, backoff_max=0.02),
        )

        def relay() -> None:
            counts.append(
                outbox.run(client, stop=stop, poll_interval=0.05, concurrency=2)
            )

        thread = threading.Thread(target=relay)
        thread.start()
        wait_until(lambda: outbox.stats()["delivered"] >= 10, timeout=20)
        database.stop("immediate")  # the server crashes mid-run
        time.sleep(1.5)
        database.start()
        wait_until(lambda: outbox.stats()["pending"] == 0, timeout=40, every=0.2)
        stop.set()
        thread.join(30)
        client.close()
        assert not thread.is_alive() and counts[0].delivered >= 30
        assert_each_once(outbox, entries, app, lossy_server)
    finally:
        database.close()
