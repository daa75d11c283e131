"""The store failing under a running relay (a SQLite file whose write lock
another connection holds past the busy timeout), stopping with entries
claimed ahead, cancelling ``arun``, and a forked process using the outbox."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reliable_client import AsyncClient, Client
from reliable_client.outbox import DeliveryCounts, Outbox, OutboxError
from reliable_client.testing import ChaosServer

from .outbox_support import EffectsApp, wait_until


@pytest.fixture
def app() -> EffectsApp:
    return EffectsApp()


@pytest.fixture
def server(app: EffectsApp) -> Iterator[ChaosServer]:
    with ChaosServer(app=app, lifetime=120) as running:
        yield running


class WriteLock:
    """Another connection holding the file's write lock (BEGIN IMMEDIATE)."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def run_relay(
    outbox: Outbox, url: str, kind: str, stop: threading.Event, concurrency: int = 8
) -> Any:
    counts: list[DeliveryCounts] = []

    def relay() -> None:
        if kind == "sync":
            with Client(base_url=url) as client:
                counts.append(
                    outbox.run(
                        client, stop=stop, poll_interval=0.05, concurrency=concurrency
                    )
                )
            return

        async def go() -> None:
            async with AsyncClient(base_url=url) as client:
                counts.append(
                    await outbox.arun(
                        client, stop=stop, poll_interval=0.05, concurrency=concurrency
                    )
                )

        asyncio.run(go())

    thread = threading.Thread(target=relay)
    thread.start()
    return thread, counts


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_relay_rides_out_a_locked_store_and_loses_nothing(
    sqlite_target: str, server: ChaosServer, app: EffectsApp, kind: str
) -> None:
    outbox = Outbox(sqlite_target, timeout=0.2)
    first = [outbox.enqueue("POST", "/things") for _ in range(5)]
    stop = threading.Event()
    thread, counts = run_relay(outbox, server.url, kind, stop)
    wait_until(lambda: all(outbox.get(e.id).state == "delivered" for e in first))  # type: ignore[union-attr]
    lock = WriteLock(sqlite_target)  # the store now fails every write
    try:
        with pytest.raises(OutboxError, match="database is locked"):
            outbox.enqueue("POST", "/things")
        time.sleep(0.6)  # the relay's claims fail meanwhile; it keeps going
    finally:
        lock.release()
    later = [outbox.enqueue("POST", "/things") for _ in range(5)]
    wait_until(lambda: all(outbox.get(e.id).state == "delivered" for e in later))  # type: ignore[union-attr]
    stop.set()
    thread.join(10)
    assert counts == [DeliveryCounts(delivered=10)]
    assert all(app.runs[e.idempotency_key] == 1 for e in first + later)


def test_a_result_waits_for_a_locked_store_to_be_recorded(
    sqlite_target: str, app: EffectsApp
) -> None:
    slow = EffectsApp(delay=0.3)
    outbox = Outbox(sqlite_target, timeout=0.1, lease=5.0)
    entry = outbox.enqueue("POST", "/things")
    stop = threading.Event()
    with ChaosServer(app=slow) as server:
        thread, counts = run_relay(outbox, server.url, "sync", stop)
        wait_until(lambda: server.requests())
        lock = WriteLock(sqlite_target)  # while the delivery runs
        time.sleep(0.6)  # its result cannot be written yet
        lock.release()
        wait_until(lambda: outbox.get(entry.id).state == "delivered")  # type: ignore[union-attr]
        stop.set()
        thread.join(10)
    assert counts == [DeliveryCounts(delivered=1)]
    assert slow.runs[entry.idempotency_key] == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_one_pass_raises_when_the_store_fails(
    sqlite_target: str, server: ChaosServer, kind: str
) -> None:
    outbox = Outbox(sqlite_target, timeout=0.1)
    outbox.enqueue("POST", "/things")
    lock = WriteLock(sqlite_target)
    try:
        with pytest.raises(OutboxError, match="database is locked"):
            if kind == "sync":
                with Client(base_url=server.url) as client:
                    outbox.deliver(client)
            else:

                async def go() -> None:
                    async with AsyncClient(base_url=server.url) as client:
                        await outbox.adeliver(client)

                asyncio.run(go())
    finally:
        lock.release()
    assert outbox.stats()["pending"] == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_stopping_gives_back_what_was_claimed_ahead(
    outbox_target: str, kind: str
) -> None:
    app = EffectsApp(delay=0.5)
    outbox = Outbox(outbox_target)
    entries = [outbox.enqueue("POST", f"/things/{n}") for n in range(12)]
    stop = threading.Event()
    with ChaosServer(app=app) as server:
        thread, counts = run_relay(outbox, server.url, kind, stop, concurrency=3)
        wait_until(lambda: len(server.requests()) >= 3)
        stop.set()  # three deliveries running, others claimed ahead of them
        thread.join(10)
        sent = {s.headers["idempotency-key"] for s in server.requests()}
    (done,) = counts
    assert done.delivered == len(sent) == 3 and done.released <= 9
    states = [outbox.get(e.id) for e in entries]
    delivered = [s for s in states if s and s.state == "delivered"]
    pending = [s for s in states if s and s.state == "pending"]
    assert {s.idempotency_key for s in delivered} == sent
    assert len(pending) == 9 and {s.deliveries for s in pending} == {0}
    assert outbox.stats()["in_flight"] == 0  # nothing left leased


