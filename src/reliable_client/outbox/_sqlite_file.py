"""The SQLite outbox's file: made owner-only, opened in WAL mode with a
busy timeout, its table set up, and a small pool of connections.

A file this creates is readable by its owner only (0600, and its -wal and
-shm files the same); a folder it creates is 0700.  A file that is not a
database, a schema of another version or a file it cannot write raise
OutboxError naming the file.  Connections are never used across a fork.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ._forks import keep_inherited, watch
from ._model import OutboxError
from ._schema import META, SCHEMA_VERSION, SQLITE_SCHEMA, TABLE, judge_schema

__all__ = ["SQLiteFile", "immediate"]

_POOL = 32
# One write lock per file and process: threads of one process take turns
# here, and never meet in SQLite's busy handler, which sleeps for
# milliseconds between tries; other processes still wait in it.
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_LOCK = threading.Lock()


def _forget_write_locks() -> None:
    # A forked child's threads are gone, and the locks they held with them.
    global _WRITE_LOCKS_LOCK
    _WRITE_LOCKS.clear()
    _WRITE_LOCKS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_write_locks)


def _write_lock(path: str) -> threading.Lock:
    with _WRITE_LOCKS_LOCK:
        lock = _WRITE_LOCKS.get(path)
        if lock is None:
            lock = _WRITE_LOCKS[path] = threading.Lock()
        return lock


class SQLiteFile:
    """The database file of a SQLite outbox and its pooled connections.

    Args:
        path: the file (created 0600 when absent and ``create``).
        timeout: SQLite's busy timeout, in seconds.
        create: create the file and the table when absent.
    """

    def __init__(self, path: str, *, timeout: float, create: bool) -> None:
        self.path = os.path.abspath(path)
        self.name = path
        self._timeout = timeout
        self._lock = threading.Lock()
        self._idle: dict[str, list[sqlite3.Connection]] = {}
        watch(self)
        created = self._create_file() if create else False
        if not create and not os.path.exists(self.path):
            raise OutboxError(f"cannot open outbox {self.name!r}: no such file")
        with self.connection("open") as conn:
            self._set_up(conn, create)
        if created:
            for suffix in ("-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.chmod(self.path + suffix, 0o600)

    def _create_file(self) -> bool:
        """Create the file 0600 (and missing folders 0700); True if we did."""
        if os.path.exists(self.path):
            return False
        try:
            _make_folders(os.path.dirname(self.path))
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
        with immediate(conn):
            if not self._check_schema(conn):
                for statement in SQLITE_SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO {META} VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )

    def _check_schema(self, conn: sqlite3.Connection) -> bool:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name IN (?, ?)",
                (TABLE, META),
            )
        }
        version = None
        if META in tables:
            row = conn.execute(
                f"SELECT value FROM {META} WHERE name = 'schema_version'"
            ).fetchone()
            version = None if row is None else str(row[0])
        return judge_schema(self.name, TABLE in tables, version)

    def _connect(self, sync: str) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._timeout,
            isolation_level=None,  # autocommit; BEGIN IMMEDIATE where needed
            check_same_thread=False,  # one thread at a time, by the pool
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        _enable_wal(conn, self._timeout)
        conn.execute(f"PRAGMA synchronous = {sync}")
        return conn

    @contextmanager
    def connection(
        self, doing: str = "", *, sync: str = "NORMAL"
    ) -> Iterator[sqlite3.Connection]:
        """A connection of the pool whose ``synchronous`` setting is ``sync``
        (a pool each); SQLite's errors as OutboxError, after which the
        connection is closed, not pooled."""
        try:
            conn = self._acquire(sync)
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc, doing) from exc
        except BaseException:
            conn.close()
            raise
        self._give_back(conn, sync)

    def write_one(
        self, sql: str, params: Sequence[Any], *, sync: str = "NORMAL"
    ) -> tuple[int, list[Any]]:
        """Run one writing statement in a transaction of its own (SQLite
        takes the write lock as the statement starts), this process's
        writers one at a time; return its rowcount and rows (RETURNING)."""
        with _write_lock(self.path), self.connection(sync=sync) as conn:
            cursor = conn.execute(sql, params)
            rows = cursor.fetchall()
            return cursor.rowcount, rows

    @contextmanager
    def statements(self) -> Iterator[Callable[[str, Sequence[Any]], list[Any]]]:
        """Run writing statements, each in a transaction of its own, this
        process's writers one at a time; each call returns the rows."""
        with _write_lock(self.path), self.connection() as conn:

            def run(sql: str, params: Sequence[Any]) -> list[Any]:
                return conn.execute(sql, params).fetchall()

            yield run

    @contextmanager
    def write(self, *, sync: str = "NORMAL") -> Iterator[sqlite3.Connection]:
        """A connection in a ``BEGIN IMMEDIATE`` transaction, committed at the
        end (rolled back on an error), this process's writers one at a time."""
        with (
            _write_lock(self.path),
            self.connection(sync=sync) as conn,
            immediate(conn),
        ):
            yield conn

    def _error(self, exc: sqlite3.Error, doing: str) -> OutboxError:
        if doing == "open":
            return OutboxError(f"cannot open outbox {self.name!r}: {exc}")
        return OutboxError(f"outbox {self.name!r}: {exc}")

    def _acquire(self, sync: str) -> sqlite3.Connection:
        with self._lock:
            idle = self._idle.get(sync)
            if idle:
                return idle.pop()
        return self._connect(sync)

    def _give_back(self, conn: sqlite3.Connection, sync: str) -> None:
        if not conn.in_transaction:
            with self._lock:
                idle = self._idle.setdefault(sync, [])
                if len(idle) < _POOL:
                    idle.append(conn)
                    return
        conn.close()

    def after_fork_in_child(self) -> None:
        """The parent's connections are never used (nor closed) here."""
        self._lock = threading.Lock()
        keep_inherited([c for pool in self._idle.values() for c in pool])
        self._idle = {}

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for pool in idle.values():
            for conn in pool:
                conn.close()

    def check_connection(self, conn: object) -> None:
        """Refuse a caller's connection to another file, or without a
        transaction to write in."""
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


class immediate:
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
