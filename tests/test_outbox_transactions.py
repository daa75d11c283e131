"""The transactional outbox: an entry written in the caller's own
transaction commits or rolls back with it (sqlite3 and psycopg); and an
enqueue acknowledged just before the producer is killed is there after."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reliable_client.outbox import Outbox

from .outbox_support import ROOT

# -- sqlite3 ------------------------------------------------------------------


@pytest.fixture
def app_db(sqlite_target: str) -> sqlite3.Connection:
    """The application's own connection to the outbox's file."""
    Outbox(sqlite_target)
    conn = sqlite3.connect(sqlite_target)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
    conn.commit()
    return conn


def test_sqlite_an_entry_commits_with_the_callers_writes(
    sqlite_target: str, app_db: sqlite3.Connection
) -> None:
    outbox = Outbox(sqlite_target)
    with app_db:  # commits on success
        app_db.execute("INSERT INTO orders (total) VALUES (42)")
        entry = outbox.enqueue("POST", "/orders", json={"total": 42}, connection=app_db)
        assert outbox.get(entry.id) is None  # not committed yet: not visible
    assert outbox.get(entry.id) == entry
    assert app_db.execute("SELECT count(*) FROM orders").fetchone() == (1,)


def test_sqlite_a_rolled_back_transaction_leaves_no_entry(
    sqlite_target: str, app_db: sqlite3.Connection
) -> None:
    outbox = Outbox(sqlite_target)
    with pytest.raises(RuntimeError), app_db:
        app_db.execute("INSERT INTO orders (total) VALUES (42)")
        entry = outbox.enqueue("POST", "/orders", connection=app_db)
        raise RuntimeError("the order failed")
    assert outbox.get(entry.id) is None and outbox.stats()["pending"] == 0
    assert app_db.execute("SELECT count(*) FROM orders").fetchone() == (0,)


def test_sqlite_autocommit_needs_an_explicit_transaction(sqlite_target: str) -> None:
    outbox = Outbox(sqlite_target)
    conn = sqlite3.connect(sqlite_target, isolation_level=None)
    with pytest.raises(ValueError, match="no open transaction"):
        outbox.enqueue("POST", "/p", connection=conn)
    conn.execute("BEGIN")
    entry = outbox.enqueue("POST", "/p", connection=conn)
    conn.execute("ROLLBACK")
    assert outbox.get(entry.id) is None


def test_sqlite_a_connection_to_another_file_is_refused(
    sqlite_target: str, tmp_path: Path
) -> None:
    outbox = Outbox(sqlite_target)
    other = sqlite3.connect(tmp_path / "other.db")
    with pytest.raises(ValueError, match="not to the outbox's file"):
        outbox.enqueue("POST", "/p", connection=other)
    with pytest.raises(ValueError, match="not to the outbox's file"):
        outbox.enqueue("POST", "/p", connection=sqlite3.connect(":memory:"))
    with pytest.raises(TypeError, match=r"must be a sqlite3.Connection"):
        outbox.enqueue("POST", "/p", connection=object())


def test_sqlite_a_callers_key_in_its_transaction_is_idempotent(
    sqlite_target: str, app_db: sqlite3.Connection
) -> None:
    outbox = Outbox(sqlite_target)
    headers = {"Idempotency-Key": "k-1"}
    with app_db:
        first = outbox.enqueue("POST", "/p", headers=headers, connection=app_db)
        again = outbox.enqueue("POST", "/p", headers=headers, connection=app_db)
    assert first.id == again.id and outbox.stats()["pending"] == 1


# -- psycopg --------------------------------------------------------------------


def test_postgres_an_entry_commits_with_the_callers_writes(postgres_url: str) -> None:
    import psycopg

    outbox = Outbox(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, total int)")
        conn.commit()
        with conn.transaction():
            conn.execute("INSERT INTO orders (total) VALUES (42)")
            entry = outbox.enqueue(
                "POST", "/orders", json={"total": 42}, connection=conn
            )
            assert outbox.get(entry.id) is None  # not committed yet
        assert outbox.get(entry.id) is not None
        with pytest.raises(RuntimeError), conn.transaction():
            conn.execute("INSERT INTO orders (total) VALUES (43)")
            lost = outbox.enqueue("POST", "/orders", connection=conn)
            raise RuntimeError("the order failed")
        assert outbox.get(lost.id) is None
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    assert outbox.stats()["pending"] == 1


def test_postgres_the_connection_must_be_in_a_transaction_on_the_same_database(
    postgres_url: str, postgres_server: object
) -> None:
    import psycopg

    outbox = Outbox(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        with pytest.raises(ValueError, match="no open transaction"):
            outbox.enqueue("POST", "/p", connection=conn)
        with conn.transaction():
            assert outbox.enqueue("POST", "/p", connection=conn).state == "pending"
    other_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    with (
        psycopg.connect(other_url) as other,
        pytest.raises(ValueError, match="not to the outbox's"),
    ):
        outbox.enqueue("POST", "/p", connection=other)
    with pytest.raises(TypeError, match=r"must be a psycopg.Connection"):
        outbox.enqueue("POST", "/p", connection=sqlite3.connect(":memory:"))


def test_postgres_a_group_keeps_the_order_of_its_transactions(
    postgres_url: str,
) -> None:
    """A later enqueue of a group waits for an earlier open transaction of
    the same group, so it can never become visible (and due) before it."""
    import psycopg

    outbox = Outbox(postgres_url)
    first = psycopg.connect(postgres_url)
    entry_one = outbox.enqueue("POST", "/1", group="g", connection=first)
    second_done = threading.Event()
    made = []

    def second() -> None:
        made.append(outbox.enqueue("POST", "/2", group="g"))
        second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not second_done.wait(0.3)  # held back by the open transaction
    assert outbox._store.claim("r", 10, 30.0) == []
    first.commit()
    thread.join(10)
    claimed = outbox._store.claim("r", 10, 30.0)
    assert [c.id for c in claimed] == [str(entry_one.id)]
    first.close()


# -- a producer killed just after an enqueue was acknowledged ------------------


def test_an_acknowledged_enqueue_survives_the_producer_killed(
    outbox_target: str,
) -> None:
    Outbox(outbox_target)
    producer = subprocess.Popen(
        [sys.executable, "-m", "tests.outbox_producer_child", outbox_target],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert producer.stdout is not None
    acknowledged = []
    deadline = time.monotonic() + 20
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        line = producer.stdout.readline()
        if not line:
            break
        acknowledged.append(line.strip())
    producer.send_signal(signal.SIGKILL)  # mid-way through the next enqueue
    producer.wait(10)
    producer.stdout.close()
    assert len(acknowledged) == 40
    outbox = Outbox(outbox_target)
    for entry_id in acknowledged:
        entry = outbox.get(entry_id)
        assert entry is not None and entry.state == "pending"
    assert outbox.stats()["pending"] >= 40