def test_cancelling_arun_leaves_its_entry_to_be_delivered_again(
    sqlite_target: str,
) -> None:
    app = EffectsApp(delay=2.0)
    outbox = Outbox(sqlite_target, lease=0.3)
    entry = outbox.enqueue("POST", "/things")

    async def cancelled() -> None:
        async with AsyncClient(base_url=server.url) as client:
            task = asyncio.create_task(outbox.arun(client, poll_interval=0.05))
            while not server.requests():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with ChaosServer(app=app) as server:
        asyncio.run(cancelled())
        time.sleep(0.35)  # the lease runs out
        held = outbox._store.claim("the next relay", 1, 30.0)
    assert [c.id for c in held] == [str(entry.id)] and held[0].deliveries == 2


def test_a_forked_child_opens_connections_of_its_own(outbox_target: str) -> None:
    # A child that used the parent's pooled connections would talk over the
    # parent's sockets at the same time, and its close() end the parent's
    # sessions.
    outbox = Outbox(outbox_target)
    outbox.enqueue("POST", "/before")
    assert outbox.stats()["pending"] == 1  # the pools hold connections now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 0
        try:
            for n in range(20):
                outbox.enqueue("POST", f"/child/{n}")
                outbox.stats()
            outbox.close()
        except BaseException:
            code = 1
        os._exit(code)
    for n in range(20):
        outbox.enqueue("POST", f"/parent/{n}")
        outbox.stats()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert outbox.stats()["pending"] == 41


def test_a_child_forked_while_another_thread_holds_a_lock_can_write(
    outbox_target: str,
) -> None:
    outbox = Outbox(outbox_target)
    outbox.enqueue("POST", "/before")
    held, release = threading.Event(), threading.Event()
    store = outbox._store
    lock = store._lock if hasattr(store, "_lock") else store._file._lock

    def holding() -> None:
        with lock:  # as a relay's thread would, for a moment
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holding)
    thread.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        signal.alarm(10)  # a child that hangs on the lock dies here
        code = 0
        try:
            outbox.enqueue("POST", "/child")
        except BaseException:
            code = 1
        os._exit(code)
    release.set()
    thread.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert outbox.stats()["pending"] == 2


def _sessions(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_dead_parents_sessions_end_while_its_forked_child_lives(
    postgres_url: str,
) -> None:
    # The child must not keep the parent's sockets open: a parent that dies
    # (no Terminate sent) would leave its sessions open on the server.
    assert _sessions(postgres_url) == 0
    parent = os.fork()
    if parent == 0:  # pragma: no cover - the child's coverage is not collected
        outbox = Outbox(postgres_url)
        outbox.enqueue("POST", "/a")
        outbox.stats()
        if os.fork() == 0:
            time.sleep(5)  # the child lives on
            os._exit(0)
        os._exit(0)  # the parent dies at once
    os.waitpid(parent, 0)
    assert wait_until(lambda: _sessions(postgres_url) == 0, timeout=3.0)
