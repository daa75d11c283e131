"""The floor of (O2) in ``python -m benchmarks.outbox``: the least a durable
relay does, written by hand.

``concurrency`` threads send the pending entries through the same
``reliable_client.Client`` as the relay, one at a time each: a thread that
finds none claimed claims up to eight with one ``UPDATE ... RETURNING``
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write lock, taken one
thread at a time) and leaves the rest to the others; each thread records
the status and body of its answers eight at a time with one more
statement; until no entry is pending.  Its connections are opened before
the clock starts, as the store's pool is.  Nothing else: no
lease renewed or fenced, no redelivery decided, no group ordering, no log
line, no callback, no count.  The connections have the settings of the
store's claiming connections (PostgreSQL: ``synchronous_commit`` off, sorts
and bitmap scans off; SQLite: WAL, ``synchronous=NORMAL``), so both sides
write with the same durability.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from reliable_client.outbox._schema import TABLE

__all__ = ["BareRelay"]

BATCH = 8
Sent = tuple[int, int, bytes]  # seq, status, body
Claim = Callable[[], list[tuple[Any, ...]]]
Record = Callable[[list[Sent]], None]

_PG_CLAIM = (
    f"UPDATE {TABLE} SET token = token + 1, lease_until = now() + interval"
    f" '30 seconds' WHERE seq IN (SELECT seq FROM {TABLE} WHERE state = 'pending'"
    f" AND lease_until IS NULL ORDER BY due_at, seq LIMIT {BATCH}"
    " FOR UPDATE SKIP LOCKED) RETURNING seq, url, headers, body"
)
_PG_RECORD = (
    f"UPDATE {TABLE} AS t SET state = 'delivered', status = v.status,"
    " response_body = v.body, lease_until = NULL, delivered_at = now(),"
    " finished_at = now() FROM unnest(%b::bigint[], %b::int[], %b::bytea[])"
    " AS v(seq, status, body) WHERE t.seq = v.seq"
)
_SQLITE_CLAIM = (
    f"UPDATE {TABLE} SET token = token + 1, lease_until = ?"
    f" WHERE seq IN (SELECT seq FROM {TABLE} WHERE state = 'pending'"
    f" AND lease_until IS NULL ORDER BY due_at, seq LIMIT {BATCH})"
    " RETURNING seq, url, headers, body"
)
_SQLITE_RECORD = (
    f"UPDATE {TABLE} SET state = 'delivered', status = ?, response_body = ?,"
    " lease_until = NULL, delivered_at = ?, finished_at = ? WHERE seq = ?"
)


class BareRelay:
    """The floor's ``concurrency`` threads and their connections, opened
    once (before any clock starts) and used for every ``deliver``."""

    def __init__(self, target: str, concurrency: int) -> None:
        self._opened = _statements(target, concurrency)
        self._sides = self._opened.__enter__()

    def deliver(self, client: httpx.Client) -> None:
        """Deliver every pending entry.  Claimed entries wait in one queue
        that every thread takes from, one at a time, so that no thread runs
        dry while another still has a batch to send; a thread records its
        results eight at a time, and the rest when nothing is left."""
        queue: deque[tuple[Any, ...]] = deque()
        threads = [
            threading.Thread(target=_work, args=(claim, record, client, queue))
            for claim, record in self._sides
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def close(self) -> None:
        self._opened.__exit__(None, None, None)


def _work(
    claim: Claim, record: Record, client: httpx.Client, queue: deque[Any]
) -> None:
    sent: list[Sent] = []
    while True:
        try:
            seq, url, headers, body = queue.popleft()
        except IndexError:
            batch = claim()
            if not batch:
                break
            (seq, url, headers, body), *ahead = batch
            queue.extend(ahead)
        response = client.post(url, content=body, headers=json.loads(headers))
        sent.append((seq, response.status_code, response.content))
        if len(sent) == BATCH:
            record(sent)
            sent = []
    if sent:
        record(sent)


@contextmanager
def _statements(target: str, count: int) -> Iterator[list[tuple[Claim, Record]]]:
    """A claim and a record function for each of ``count`` threads, each
    thread with a connection of its own."""
    if "://" in target:
        with _postgres(target, count) as sides:
            yield sides
    else:
        with _sqlite(target, count) as sides:
            yield sides


@contextmanager
def _postgres(url: str, count: int) -> Iterator[list[tuple[Claim, Record]]]:
    import psycopg

    conns = [psycopg.connect(url, autocommit=True) for _ in range(count)]
    try:
        sides: list[tuple[Claim, Record]] = []
        for conn in conns:
            conn.execute(
                "SET enable_bitmapscan TO off; SET enable_sort TO off;"
                " SET synchronous_commit TO off"
            )

            def claim(conn: Any = conn) -> list[tuple[Any, ...]]:
                return list(conn.execute(_PG_CLAIM).fetchall())

            def record(sent: list[Sent], conn: Any = conn) -> None:
                seqs, statuses, bodies = (list(c) for c in zip(*sent, strict=True))
                conn.execute(_PG_RECORD, (seqs, statuses, bodies))

            sides.append((claim, record))
        yield sides
    finally:
        for conn in conns:
            conn.close()


@contextmanager
def _sqlite(path: str, count: int) -> Iterator[list[tuple[Claim, Record]]]:
    writing = threading.Lock()  # one writer at a time, no busy-waiting
    conns = [
        sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for _ in range(count)
    ]
    try:
        sides: list[tuple[Claim, Record]] = []
        for conn in conns:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA synchronous = NORMAL")

            def claim(conn: sqlite3.Connection = conn) -> list[tuple[Any, ...]]:
                with writing:
                    return conn.execute(_SQLITE_CLAIM, (time.time() + 30,)).fetchall()

            def record(sent: list[Sent], conn: sqlite3.Connection = conn) -> None:
                now = time.time()
                with writing:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(
                        _SQLITE_RECORD, [(s, b, now, now, seq) for seq, s, b in sent]
                    )
                    conn.execute("COMMIT")

            sides.append((claim, record))
        yield sides
    finally:
        for conn in conns:
            conn.close()
