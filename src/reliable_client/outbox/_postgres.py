"""The PostgreSQL store: one outbox shared by relays on many hosts.

Claims take rows with ``FOR UPDATE SKIP LOCKED`` (relays never wait for each
other, nor hold one entry together); every time (``created_at``, due times,
leases) is the database's clock, so the hosts' clocks do not matter.
Enqueues of one group take a transaction-scoped advisory lock on the group,
so that entries of a group are numbered in the order their transactions
commit and none can become visible behind a later one.  Enqueues commit with
``synchronous_commit`` on (off with ``durable=False``); the relays' writes
with it off: a write lost to a crash of the database server only means one
more delivery with the same key.

Needs psycopg 3: ``pip install 'reliable-client[postgres]'``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from ._forks import keep_inherited, watch
from ._model import Claimed, NewEntry, OutboxEntry, OutboxError, Result, State
from ._postgres_sql import (
    BY_KEY,
    ENTRY,
    INSERT,
    INSERT_IN_GROUP,
    NOW,
    PURGE,
    SECONDS,
    entries_sql,
    epoch,
    record_params,
    settle_sql,
)
from ._schema import META, POSTGRES_SCHEMA, SCHEMA_VERSION, TABLE, judge_schema
from ._store import (
    OutboxStore,
    entry_values,
    fresh_entry,
    redact,
    row_to_claimed,
    row_to_entry,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore"]

_LOCK_CLASS = 0x52434F42  # "RCOB": advisory locks of this module

# The store's connections, a pool of each kind: enqueues (committed with
# synchronous_commit on, unless durable=False: then on relay connections),
# the relays' and readers' writes and reads (a write lost to a crash of the
# database server only means one more delivery with the same key), and
# claims and purges.  These must read their index in order and stop at
# their LIMIT; on a table that filled and emptied and was not analyzed
# since, the planner thinks few rows match and would fetch and sort every
# one of them, at a cost that grows with the table.  Only they get that
# setting: other statements (listing dead entries) need a sort.
Kind = Literal["enqueue", "relay", "ordered"]
_SETTINGS: dict[Kind, str] = {
    "enqueue": "",
    "relay": "SET synchronous_commit TO off",
    "ordered": "SET synchronous_commit TO off; SET enable_bitmapscan TO off;"
    " SET enable_sort TO off",
}


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ImportError(
            "a postgresql:// outbox needs psycopg 3: "
            "pip install 'reliable-client[postgres]'"
        ) from None
    return psycopg


class PostgresStore(OutboxStore):
    """Entries in a PostgreSQL table (created when absent).

    Args:
        dsn: a ``postgresql://`` URL (libpq's connection string).
        timeout: seconds to wait for a connection (default 5.0).
        durable: enqueues wait for their commit to reach the WAL on disk
            (``synchronous_commit`` on; default True).
        create: create the table when absent (default True).
    """

    def __init__(
        self,
        dsn: str,
        *,
        timeout: float = 5.0,
        durable: bool = True,
        create: bool = True,
    ) -> None:
        self._psycopg = _import_psycopg()
        self.dsn = dsn
        self.name = redact(dsn)
        self._timeout = timeout
        self._durable = durable
        self._lock = threading.Lock()
        self._idle = self._no_idle()
        self._opened: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        watch(self)
        with self._connection(opening=True) as conn:
            self._dbname = conn.info.dbname
            self._set_up(conn, create)

    # -- connections --------------------------------------------------------

    def _connect(self, kind: Kind) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = self._psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=max(1, round(self._timeout))
        )
        if _SETTINGS[kind]:
            conn.execute(_SETTINGS[kind])
        self._opened.add(conn)
        return conn

    def after_fork_in_child(self) -> None:
        """The parent's connections: their sockets closed here (never a
        Terminate sent: their sessions are the parent's), never used."""
        self._lock = threading.Lock()
        inherited = list(self._opened)
        for conn in inherited:
            with contextlib.suppress(Exception):  # closed already, or broken
                os.close(conn.fileno())
        keep_inherited(inherited)
        self._opened = weakref.WeakSet()
        self._idle = self._no_idle()

    @contextmanager
    def _connection(
        self, kind: Kind = "relay", *, opening: bool = False
    ) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection of ``kind`` (its settings, a pool each);
        psycopg's errors as OutboxError (a broken connection is closed,
        never pooled: the next use reconnects)."""
        error = self._psycopg.Error
        conn = None
        try:
            with self._lock:
                idle = self._idle[kind]
                conn = idle.pop() if idle else None
            if conn is None:
                conn = self._connect(kind)
            yield conn
        except error as exc:
            if conn is not None:
                conn.close()
            verb = "cannot open outbox" if opening else "outbox"
            raise OutboxError(f"{verb} {self.name!r}: {exc}".strip()) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        with self._lock:
            if not conn.closed and len(self._idle[kind]) < 32:
                self._idle[kind].append(conn)
                return
        conn.close()

    @staticmethod
    def _no_idle() -> dict[Kind, list[psycopg.Connection[Any]]]:
        return {kind: [] for kind in _SETTINGS}

    def close(self) -> None:
        with self._lock:
            idle = [conn for pool in self._idle.values() for conn in pool]
            self._idle = self._no_idle()
        for conn in idle:
            conn.close()

    def _set_up(self, conn: psycopg.Connection[Any], create: bool) -> None:
        if self._check_schema(conn):
            return
        if not create:
            raise OutboxError(f"cannot open outbox {self.name!r}: it has no {TABLE}")
        with conn.transaction():
            # Processes creating one new outbox at once take turns.
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_CLASS,))
            if not self._check_schema(conn):
                for statement in POSTGRES_SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO {META} VALUES ('schema_version', %s)"
                    " ON CONFLICT (name) DO NOTHING",
                    (str(SCHEMA_VERSION),),
                )

    def _check_schema(self, conn: psycopg.Connection[Any]) -> bool:
        # pg_class read as a table (an MVCC snapshot), not to_regclass(),
        # whose cache may not yet show another session's new table.
        row = conn.execute(
            "SELECT bool_or(relname = %s), bool_or(relname = %s) FROM pg_class"
            " WHERE relnamespace = current_schema()::regnamespace"
            " AND relname IN (%s, %s)",
            (TABLE, META, TABLE, META),
        ).fetchone()
        assert row is not None
        version = None
        if row[1]:
            found = conn.execute(
                f"SELECT value FROM {META} WHERE name = 'schema_version'"
            ).fetchone()
            version = None if found is None else str(found[0])
        return judge_schema(self.name, bool(row[0]), version)

    # -- the interface --------------------------------------------------------

    def now(self) -> float:
        with self._connection() as conn:
            row = conn.execute(f"SELECT {epoch('clock_timestamp()')}").fetchone()
        assert row is not None
        return float(row[0])

    def add(
        self, entry: NewEntry, *, connection: Any = None
    ) -> tuple[OutboxEntry, str]:
        if connection is not None:
            self._check_connection(connection)
            return self._add(connection, entry)
        # One statement: its own transaction (autocommit), one round trip.
        with self._connection("enqueue" if self._durable else "relay") as conn:
            return self._add(conn, entry)

    def _add(
        self, conn: psycopg.Connection[Any], entry: NewEntry
    ) -> tuple[OutboxEntry, str]:
        values = entry_values(entry)
        if entry.group is None:
            row = conn.execute(INSERT, values).fetchone()
        else:
            # The group's advisory lock, held to the end of the transaction
            # (the caller's, or this statement's own).
            row = conn.execute(
                INSERT_IN_GROUP, (_LOCK_CLASS, entry.group, *values)
            ).fetchone()
        if row is None:  # the key is there already
            found = conn.execute(BY_KEY, (entry.idempotency_key,)).fetchone()
            assert found is not None
            return row_to_entry(found), str(found[-1])
        return fresh_entry(entry, float(row[0])), entry.fingerprint

    def _check_connection(self, conn: object) -> None:
        psycopg = self._psycopg
        if not isinstance(conn, psycopg.Connection):
            raise TypeError(
                f"enqueue(connection=...) for the PostgreSQL outbox {self.name!r} "
                f"must be a psycopg.Connection, got {type(conn).__name__}"
            )
        if conn.info.dbname != self._dbname:
            raise ValueError(
                f"enqueue(connection=...) is a connection to database "
                f"{conn.info.dbname!r}, not to the outbox's {self._dbname!r}"
            )
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if conn.autocommit and idle:
            raise ValueError(
                "enqueue(connection=...) has no open transaction (autocommit "
                "mode): open one (with conn.transaction(): ...) first, or the "
                "entry would commit on its own"
            )

    def get(self, entry_id: str) -> OutboxEntry | None:
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {ENTRY} FROM {TABLE} WHERE id = %s", (entry_id,)
            ).fetchone()
        return None if row is None else row_to_entry(row)

    def counts(self) -> dict[str, int]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT state, count(*), count(*) FILTER (WHERE lease_until > {NOW})"
                f" FROM {TABLE} GROUP BY state"
            ).fetchall()
        found = {row[0]: (int(row[1]), int(row[2])) for row in rows}
        return {
            "pending": found.get("pending", (0, 0))[0],
            "delivered": found.get("delivered", (0, 0))[0],
            "dead": found.get("dead", (0, 0))[0],
            "in_flight": found.get("pending", (0, 0))[1],
        }

    def entries(
        self, state: State | None, limit: int, *, offset: int = 0
    ) -> list[OutboxEntry]:
        params = ([state] if state else []) + [limit, offset]
        with self._connection() as conn:
            rows = conn.execute(entries_sql(bool(state)), params).fetchall()
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
        if not results and count <= 0:
            return [], []
        params: list[Any] = record_params(results)
        if count > 0:
            params += [] if cutoff is None else [cutoff]
            params += [list(exclude), count, lease, holder]
        sql = settle_sql(count > 0, cutoff is not None)
        with self._connection("ordered" if count > 0 else "relay") as conn:
            rows = conn.execute(sql, params).fetchall()
        kept = {(int(seq), int(token)) for seq, token in rows[0][0]} if rows else set()
        written = [(c.seq, c.token) in kept for c, _ in results]
        claimed_rows = sorted(
            (row[1:] for row in rows if count > 0 and row[1] is not None),
            key=lambda row: int(row[0]),
        )
        return written, [row_to_claimed(r[:-1], float(r[-1])) for r in claimed_rows]

    def renew(self, held: Sequence[tuple[int, int]], lease: float) -> set[int]:
        if not held:
            return set()
        with self._connection() as conn:
            rows = conn.execute(
                f"UPDATE {TABLE} AS t SET lease_until = {NOW} + %s {SECONDS}"
                " FROM unnest(%s::bigint[], %s::bigint[]) AS h(seq, token)"
                " WHERE t.seq = h.seq AND t.token = h.token AND t.state = 'pending'"
                " RETURNING t.seq",
                (lease, [seq for seq, _ in held], [token for _, token in held]),
            ).fetchall()
        return {int(row[0]) for row in rows}

    def release(self, claimed: Claimed) -> bool:
        with self._connection() as conn:
            cursor = conn.execute(
                f"UPDATE {TABLE} SET lease_until = NULL, holder = NULL,"
                " deliveries = greatest(deliveries - 1, 0)"
                " WHERE seq = %s AND token = %s AND state = 'pending'",
                (claimed.seq, claimed.token),
            )
            return cursor.rowcount == 1

    def retry(self, entry_id: str | None) -> int:
        only, params = (
            ("AND id = %s", (entry_id,)) if entry_id is not None else ("", ())
        )
        with self._connection() as conn:
            cursor = conn.execute(
                f"UPDATE {TABLE} SET state = 'pending', due_at = {NOW},"
                f" horizon_from = {NOW}, deliveries = 0, status = NULL,"
                " response_headers = NULL, response_body = NULL,"
                " already_existed = FALSE, finished_at = NULL, lease_until = NULL"
                f" WHERE state = 'dead' {only}",
                params,
            )
            return cursor.rowcount

    def purge(self, state: State, older_than: float, batch: int) -> int:
        with self._connection("ordered") as conn:
            cursor = conn.execute(PURGE, (state, older_than, batch))
            return cursor.rowcount
