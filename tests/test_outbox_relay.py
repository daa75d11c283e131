"""The relays: what is sent, what each answer records, groups, slots,
leases, stopping; sync and async alike (the ``kind`` parameter)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reliable_client import AsyncClient, Client, Idempotency, RetryPolicy
from reliable_client.outbox import DeliveryCounts, Outbox, OutboxEntry
from reliable_client.testing import ChaosServer, Forward, Reply, closed_port

from .outbox_support import FAST, EffectsApp, wait_until

NO_RETRY = RetryPolicy(max_attempts=1)


@pytest.fixture
def app() -> EffectsApp:
    return EffectsApp()


@pytest.fixture
def server(app: EffectsApp) -> Iterator[ChaosServer]:
    with ChaosServer(app=app, lifetime=120) as running:
        yield running


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def deliver(
    outbox: Outbox, kind: str, base_url: str = "", **kwargs: Any
) -> DeliveryCounts:
    """One ``deliver`` (or ``adeliver``) pass through a fresh client."""
    options: dict[str, Any] = {
        "base_url": base_url,
        "retry": kwargs.pop("retry", NO_RETRY),
        "timeout": 5.0,
    }
    options.update(kwargs.pop("client", {}))
    if kind == "sync":
        with Client(**options) as client:
            return outbox.deliver(client, **kwargs)

    async def go() -> DeliveryCounts:
        async with AsyncClient(**options) as client:
            return await outbox.adeliver(client, **kwargs)

    return asyncio.run(go())


def final(outbox: Outbox, entry: OutboxEntry) -> OutboxEntry:
    got = outbox.get(entry.id)
    assert got is not None
    return got


def test_delivery_sends_what_was_enqueued_with_the_clients_auth(
    outbox_target: str, server: ChaosServer, kind: str
) -> None:
    outbox = Outbox(outbox_target)
    entry = outbox.enqueue(
        "POST", "/echo?q=1", json={"amount": 5, "name": "é"}, headers={"X-Trace": "t1"}
    )
    counts = deliver(outbox, kind, server.url, client={"auth": ("relay", "secret")})
    assert counts == DeliveryCounts(delivered=1) and counts["delivered"] == 1
    (seen,) = server.requests("/echo")
    assert seen.method == "POST" and seen.query == "q=1"
    assert (
        seen.body == httpx.Request("POST", "/", json={"amount": 5, "name": "é"}).content
    )
    assert seen.headers["idempotency-key"] == entry.idempotency_key
    assert seen.headers["x-client-resource-id"] == entry.resource_id
    assert seen.headers["x-trace"] == "t1"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["authorization"].startswith("Basic ")
    done = final(outbox, entry)
    assert done.state == "delivered" and done.status == 200 and done.attempts == 1
    assert json.loads(done.response_body or b"")["method"] == "POST"
    assert done.response_headers["content-type"] == "application/json"
    assert done.delivered_at is not None and done.delivered_at >= done.created_at


def test_every_attempt_of_every_delivery_carries_one_key_and_id(
    sqlite_target: str, server: ChaosServer, kind: str
) -> None:
    server.script("/things", Reply(503), Reply(500), Reply(503), Forward())
    outbox = Outbox(sqlite_target, redelivery=FAST)
    entry = outbox.enqueue("POST", "/things", json={"n": 1})
    retry = RetryPolicy(max_attempts=2, backoff_initial=0.001, backoff_max=0.001)
    first = deliver(outbox, kind, server.url, retry=retry)
    assert first.rescheduled == 1
    time.sleep(0.03)
    assert deliver(outbox, kind, server.url, retry=retry).delivered == 1
    seen = server.requests("/things")
    assert len(seen) == 4
    assert {s.headers["idempotency-key"] for s in seen} == {entry.idempotency_key}
    assert {s.headers["x-client-resource-id"] for s in seen} == {entry.resource_id}
    assert len({s.body for s in seen}) == 1
    done = final(outbox, entry)
    assert (done.attempts, done.deliveries, done.status) == (4, 2, 201)


@pytest.mark.parametrize(
    ("path", "state", "status"),
    [
        ("/status/201", "delivered", 201),
        ("/status/204", "delivered", 204),
        ("/status/303", "delivered", 303),
        ("/status/400", "dead", 400),
        ("/status/404", "dead", 404),
        ("/status/422", "dead", 422),
        ("/status/408", "pending", None),
        ("/status/409", "pending", None),
        ("/status/425", "pending", None),
        ("/status/429", "pending", None),
        ("/status/500", "pending", None),
        ("/status/501", "pending", None),
        ("/status/307", "pending", None),
    ],
)
def test_what_each_answer_records(
    sqlite_target: str, server: ChaosServer, path: str, state: str, status: int | None
) -> None:
    outbox = Outbox(sqlite_target, redelivery=FAST)
    entry = outbox.enqueue("POST", path)
    deliver(outbox, "sync", server.url)
    done = final(outbox, entry)
    assert (done.state, done.status) == (state, status)
    assert done.already_existed is (path == "/status/303")
    if state == "dead":
        assert done.last_error == f"status {status}"
        assert json.loads(done.response_body or b"") == {"path": path}
    if state == "pending":
        assert done.last_error == f"status {path[-3:]}" and done.due_at is not None


def test_a_303_to_a_known_resource_delivers_as_already_existed(
    outbox_target: str, server: ChaosServer, app: EffectsApp, kind: str
) -> None:
    outbox = Outbox(outbox_target)
    made = outbox.enqueue("POST", "/things", headers={"X-Client-Resource-Id": "r1"})
    again = outbox.enqueue("POST", "/things", headers={"X-Client-Resource-Id": "r1"})
    deliver(outbox, kind, server.url, concurrency=1)
    assert final(outbox, made).status == 201
    assert final(outbox, again).status == 303
    assert final(outbox, again).already_existed and app.made["r1"] == 1


def test_redelivery_gives_up_into_dead_keeping_the_last_answer(
    outbox_target: str, server: ChaosServer, kind: str
) -> None:
    server.script("/down", Reply(503, {"Content-Type": "text/plain"}, b"later"))
    policy = RetryPolicy(max_attempts=2, backoff_initial=0.01, backoff_max=0.01)
    outbox = Outbox(outbox_target, redelivery=policy)
    entry = outbox.enqueue("POST", "/down")
    assert deliver(outbox, kind, server.url).rescheduled == 1
    time.sleep(0.03)
    assert deliver(outbox, kind, server.url).dead == 1
    done = final(outbox, entry)
    assert (
        done.state == "dead" and done.status == 503 and done.response_body == b"later"
    )
    assert done.last_error == "status 503; redelivery gave up (2 deliveries)"
    assert outbox.stats()["relay_dead"] == 1


def test_a_transport_error_redelivers(sqlite_target: str, kind: str) -> None:
    outbox = Outbox(sqlite_target, redelivery=FAST)
    entry = outbox.enqueue("POST", f"http://127.0.0.1:{closed_port()}/x")
    assert deliver(outbox, kind).rescheduled == 1
    done = final(outbox, entry)
    assert done.state == "pending" and done.last_error == "ConnectError"


def test_a_relative_url_without_base_url_redelivers_naming_the_error(
    sqlite_target: str,
) -> None:
    outbox = Outbox(sqlite_target, redelivery=FAST)
    entry = outbox.enqueue("POST", "/x")
    assert deliver(outbox, "sync").rescheduled == 1
    assert final(outbox, entry).last_error == "UnsupportedProtocol"


def test_retry_after_sets_the_next_delivery(
    sqlite_target: str, server: ChaosServer
) -> None:
    server.script("/busy", Reply(429, {"Retry-After": "2"}), Forward())
    outbox = Outbox(sqlite_target, redelivery=FAST)
    entry = outbox.enqueue("POST", "/busy")
    deliver(outbox, "sync", server.url)
    pending = final(outbox, entry)
    assert pending.due_at is not None
    assert 1.9 <= pending.due_at - time.time() <= 2.1
    assert deliver(outbox, "sync", server.url) == DeliveryCounts()  # not due yet


def test_an_entry_sent_before_is_never_sent_after_its_deadline(
    sqlite_target: str, server: ChaosServer
) -> None:
    policy = RetryPolicy(max_attempts=5, backoff_initial=0.01, deadline=0.3)
    outbox = Outbox(sqlite_target, redelivery=policy)
    entry = outbox.enqueue("POST", "/things")
    outbox._store.claim("a relay that dies", 1, 0.05)  # it may have sent it
    time.sleep(0.35)
    assert deliver(outbox, "sync", server.url).dead == 1
    assert server.requests() == []
    done = final(outbox, entry)
    assert done.state == "dead" and "not sent again" in (done.last_error or "")


def test_set_cookie_is_not_kept_and_bodies_are_capped(
    sqlite_target: str, server: ChaosServer, kind: str
) -> None:
    server.script(
        "/big", Reply(200, [("Set-Cookie", "s=1"), ("X-A", "b")], b"x" * 5000)
    )
    outbox = Outbox(sqlite_target, max_response_body=100)
    entry = outbox.enqueue("POST", "/big")
    deliver(outbox, kind, server.url)
    done = final(outbox, entry)
    assert done.response_body == b"x" * 100
    assert "set-cookie" not in done.response_headers
    assert done.response_headers["x-a"] == "b"


def test_a_group_is_delivered_in_order_one_at_a_time(
    outbox_target: str, kind: str
) -> None:
    app = EffectsApp(delay=0.01)
    running: list[int] = [0]
    most = [0]
    order: list[int] = []

    async def watch(scope: Any, receive: Any, send: Any) -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        if scope["path"].startswith("/things/"):
            order.append(int(scope["path"].rsplit("/", 1)[1]))
        try:
            await app(scope, receive, send)
        finally:
            running[0] -= 1

    outbox = Outbox(outbox_target)
    for n in range(8):
        outbox.enqueue("POST", f"/things/{n}", group="account-1")
    loose = [outbox.enqueue("POST", "/loose") for _ in range(4)]
    with ChaosServer(app=watch) as server:
        counts = deliver(outbox, kind, server.url, concurrency=8)
    assert counts.delivered == 12
    assert order == list(range(8))
    assert all(final(outbox, e).state == "delivered" for e in loose)


def test_a_dead_entry_does_not_hold_back_its_group(
    sqlite_target: str, server: ChaosServer, kind: str
) -> None:
    outbox = Outbox(sqlite_target)
    dead = outbox.enqueue("POST", "/status/404", group="g")
    after = outbox.enqueue("POST", "/things", group="g")
    assert deliver(outbox, kind, server.url).total == 2
    assert final(outbox, dead).state == "dead"
    assert final(outbox, after).state == "delivered"


def test_a_slow_endpoint_does_not_stall_the_others(
    sqlite_target: str, kind: str
) -> None:
    app = EffectsApp()

    async def slow_or_fast(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"].startswith("/slow"):
            await asyncio.sleep(1.2)
        await app(scope, receive, send)

    outbox = Outbox(sqlite_target)
    slow = [outbox.enqueue("POST", "/slow") for _ in range(4)]
    fast = [outbox.enqueue("POST", "/fast") for _ in range(5)]
    with ChaosServer(app=slow_or_fast) as server:
        result: list[DeliveryCounts] = []
        thread = threading.Thread(
            target=lambda: result.append(
                deliver(outbox, kind, server.url, concurrency=2)
            )
        )
        started = time.monotonic()
        thread.start()
        wait_until(lambda: all(final(outbox, e).state == "delivered" for e in fast))
        fast_done = time.monotonic() - started
        assert fast_done < 1.1  # while the first two slow ones still run
        assert final(outbox, slow[0]).state == "pending"
        thread.join(30)
    assert result == [DeliveryCounts(delivered=9)]


def test_a_slow_delivery_renews_its_lease(outbox_target: str, kind: str) -> None:
    app = EffectsApp(delay=1.0)
    outbox = Outbox(outbox_target, lease=0.3)
    entry = outbox.enqueue("POST", "/things")
    with ChaosServer(app=app) as server:
        done: list[DeliveryCounts] = []
        thread = threading.Thread(
            target=lambda: done.append(deliver(outbox, kind, server.url))
        )
        thread.start()
        wait_until(lambda: server.requests())
        time.sleep(0.6)  # two leases: renewed meanwhile, so nobody can take it
        assert outbox._store.claim("another relay", 10, 30.0) == []
        thread.join(30)
    assert done == [DeliveryCounts(delivered=1)]
    assert final(outbox, entry).status == 201 and app.runs[entry.idempotency_key] == 1


def test_deliver_limit_and_counts(
    sqlite_target: str, server: ChaosServer, kind: str
) -> None:
    outbox = Outbox(sqlite_target)
    for _ in range(5):
        outbox.enqueue("POST", "/things")
    assert deliver(outbox, kind, server.url, limit=2).delivered == 2
    stats = outbox.stats()
    assert (stats["pending"], stats["delivered"]) == (3, 2)
    assert stats["relay_requests"] == 2


def test_run_delivers_as_entries_come_until_stopped(
    outbox_target: str, server: ChaosServer, kind: str
) -> None:
    outbox = Outbox(outbox_target)
    stop = threading.Event()
    counts: list[DeliveryCounts] = []

    def relay() -> None:
        if kind == "sync":
            with Client(base_url=server.url) as client:
                counts.append(outbox.run(client, stop=stop, poll_interval=0.05))
            return

        async def go() -> None:
            async with AsyncClient(base_url=server.url) as client:
                counts.append(await outbox.arun(client, stop=stop, poll_interval=0.05))

        asyncio.run(go())

    thread = threading.Thread(target=relay)
    thread.start()
    entries = [outbox.enqueue("POST", "/things") for _ in range(3)]
    for entry in entries:
        assert outbox.wait(entry.id, timeout=10).state == "delivered"
    later = outbox.enqueue("POST", "/things")
    assert outbox.wait(later.id, timeout=10).status == 201
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and counts == [DeliveryCounts(delivered=4)]


def test_results_reach_callbacks_and_waiters(
    sqlite_target: str, server: ChaosServer
) -> None:
    seen: list[OutboxEntry] = []
    outbox = Outbox(sqlite_target, on_result=seen.append)
    good = outbox.enqueue("POST", "/things")
    bad = outbox.enqueue("POST", "/status/404")

    async def waiting() -> list[OutboxEntry]:
        return list(
            await asyncio.gather(
                outbox.await_entry(good.id), outbox.await_entry(bad.id)
            )
        )

    thread = threading.Thread(target=lambda: deliver(outbox, "sync", server.url))
    results: list[list[OutboxEntry]] = []
    waiter = threading.Thread(target=lambda: results.append(asyncio.run(waiting())))
    waiter.start()
    thread.start()
    thread.join(10)
    waiter.join(10)
    assert [e.state for e in results[0]] == ["delivered", "dead"]
    assert {(e.id, e.state) for e in seen} == {(good.id, "delivered"), (bad.id, "dead")}
    by_id = {e.id: e for e in seen}
    assert by_id[good.id].status == 201 and by_id[good.id].attempts == 1
    assert by_id[bad.id].last_error == "status 404"
    with pytest.raises(KeyError, match="no outbox entry"):
        outbox.wait("01a230c8-9186-7198-bfa1-a69d4ea220aa")
    pending = outbox.enqueue("POST", "/things")
    with pytest.raises(TimeoutError, match=r"not delivered or dead within 0.05 s"):
        outbox.wait(pending.id, timeout=0.05)

    async def late() -> None:
        await outbox.await_entry(pending.id, timeout=0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(late())


def test_a_callback_that_raises_is_logged_and_ignored(
    sqlite_target: str, server: ChaosServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(entry: OutboxEntry) -> None:
        raise RuntimeError("boom")

    outbox = Outbox(sqlite_target, on_result=broken)
    entry = outbox.enqueue("POST", "/things")
    with caplog.at_level(logging.ERROR, "reliable_client.outbox"):
        assert deliver(outbox, "sync", server.url).delivered == 1
    assert "on_result callback raised" in caplog.text
    assert final(outbox, entry).state == "delivered"


def test_logs_name_deliveries_without_query_headers_or_bodies(
    sqlite_target: str, server: ChaosServer, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(sqlite_target, redelivery=FAST)
    good = outbox.enqueue(
        # Secrets no port number or UUID can contain (a port 42421 did).
        "POST",
        "/things?token=hush",
        json={"card": "zq-card"},
        headers={"X-Sig": "sig-1"},
    )
    outbox.enqueue("POST", "/status/404?token=hush")
    outbox.enqueue("POST", "/status/503?token=hush")
    with caplog.at_level(logging.INFO, "reliable_client.outbox"):
        deliver(outbox, "sync", server.url)
    text = "\n".join(
        r.getMessage() for r in caplog.records if r.name == "reliable_client.outbox"
    )
    assert f"delivered POST {server.url}/things (entry {good.id})" in text
    assert "dead POST" in text and "redelivering POST" in text
    for secret in ("hush", "zq-card", "sig-1", good.idempotency_key):
        assert secret not in text


def test_a_client_that_raises_something_else_redelivers(
    sqlite_target: str, server: ChaosServer, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_hook(request: httpx.Request) -> None:
        raise LookupError("a bug in a hook")

    outbox = Outbox(sqlite_target, redelivery=FAST)
    entry = outbox.enqueue("POST", "/things")
    with caplog.at_level(logging.ERROR, "reliable_client.outbox"):
        counts = deliver(
            outbox, "sync", server.url, client={"event_hooks": {"request": [bad_hook]}}
        )
    assert counts.rescheduled == 1 and final(outbox, entry).last_error == "LookupError"
    assert "the client raised LookupError" in caplog.text


def test_bad_relay_arguments(sqlite_target: str) -> None:
    outbox = Outbox(sqlite_target)
    with pytest.raises(TypeError, match="deliver/run take a Client"):
        outbox.deliver(AsyncClient())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="adeliver/arun take an AsyncClient"):
        asyncio.run(outbox.adeliver(Client()))  # type: ignore[arg-type]
    closed = Client()
    closed.close()
    with pytest.raises(RuntimeError, match="client is closed"):
        outbox.deliver(closed)
    other = Client(idempotency=Idempotency(header="X-Key"))
    with pytest.raises(ValueError, match="would add keys of its own"):
        outbox.run(other)
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        outbox.deliver(Client(), concurrency=0)
    with pytest.raises(TypeError, match="concurrency must be an int"):
        outbox.deliver(Client(), concurrency=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"deliver\(limit\)"):
        outbox.deliver(Client(), limit=0)
    with pytest.raises(ValueError, match="poll_interval"):
        outbox.run(Client(), poll_interval=0)
    with pytest.raises(ValueError, match="poll_interval"):
        asyncio.run(outbox.arun(AsyncClient(), poll_interval=-1))


def test_a_plain_httpx_client_can_deliver(
    sqlite_target: str, server: ChaosServer
) -> None:
    outbox = Outbox(sqlite_target)
    entry = outbox.enqueue("POST", "/things")
    with httpx.Client(base_url=server.url) as client:
        assert outbox.deliver(client).delivered == 1
    assert server.requests()[0].headers["idempotency-key"] == entry.idempotency_key


def test_a_callback_sees_the_entry_as_the_store_keeps_it(sqlite_target: str) -> None:
    from reliable_client.outbox._model import Result
    from reliable_client.outbox._relay_core import RelayCore

    outbox = Outbox(sqlite_target)
    entry = outbox.enqueue("POST", "/things")
    (claimed,) = outbox._store.claim("relay-1", 1, 30.0)
    result = Result(
        "dead", 1, reason="no\x00such", status=404, response_headers=(("x-n", "é"),)
    )
    assert outbox._store.record(claimed, result)
    told = RelayCore(outbox, 1, None).entry_of(claimed, result)
    kept = outbox.get(entry.id)
    assert kept is not None
    assert told.last_error == kept.last_error == "no\ufffdsuch"
    assert told.response_headers["x-n"] == kept.response_headers["x-n"] == "é"


def test_a_stale_claim_ending_leaves_the_newer_claim_of_its_entry_held(
    sqlite_target: str,
) -> None:
    from reliable_client.outbox._relay_core import Plan, RelayCore

    outbox = Outbox(sqlite_target, lease=0.2)
    outbox.enqueue("POST", "/things")
    core = RelayCore(outbox, 2, None)
    (old,) = outbox._store.claim(core.holder, 1, 0.2)
    core.settled(Plan([], 1, None), [], [old], extra=False, poll=1.0)
    time.sleep(0.3)
    (new,) = outbox._store.claim(core.holder, 1, 30.0)  # this relay's own, again
    core.settled(Plan([], 1, None), [], [new], extra=False, poll=1.0)
    core.let_go(old)  # the old delivery ends
    assert core.busy() == 1 and core.renewals(time.monotonic() + 60) == [
        (new.seq, new.token)
    ]
