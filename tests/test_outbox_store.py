"""The store contract, on every engine (the ``outbox_target`` fixture).

Claims are atomic and leased, leases are fenced by a token, groups go one
at a time in enqueue order, and nothing is lost or handed out twice.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter

import pytest

from reliable_client.outbox import Outbox, OutboxError
from reliable_client.outbox._model import Claimed, Result
from reliable_client.outbox._sqlite import SQLiteStore
from reliable_client.outbox._store import OutboxStore

DELIVERED = Result("delivered", 1, status=201)
DEAD = Result("dead", 1, reason="status 404", status=404)


def later(seconds: float) -> Result:
    return Result("pending", 1, reason="status 503", delay=seconds)


@pytest.fixture
def outbox(outbox_target: str) -> Outbox:
    return Outbox(outbox_target)


@pytest.fixture
def store(outbox: Outbox) -> OutboxStore:
    return outbox._store


def ids(claimed: list[Claimed]) -> list[str]:
    return [c.id for c in claimed]


def test_a_claim_leases_an_entry_once_and_raises_its_token(
    outbox: Outbox, store: OutboxStore
) -> None:
    entry = outbox.enqueue("POST", "/a", json={"n": 1})
    (claimed,) = store.claim("relay-1", 10, 30.0)
    assert claimed.id == str(entry.id) and claimed.deliveries == 1
    assert claimed.idempotency_key == entry.idempotency_key
    assert claimed.body == b'{"n":1}' and claimed.method == "POST"
    assert store.claim("relay-2", 10, 30.0) == []  # held
    assert outbox.stats()["in_flight"] == 1
    assert store.record(claimed, DELIVERED)
    assert not store.record(claimed, DEAD)  # the result stands
    got = outbox.get(entry.id)
    assert got is not None and got.state == "delivered" and got.status == 201
    assert got.attempts == 1 and got.delivered_at is not None
    assert store.claim("relay-2", 10, 30.0) == []
    assert (
        outbox.stats().items() >= {"pending": 0, "delivered": 1, "in_flight": 0}.items()
    )


def _claimed_twice(
    outbox: Outbox, store: OutboxStore, second: str
) -> tuple[Claimed, Claimed]:
    """An entry claimed by relay-1 under a short lease, and again by
    ``second`` after the lease ran out."""
    outbox.enqueue("POST", "/a")
    (old,) = store.claim("relay-1", 1, 0.2)
    time.sleep(0.3)
    (new,) = store.claim(second, 1, 30.0)
    assert new.seq == old.seq and new.token > old.token
    return old, new


def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced(
    outbox: Outbox, store: OutboxStore
) -> None:
    old, new = _claimed_twice(outbox, store, "relay-2")
    assert new.deliveries == 2
    assert store.renew([(old.seq, old.token)], 30.0) == set()
    assert not store.record(old, DEAD)  # too late: relay-2 holds it
    assert not store.release(old)
    assert store.record(new, DELIVERED)
    assert outbox.entries()[0].state == "delivered"


def test_of_two_claims_of_one_entry_recorded_together_only_the_newer_is_written(
    outbox: Outbox, store: OutboxStore
) -> None:
    # A relay that claimed an entry again after its own lease ran out (the
    # store was away while it renewed) may record both deliveries at once.
    old, new = _claimed_twice(outbox, store, "relay-1")
    written, _ = store.settle([(old, DEAD), (new, DELIVERED)], "relay-1", 0, 30.0)
    assert written == [False, True]
    assert outbox.entries()[0].state == "delivered"


def test_a_result_of_any_text_is_recorded_and_read_back(
    outbox: Outbox, store: OutboxStore
) -> None:
    # Header values a server sent in UTF-8, a NUL in an error's text (which
    # PostgreSQL's text cannot hold: it is kept as U+FFFD), any body bytes.
    entry = outbox.enqueue("POST", "/a")
    (claimed,) = store.claim("relay-1", 1, 30.0)
    result = Result(
        "dead",
        1,
        reason="status 404: no\x00such thing",
        status=404,
        response_headers=(("x-name", "café ☕"), ("content-type", "text/plain")),
        response_body=b"\x00\xff",
    )
    assert store.record(claimed, result)
    got = outbox.get(entry.id)
    assert got is not None
    assert got.response_headers["x-name"] == "café ☕"
    assert got.response_headers.multi_items()[1] == ("content-type", "text/plain")
    assert got.last_error == "status 404: no\ufffdsuch thing"
    assert got.response_body == b"\x00\xff"


def test_a_renewed_lease_is_not_taken_over(outbox: Outbox, store: OutboxStore) -> None:
    outbox.enqueue("POST", "/a")
    (held,) = store.claim("relay-1", 1, 0.3)
    time.sleep(0.2)
    assert store.renew([(held.seq, held.token)], 0.3) == {held.seq}
    time.sleep(0.2)
    assert store.claim("relay-2", 1, 30.0) == []
    time.sleep(0.2)
    assert len(store.claim("relay-2", 1, 30.0)) == 1


def test_release_gives_an_unsent_entry_back_at_once(
    outbox: Outbox, store: OutboxStore
) -> None:
    outbox.enqueue("POST", "/a")
    (held,) = store.claim("relay-1", 1, 30.0)
    assert store.release(held)
    (again,) = store.claim("relay-2", 1, 30.0)
    assert again.deliveries == 1 and again.token > held.token


def test_a_rescheduled_entry_waits_until_it_is_due(
    outbox: Outbox, store: OutboxStore
) -> None:
    entry = outbox.enqueue("POST", "/a")
    (held,) = store.claim("r", 1, 30.0)
    assert store.record(held, later(0.3))
    pending = outbox.get(entry.id)
    assert pending is not None and pending.last_error == "status 503"
    assert pending.due_at is not None and pending.due_at > pending.created_at
    assert store.claim("r", 1, 30.0) == []
    time.sleep(0.35)
    (again,) = store.claim("r", 1, 30.0)
    assert (again.deliveries, again.attempts) == (2, 1)


def test_a_cutoff_leaves_out_entries_due_after_it(
    outbox: Outbox, store: OutboxStore
) -> None:
    outbox.enqueue("POST", "/a")
    cutoff = store.now()
    time.sleep(0.01)
    late = outbox.enqueue("POST", "/b")
    assert [c.url for c in store.claim("r", 10, 30.0, cutoff=cutoff)] == ["/a"]
    assert ids(store.claim("r", 10, 30.0)) == [str(late.id)]


def test_claims_can_leave_out_endpoints(outbox: Outbox, store: OutboxStore) -> None:
    outbox.enqueue("POST", "http://slow.example/a")
    outbox.enqueue("POST", "http://fast.example/b?x=1")
    claimed = store.claim("r", 10, 30.0, exclude=["slow.example/a"])
    assert [c.endpoint for c in claimed] == ["fast.example/b"]


def test_a_group_goes_one_at_a_time_in_enqueue_order(
    outbox: Outbox, store: OutboxStore
) -> None:
    a, b, c = (outbox.enqueue("POST", f"/{n}", group="g") for n in "abc")
    loose = outbox.enqueue("POST", "/loose")
    other = outbox.enqueue("POST", "/other", group="h")
    first = store.claim("r", 10, 30.0)
    assert set(ids(first)) == {str(a.id), str(loose.id), str(other.id)}
    assert store.claim("r", 10, 30.0) == []  # b waits for a
    held = {x.id: x for x in first}
    assert store.record(held[str(a.id)], later(0.2))  # a again later: b waits
    assert store.claim("r", 10, 30.0) == []
    time.sleep(0.25)
    (a_again,) = store.claim("r", 10, 30.0)
    assert a_again.id == str(a.id)
    assert store.record(a_again, DEAD)  # a dead does not hold b back
    (next_one,) = store.claim("r", 10, 30.0)
    assert next_one.id == str(b.id)
    assert store.record(next_one, DELIVERED)
    assert ids(store.claim("r", 10, 30.0)) == [str(c.id)]


def test_relays_in_threads_never_hold_one_entry_together(
    outbox: Outbox, store: OutboxStore
) -> None:
    for n in range(120):
        outbox.enqueue("POST", f"/{n}", group=f"g{n % 3}" if n % 4 == 0 else None)
    taken: Counter[str] = Counter()
    lock = threading.Lock()

    def relay(name: str) -> None:
        while True:
            batch = store.claim(name, 3, 30.0)
            if not batch:
                if outbox.stats()["pending"] == 0:
                    return
                time.sleep(0.002)
                continue
            with lock:
                taken.update(c.id for c in batch)
            for claimed in batch:
                assert store.record(claimed, DELIVERED)

    threads = [threading.Thread(target=relay, args=(f"r{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(taken) == 120 and set(taken.values()) == {1}
    assert outbox.stats()["delivered"] == 120


def test_thousands_of_results_are_recorded_in_one_call(outbox_target: str) -> None:
    # What a relay records at once after the store was away a while.  A
    # statement with a row of placeholders a result stops at a limit:
    # PostgreSQL's 65,535 parameters, SQLite's 32,766 (as SQLite builds it;
    # Debian allows more, so the limit is set here).
    outbox = Outbox(outbox_target, durable=False)
    store = outbox._store
    count = 7000
    for _ in range(count):
        outbox.enqueue("POST", "/things")
    if isinstance(store, SQLiteStore):
        with store._file.connection() as conn:  # back to the pool, used next
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32766)
    claimed = store.claim("relay-1", count, 60.0)
    assert len(claimed) == count
    written, _ = store.settle([(c, DELIVERED) for c in claimed], "relay-1", 0, 60.0)
    assert written == [True] * count
    assert outbox.stats()["delivered"] == count


def test_retry_makes_dead_entries_pending_with_a_fresh_horizon(
    outbox: Outbox, store: OutboxStore
) -> None:
    one, two = outbox.enqueue("POST", "/a"), outbox.enqueue("POST", "/b")
    for claimed in store.claim("r", 10, 30.0):
        assert store.record(claimed, DEAD)
    dead = outbox.get(one.id)
    assert dead is not None and dead.state == "dead" and dead.status == 404
    assert dead.response_headers == {} and dead.last_error == "status 404"
    time.sleep(0.01)
    assert outbox.retry(one.id) and not outbox.retry(one.id)
    (again,) = store.claim("r", 10, 30.0)
    assert again.id == str(one.id) and again.deliveries == 1
    assert again.horizon_from > again.created_at
    assert outbox.retry_dead() == 1
    assert outbox.get(two.id).state == "pending"  # type: ignore[union-attr]


def test_purge_deletes_old_finished_entries_in_batches(
    outbox: Outbox, store: OutboxStore
) -> None:
    for n in range(7):
        outbox.enqueue("POST", f"/{n}")
    claimed = store.claim("r", 10, 30.0)
    for c in claimed[:5]:
        store.record(c, DELIVERED)
    store.record(claimed[5], DEAD)
    assert store.purge("delivered", 0.0, 2) == 2
    assert store.purge("delivered", 3600.0, 100) == 0  # not old enough
    assert outbox.purge(0.0, batch=2) == 3  # the rest of delivered, in 2 batches
    assert outbox.stats().items() >= {"delivered": 0, "dead": 1, "pending": 1}.items()
    assert outbox.purge(0.0, dead_older_than=0.0) == 1
    assert outbox.stats()["pending"] == 1


def test_entries_lists_by_state_in_enqueue_order(outbox: Outbox) -> None:
    made = [outbox.enqueue("POST", f"/{n}") for n in range(5)]
    assert [e.id for e in outbox.entries()] == [e.id for e in made]
    assert [e.id for e in outbox.entries("pending", limit=2, offset=1)] == [
        made[1].id,
        made[2].id,
    ]
    assert outbox.entries("dead") == []
    with pytest.raises(ValueError, match="state must be one of"):
        outbox.entries("lost")  # type: ignore[arg-type]


def test_a_schema_of_another_version_is_refused(outbox_target: str) -> None:
    outbox = Outbox(outbox_target)
    outbox.enqueue("POST", "/a")
    _execute(outbox_target, "UPDATE reliable_client_outbox_meta SET value = '99'")
    with pytest.raises(OutboxError, match="schema version 99; this reliable_client"):
        Outbox(outbox_target)
    _execute(outbox_target, "DROP TABLE reliable_client_outbox_meta")
    with pytest.raises(OutboxError, match="schema version unknown"):
        Outbox(outbox_target)


def test_without_create_a_missing_table_is_an_error(outbox_target: str) -> None:
    if "://" not in outbox_target:
        _execute(outbox_target, "CREATE TABLE app (id INTEGER)")
    with pytest.raises(
        OutboxError, match=r"cannot open outbox .* has no reliable_client"
    ):
        Outbox(outbox_target, create=False)
    Outbox(outbox_target)
    assert Outbox(outbox_target, create=False).stats()["pending"] == 0


def test_many_processes_opening_a_new_outbox_at_once(outbox_target: str) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            Outbox(outbox_target).enqueue("POST", "/a")
        except BaseException as exc:  # pragma: no cover - the failure shown
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and Outbox(outbox_target).stats()["pending"] == 6


def _execute(target: str, sql: str) -> None:
    if "://" in target:
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(sql)
        return
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        conn.execute(sql)
    finally:
        conn.close()
