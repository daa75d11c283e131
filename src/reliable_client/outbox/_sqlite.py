"""The SQLite store: the embedded default, for relays on one host.

WAL mode (readers never wait for the writer), a busy timeout, and every
write in a ``BEGIN IMMEDIATE`` transaction, which takes the write lock
before it reads: a claim's read and update are one atomic step across the
threads and processes of the host.  Enqueues commit with
``synchronous=FULL`` (a committed entry survives a power loss) unless
``durable=False``; the relays' own writes use ``NORMAL``, which survives a
crash of the process: a relay's write lost to a power cut only means one
more delivery of an entry with the same key.  The file, its permissions and
its connections are :mod:`._sqlite_file`'s.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._model import Claimed, NewEntry, OutboxEntry, Result, State
from ._schema import TABLE
from ._sqlite_file import SQLiteFile
from ._store import (
    CLAIM_COLUMNS,
    ENTRY_COLUMNS,
    OutboxStore,
    entry_values,
    fresh_entry,
    result_values,
    row_to_claimed,
    row_to_entry,
)

__all__ = ["SQLiteStore"]

_TIMES = {
    "created_at": "created_at",
    "delivered_at": "delivered_at",
    "due_at": "due_at",
}
_ENTRY = ENTRY_COLUMNS.format(**_TIMES)
_CLAIM = CLAIM_COLUMNS.format(created_at="created_at", horizon_from="horizon_from")
_INSERT = (
    f"INSERT OR IGNORE INTO {TABLE} (id, idempotency_key, resource_id, method, url,"
    " endpoint, headers, body, fingerprint, grp, due_at, created_at, horizon_from)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Results of several deliveries in one statement: VALUES columns are
# column1..column12 in the order of _record_params.
_RECORD = (
    f"UPDATE {TABLE} AS t SET state = v.column3, attempts = t.attempts + v.column4,"
    " last_error = v.column5, status = v.column6, response_headers = v.column7,"
    " response_body = v.column8, already_existed = v.column9, due_at = v.column10,"
    " delivered_at = v.column11, finished_at = v.column12, lease_until = NULL,"
    " holder = NULL FROM (VALUES {rows}) AS v"
    " WHERE t.seq = v.column1 AND t.token = v.column2 AND t.state = 'pending'"
    " RETURNING seq, token"
)
# Results a statement records at most (12 parameters each: SQLite builds
# may allow as few as 32,766 parameters a statement); more take several
# statements, in one transaction.
_RECORD_ROWS = 500
_BY_KEY = f"SELECT {_ENTRY}, fingerprint FROM {TABLE} WHERE idempotency_key = ?"


class SQLiteStore(OutboxStore):
    """Entries in a SQLite file (created, 0600, with its table, when absent).

    Args:
        path: the database file; it may be the application's own database
            (the table is ``reliable_client_outbox``).
        timeout: seconds to wait for another connection's write lock
            (SQLite's busy timeout); default 5.0.
        durable: enqueues commit with ``synchronous=FULL`` (default True);
            False uses ``NORMAL``: an entry survives a crash of the process
            but not always a power loss, and enqueue is faster.
        create: create the file and table when absent (default True).
    """

    def __init__(
        self,
        path: str,
        *,
        timeout: float = 5.0,
        durable: bool = True,
        create: bool = True,
    ) -> None:
        self._file = SQLiteFile(path, timeout=timeout, create=create)
        self.name = self._file.name
        self.path = self._file.path
        self._sync = "FULL" if durable else "NORMAL"

    # -- the interface -------------------------------------------------------

    def now(self) -> float:
        return time.time()

    def close(self) -> None:
        self._file.close()

    def add(
        self, entry: NewEntry, *, connection: Any = None
    ) -> tuple[OutboxEntry, str]:
        now = time.time()
        params = (*entry_values(entry), now, now, now)
        if connection is not None:
            self._file.check_connection(connection)
            inserted = connection.execute(_INSERT, params).rowcount == 1
        else:
            # One statement, a transaction of its own, committed durably.
            rowcount, _ = self._file.write_one(_INSERT, params, sync=self._sync)
            inserted = rowcount == 1
        if inserted:
            return fresh_entry(entry, now), entry.fingerprint
        # The key is there already (the unique index decided, atomically).
        if connection is not None:
            row = connection.execute(_BY_KEY, (entry.idempotency_key,)).fetchone()
        else:
            with self._file.connection() as conn:
                row = conn.execute(_BY_KEY, (entry.idempotency_key,)).fetchone()
        return row_to_entry(row), str(row[-1])

    def get(self, entry_id: str) -> OutboxEntry | None:
        with self._file.connection() as conn:
            row = conn.execute(
                f"SELECT {_ENTRY} FROM {TABLE} WHERE id = ?", (entry_id,)
            ).fetchone()
        return None if row is None else row_to_entry(row)

    def counts(self) -> dict[str, int]:
        with self._file.connection() as conn:
            found = dict(
                conn.execute(f"SELECT state, count(*) FROM {TABLE} GROUP BY state")
            )
            (in_flight,) = conn.execute(
                f"SELECT count(*) FROM {TABLE} WHERE state = 'pending'"
                " AND lease_until > ?",
                (time.time(),),
            ).fetchone()
        return {
            "pending": found.get("pending", 0),
            "delivered": found.get("delivered", 0),
            "dead": found.get("dead", 0),
            "in_flight": in_flight,
        }

    def entries(
        self, state: State | None, limit: int, *, offset: int = 0
    ) -> list[OutboxEntry]:
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        with self._file.connection() as conn:
            rows = conn.execute(
                f"SELECT {_ENTRY} FROM {TABLE} {where} ORDER BY seq LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        return [row_to_entry(row) for row in rows]

    def settle(
        self,
        results: Sequence[tuple[Claimed, Result]],
        holder: str,
        count: int,
        lease: float,
        *,
        cutoff: float | None = None,
        exclude: Sequence[str] = (),
    ) -> tuple[list[bool], list[Claimed]]:
        # Each part is one statement (a claim's read and update are one
        # UPDATE, which holds the write lock from its start); both parts
        # together are one transaction, so that a failure leaves neither.
        if not results and count <= 0:
            return [], []
        if not results or (count <= 0 and len(results) <= _RECORD_ROWS):
            with self._file.statements() as run:
                return self._settle(run, results, holder, count, lease, cutoff, exclude)
        with self._file.write() as conn:
            return self._settle(
                _Run(conn), results, holder, count, lease, cutoff, exclude
            )

    @staticmethod
    def _settle(
        run: Callable[[str, Sequence[Any]], list[Any]],
        results: Sequence[tuple[Claimed, Result]],
        holder: str,
        count: int,
        lease: float,
        cutoff: float | None,
        exclude: Sequence[str],
    ) -> tuple[list[bool], list[Claimed]]:
        now = time.time()
        written: list[bool] = []
        kept: set[tuple[int, int]] = set()
        for start in range(0, len(results), _RECORD_ROWS):
            part = results[start : start + _RECORD_ROWS]
            rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(part))
            params = [
                p
                for claimed, result in part
                for p in _record_params(claimed, result, now)
            ]
            kept.update(
                (int(row[0]), int(row[1]))
                for row in run(_RECORD.format(rows=rows), params)
            )
        written = [(c.seq, c.token) in kept for c, _ in results]
        if count <= 0:
            return written, []
        skip = (
            f" AND endpoint NOT IN ({', '.join('?' * len(exclude))})" if exclude else ""
        )
        claimed_rows = run(
            f"UPDATE {TABLE} SET token = token + 1, deliveries = deliveries + 1,"
            " lease_until = ?, holder = ? WHERE seq IN (SELECT seq FROM"
            f" {TABLE} AS o WHERE state = 'pending' AND due_at <= ?"
            " AND (lease_until IS NULL OR lease_until <= ?)"
            " AND (grp IS NULL OR seq = (SELECT min(seq) FROM"
            f" {TABLE} AS p WHERE p.grp = o.grp AND p.state = 'pending'))"
            f"{skip} ORDER BY due_at, seq LIMIT ?) RETURNING {_CLAIM}",
            (
                now + lease,
                holder,
                now if cutoff is None else min(now, cutoff),
                now,
                *exclude,
                count,
            ),
        )
        claimed_rows.sort(key=lambda row: int(row[0]))
        return written, [row_to_claimed(row, now) for row in claimed_rows]

    def renew(self, held: Sequence[tuple[int, int]], lease: float) -> set[int]:
        kept: set[int] = set()
        if not held:
            return kept
        with self._file.write() as conn:
            until = time.time() + lease
            for seq, token in held:
                cursor = conn.execute(
                    f"UPDATE {TABLE} SET lease_until = ? WHERE seq = ? AND token = ?"
                    " AND state = 'pending'",
                    (until, seq, token),
                )
                if cursor.rowcount == 1:
                    kept.add(seq)
        return kept

    def release(self, claimed: Claimed) -> bool:
        with self._file.write() as conn:
            cursor = conn.execute(
                f"UPDATE {TABLE} SET lease_until = NULL, holder = NULL,"
                " deliveries = max(deliveries - 1, 0)"
                " WHERE seq = ? AND token = ? AND state = 'pending'",
                (claimed.seq, claimed.token),
            )
            return cursor.rowcount == 1

    def retry(self, entry_id: str | None) -> int:
        only, params = ("AND id = ?", (entry_id,)) if entry_id is not None else ("", ())
        with self._file.write() as conn:
            now = time.time()
            cursor = conn.execute(
                f"UPDATE {TABLE} SET state = 'pending', due_at = ?, horizon_from = ?,"
                " deliveries = 0, status = NULL, response_headers = NULL,"
                " response_body = NULL, already_existed = 0, finished_at = NULL,"
                f" lease_until = NULL WHERE state = 'dead' {only}",
                (now, now, *params),
            )
            return cursor.rowcount

    def purge(self, state: State, older_than: float, batch: int) -> int:
        with self._file.write() as conn:
            cursor = conn.execute(
                f"DELETE FROM {TABLE} WHERE seq IN (SELECT seq FROM {TABLE}"
                " WHERE state = ? AND finished_at <= ? ORDER BY finished_at LIMIT ?)",
                (state, time.time() - older_than, batch),
            )
            return cursor.rowcount


class _Run:
    """Statements on a connection in an open transaction: rows of each."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __call__(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()


def _record_params(claimed: Claimed, result: Result, now: float) -> tuple[Any, ...]:
    return (
        *result_values(claimed, result),
        int(result.already_existed),
        now + (result.delay or 0.0),
        now if result.state == "delivered" else None,
        None if result.state == "pending" else now,
    )
