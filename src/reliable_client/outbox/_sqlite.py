"""The SQLite store: the embedded default, for relays on one host.

WAL mode (readers never wait for the writer), a busy timeout, and every
write in a ``BEGIN IMMEDIATE`` transaction, which takes the write lock
before it reads: a claim's read and update are one atomic step across the
threads and processes of the host.  Enqueues commit with
``synchronous=FULL`` (a committed entry survives a power loss) unless
``durable=False``; the relays' own writes use ``NORMAL``, which survives a
crash of the process: a relay's write lost to a power cut only means one
more delivery of an entry with the same key.

A file the store creates is readable by its owner only (0600, and its -wal
and -shm files the same); a folder it creates is 0700.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ._model import Claimed, NewEntry, OutboxEntry, OutboxError, Result, State
from ._store import (
    CLAIM_COLUMNS,
    ENTRY_COLUMNS,
    META,
    SCHEMA_VERSION,
    TABLE,
    OutboxStore,
    fresh_entry,
    pairs_to_json,
    row_to_claimed,
    row_to_entry,
    schema_error,
)

__all__ = ["SQLiteStore"]

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {META} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        idempotency_key TEXT NOT NULL UNIQUE,
        resource_id TEXT NOT NULL,
        method TEXT NOT NULL,
        url TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        headers TEXT NOT NULL,
        body BLOB,
        fingerprint TEXT NOT NULL,
        grp TEXT,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        deliveries INTEGER NOT NULL DEFAULT 0,
        token INTEGER NOT NULL DEFAULT 0,
        due_at REAL NOT NULL,
        lease_until REAL,
        holder TEXT,
        last_error TEXT,
        status INTEGER,
        response_headers TEXT,
        response_body BLOB,
        already_existed INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        horizon_from REAL NOT NULL,
        delivered_at REAL,
        finished_at REAL
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_due ON {TABLE} (due_at, seq)"
    " WHERE state = 'pending'",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_group ON {TABLE} (grp, seq)"
    " WHERE state = 'pending'",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_finished ON {TABLE} (state, finished_at)"
    " WHERE state != 'pending'",
)
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
        self.path = os.path.abspath(path)
        self.name = path
        self._timeout = timeout
        self._sync = "FULL" if durable else "NORMAL"
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        created = self._create_file() if create else False
        if not create and not os.path.exists(self.path):
            raise OutboxError(f"cannot open outbox {self.name!r}: no such file")
        with self._connection("open") as conn:
            self._set_up(conn, create)
        if created:
            for suffix in ("-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.chmod(self.path + suffix, 0o600)

    # -- opening -----------------------------------------------------------

    def _create_file(self) -> bool:
        """Create the file 0600 (and missing folders 0700); True if we did."""
        if os.path.exists(self.path):
            return False
        folder = os.path.dirname(self.path)
        try:
            _make_folders(folder)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False  # another process made it first
        except OSError as exc:
            raise OutboxError(f"cannot open outbox {self.name!r}: {exc}") from exc
        os.close(fd)
        return True

    def _set_up(self, conn: sqlite3.Connection, create: bool) -> None:
        if self._check_schema(conn):
            return
        if not create:
            raise OutboxError(f"cannot open outbox {self.name!r}: it has no {TABLE}")
        with _immediate(conn):
            if not self._check_schema(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO {META} VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )

    def _check_schema(self, conn: sqlite3.Connection) -> bool:
        """True if the table is there at our version; False if absent."""
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name IN (?, ?)",
                (TABLE, META),
            )
        }
        if TABLE not in tables:
            return False
        found = "unknown (no version recorded)"
        if META in tables:
            row = conn.execute(
                f"SELECT value FROM {META} WHERE name = 'schema_version'"
            ).fetchone()
            if row is not None:
                found = str(row[0])
        if found != str(SCHEMA_VERSION):
            raise schema_error(self.name, found)
        return True

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._timeout,
            isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
            check_same_thread=False,  # one thread at a time, by the pool
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        _enable_wal(conn, self._timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def _connection(
        self, doing: str = "", *, sync: str = "NORMAL"
    ) -> Iterator[sqlite3.Connection]:
        """A connection of the pool; SQLite's errors as OutboxError (the
        connection is then closed, not pooled)."""
        try:
            conn = self._acquire()
            if sync != "NORMAL":
                conn.execute(f"PRAGMA synchronous = {sync}")
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from exc
        try:
            yield conn
            if sync != "NORMAL":
                conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc, doing) from exc
        except BaseException:
            conn.close()
            raise
        self._give_back(conn)

    def _error(self, exc: sqlite3.Error, doing: str) -> OutboxError:
        if doing == "open":
            return OutboxError(f"cannot open outbox {self.name!r}: {exc}")
        return OutboxError(f"outbox {self.name!r}: {exc}")

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._pid != os.getpid():
                # Connections inherited through fork are never used again.
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            with self._lock:
                if self._pid == os.getpid() and len(self._idle) < 32:
                    self._idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- the interface -------------------------------------------------------

    def now(self) -> float:
        return time.time()

    def add(
        self, entry: NewEntry, *, connection: Any = None
    ) -> tuple[OutboxEntry, str]:
        if connection is not None:
            self._check_connection(connection)
            return self._add(connection, entry)
        with self._connection(sync=self._sync) as conn, _immediate(conn):
            return self._add(conn, entry)

    def _add(
        self, conn: sqlite3.Connection, entry: NewEntry
    ) -> tuple[OutboxEntry, str]:
        now = time.time()
        cursor = conn.execute(
            _INSERT,
            (
                entry.id,
                entry.idempotency_key,
                entry.resource_id,
                entry.method,
                entry.url,
                entry.endpoint,
                pairs_to_json(entry.headers),
                entry.body,
                entry.fingerprint,
                entry.group,
                now,
                now,
                now,
            ),
        )
        if cursor.rowcount != 1:  # the key is there already
            row = conn.execute(_BY_KEY, (entry.idempotency_key,)).fetchone()
            return row_to_entry(row), str(row[-1])
        return fresh_entry(entry, now), entry.fingerprint

    def _check_connection(self, conn: object) -> None:
        if not isinstance(conn, sqlite3.Connection):
            raise TypeError(
                f"enqueue(connection=...) for the SQLite outbox {self.name!r} must "
                f"be a sqlite3.Connection, got {type(conn).__name__}"
            )
        files = [
            row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"
        ]
        if not files or not files[0] or not _same_file(files[0], self.path):
            found = files[0] if files else "?"
            raise ValueError(
                f"enqueue(connection=...) is a connection to {found!r}, "
                f"not to the outbox's file {self.path!r}"
            )
        autocommit = getattr(conn, "autocommit", -1)  # Python 3.12+
        if autocommit is True or (
            autocommit == -1
            and conn.isolation_level is None
            and not conn.in_transaction
        ):
            raise ValueError(
                "enqueue(connection=...) has no open transaction (autocommit "
                "mode): BEGIN one first, or the entry would commit on its own"
            )

    def get(self, entry_id: str) -> OutboxEntry | None:
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_ENTRY} FROM {TABLE} WHERE id = ?", (entry_id,)
            ).fetchone()
        return None if row is None else row_to_entry(row)

    def counts(self) -> dict[str, int]:
        with self._connection() as conn:
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
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_ENTRY} FROM {TABLE} {where} ORDER BY seq LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        return [row_to_entry(row) for row in rows]

    def claim(
        self,
        holder: str,
        count: int,
        lease: float,
        *,
        cutoff: float | None = None,
        exclude: Sequence[str] = (),
    ) -> list[Claimed]:
        if count <= 0:
            return []
        skip = (
            f" AND endpoint NOT IN ({', '.join('?' * len(exclude))})" if exclude else ""
        )
        with self._connection() as conn, _immediate(conn):
            now = time.time()
            due = now if cutoff is None else min(now, cutoff)
            seqs = [
                row[0]
                for row in conn.execute(
                    f"SELECT seq FROM {TABLE} AS o WHERE state = 'pending'"
                    " AND due_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
                    " AND (grp IS NULL OR seq = (SELECT min(seq) FROM"
                    f" {TABLE} AS p WHERE p.grp = o.grp AND p.state = 'pending'))"
                    f"{skip} ORDER BY due_at, seq LIMIT ?",
                    (due, now, *exclude, count),
                )
            ]
            if not seqs:
                return []
            marks = ", ".join("?" * len(seqs))
            rows = conn.execute(
                f"UPDATE {TABLE} SET token = token + 1, deliveries = deliveries + 1,"
                f" lease_until = ?, holder = ? WHERE seq IN ({marks})"
                f" RETURNING {_CLAIM}",
                (now + lease, holder, *seqs),
            ).fetchall()
        rows.sort(key=lambda row: seqs.index(row[0]))
        return [row_to_claimed(row, now) for row in rows]

    def renew(self, held: Sequence[tuple[int, int]], lease: float) -> set[int]:
        kept: set[int] = set()
        if not held:
            return kept
        with self._connection() as conn, _immediate(conn):
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

    def record(self, claimed: Claimed, result: Result) -> bool:
        with self._connection() as conn, _immediate(conn):
            now = time.time()
            finished = None if result.state == "pending" else now
            cursor = conn.execute(
                f"UPDATE {TABLE} SET state = ?, attempts = attempts + ?,"
                " last_error = ?, status = ?, response_headers = ?,"
                " response_body = ?, already_existed = ?, due_at = ?,"
                " delivered_at = ?, finished_at = ?, lease_until = NULL,"
                " holder = NULL WHERE seq = ? AND token = ? AND state = 'pending'",
                (
                    result.state,
                    result.attempts,
                    result.reason,
                    result.status,
                    pairs_to_json(result.response_headers),
                    result.response_body,
                    int(result.already_existed),
                    now + (result.delay or 0.0),
                    now if result.state == "delivered" else None,
                    finished,
                    claimed.seq,
                    claimed.token,
                ),
            )
            return cursor.rowcount == 1

    def release(self, claimed: Claimed) -> bool:
        with self._connection() as conn, _immediate(conn):
            cursor = conn.execute(
                f"UPDATE {TABLE} SET lease_until = NULL, holder = NULL,"
                " deliveries = max(deliveries - 1, 0)"
                " WHERE seq = ? AND token = ? AND state = 'pending'",
                (claimed.seq, claimed.token),
            )
            return cursor.rowcount == 1

    def retry(self, entry_id: str | None) -> int:
        only, params = ("AND id = ?", (entry_id,)) if entry_id is not None else ("", ())
        with self._connection() as conn, _immediate(conn):
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
        with self._connection() as conn, _immediate(conn):
            cursor = conn.execute(
                f"DELETE FROM {TABLE} WHERE seq IN (SELECT seq FROM {TABLE}"
                " WHERE state = ? AND finished_at <= ? ORDER BY finished_at LIMIT ?)",
                (state, time.time() - older_than, batch),
            )
            return cursor.rowcount


def _make_folders(folder: str) -> None:
    """Create ``folder`` and its missing parents, each 0700."""
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)  # whatever the umask


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    # Switching to WAL while another connection holds the write lock fails at
    # once with "database is locked" (SQLite skips the busy handler there):
    # wait for it as every other statement does.
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc):
                return  # a read-only file: status and list still work
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


class _immediate:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        if kind is not None:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            return
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
