"""Where idempotency records live: the store interface, memory and SQLite stores.

A record is keyed by an opaque string (the middleware passes a hash of the
principal and the key) and is in one of two states: *in flight* (claimed by the
holder of a random token until its lease runs out) or *completed* (holding the
response to replay until it expires).  ``claim`` is the one atomic step that
decides who runs the handler; ``complete``, ``release`` and ``extend`` only act
while the caller's token still owns the record, so a late worker whose lease
was taken over can never overwrite its successor.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

__all__ = [
    "ClaimResult",
    "Claimed",
    "Completed",
    "IdempotencyStore",
    "InFlight",
    "MemoryStore",
    "Mismatch",
    "SQLiteStore",
    "StoredResponse",
]

Clock = Callable[[], float]
_T = TypeVar("_T")

# Expired records are deleted on every this many claims (amortised purge).
_PURGE_EVERY = 256


@dataclass(frozen=True)
class StoredResponse:
    """A response kept for replay: status, allow-listed headers, body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def headers_json(self) -> str:
        return json.dumps([list(pair) for pair in self.headers])

    @staticmethod
    def from_parts(status: int, headers_json: str, body: bytes) -> StoredResponse:
        pairs = json.loads(headers_json)
        return StoredResponse(int(status), tuple((n, v) for n, v in pairs), body)


@dataclass(frozen=True)
class Claimed:
    """The caller owns the key now and must run the handler."""

    token: str


@dataclass(frozen=True)
class InFlight:
    """Another request with this key holds an unexpired lease."""

    lease_left: float = field(default=0.0, compare=False)
    """Seconds until that lease runs out unless its holder renews it: when a
    retry may take the key over if the holder has died."""


@dataclass(frozen=True)
class Completed:
    """The key's request finished; replay ``response``."""

    response: StoredResponse


@dataclass(frozen=True)
class Mismatch:
    """The key was used for a different request (another fingerprint)."""


ClaimResult: TypeAlias = Claimed | InFlight | Completed | Mismatch


def new_token() -> str:
    return os.urandom(16).hex()


class IdempotencyStore(abc.ABC):
    """The interface every store implements; all times are in seconds.

    Implementations must make ``claim`` atomic: of any number of concurrent
    claims of one absent (or expired) key, exactly one returns ``Claimed``.
    """

    @abc.abstractmethod
    async def claim(self, key: str, fingerprint: str, *, lease: float) -> ClaimResult:
        """Claim ``key`` for ``lease`` seconds, or report who has it."""

    @abc.abstractmethod
    async def complete(
        self, key: str, token: str, response: StoredResponse, *, expiry: float
    ) -> bool:
        """Store ``response`` for ``expiry`` seconds if ``token`` owns ``key``."""

    @abc.abstractmethod
    async def release(self, key: str, token: str) -> bool:
        """Forget the in-flight claim if ``token`` owns it (a retry may run)."""

    @abc.abstractmethod
    async def extend(self, key: str, token: str, *, lease: float) -> bool:
        """Renew the lease for ``lease`` seconds from now if ``token`` owns it."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default does nothing."""


@dataclass
class _Record:
    fingerprint: str
    token: str | None  # None once completed
    response: StoredResponse | None
    expires_at: float  # lease end while in flight, expiry once completed


class MemoryStore(IdempotencyStore):
    """Records in a dict of this process (tests, single-process servers).

    ``clock`` (default ``time.time``, seconds) can be replaced to test leases
    and expiry without sleeping.  A lock makes it safe across threads and
    event loops of one process; it is *not* shared between processes.
    """

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()
        self._claims = 0

    def __len__(self) -> int:
        return len(self._records)

    async def claim(self, key: str, fingerprint: str, *, lease: float) -> ClaimResult:
        with self._lock:
            now = self._clock()
            self._claims += 1
            if self._claims % _PURGE_EVERY == 0:
                self._purge(now)
            record = self._records.get(key)
            if record is None or record.expires_at <= now:
                token = new_token()
                self._records[key] = _Record(fingerprint, token, None, now + lease)
                return Claimed(token)
            return _judge(
                record.fingerprint,
                record.response,
                fingerprint=fingerprint,
                lease_left=record.expires_at - now,
            )

    async def complete(
        self, key: str, token: str, response: StoredResponse, *, expiry: float
    ) -> bool:
        with self._lock:
            record = self._records.get(key)
            if record is None or record.token != token:
                return False
            record.token, record.response = None, response
            record.expires_at = self._clock() + expiry
            return True

    async def release(self, key: str, token: str) -> bool:
        with self._lock:
            record = self._records.get(key)
            if record is None or record.token != token:
                return False
            del self._records[key]
            return True

    async def extend(self, key: str, token: str, *, lease: float) -> bool:
        with self._lock:
            record = self._records.get(key)
            if record is None or record.token != token:
                return False
            record.expires_at = self._clock() + lease
            return True

    def _purge(self, now: float) -> None:
        for key in [k for k, r in self._records.items() if r.expires_at <= now]:
            del self._records[key]


def _judge(
    stored_fingerprint: str,
    response: StoredResponse | None,
    *,
    fingerprint: str,
    lease_left: float,
) -> ClaimResult:
    """What a claim of a live (unexpired) record answers."""
    if stored_fingerprint != fingerprint:
        return Mismatch()
    if response is not None:
        return Completed(response)
    return InFlight(max(lease_left, 0.0))


def default_sqlite_path() -> str:
    """A private file of this user's, shared by the workers of one app.

    It lives in ``$XDG_STATE_HOME/reliable_client/`` (by default
    ``~/.local/state/reliable_client/``), a folder made ``0700``: never at a
    predictable path in a shared temporary folder, where another local user
    could read stored responses or plant the file first.  Workers started
    from one directory by one user share it; another app (another working
    directory) gets its own file.
    """
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    digest = hashlib.sha256(os.getcwd().encode("utf-8", "backslashreplace")).hexdigest()
    return os.path.join(state, "reliable_client", f"idempotency-{digest[:16]}.db")


def private_file(path: str) -> None:
    """Make sure ``path`` (and its SQLite companions) can be read by its
    owner only: create it ``0600`` (its missing folders ``0700``), tighten a
    file of ours that others could read, refuse one that another user owns.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot open the store file {path!r}: {exc.strerror}"
        ) from None
    try:
        info = os.fstat(fd)
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise PermissionError(
                f"the store file {path!r} belongs to another user (uid "
                f"{info.st_uid}); refusing a file that someone else can read or write"
            )
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        companion = path + suffix
        try:
            if os.stat(companion, follow_symlinks=False).st_mode & 0o077:
                os.chmod(companion, 0o600)
        except FileNotFoundError:
            continue


_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_records (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    token TEXT,
    status INTEGER,
    headers TEXT,
    body BLOB,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_records_expires
    ON idempotency_records (expires_at);
"""


class SQLiteStore(IdempotencyStore):
    """Records in an SQLite file: the embedded default, one host, many workers.

    Args:
        path: the database file (created with its table on first use,
            readable by its owner only: ``0600``, and the WAL files with it);
            default ``default_sqlite_path()``, a private file per user and
            working directory.  Pass a path of your own in production.
        timeout: seconds to wait for another process's write lock
            (SQLite's busy timeout); default 5.0.
        clock: ``time.time`` by default (seconds since the epoch; processes
            share it, a monotonic clock would not be).

    Every claim is one ``BEGIN IMMEDIATE`` transaction (the write lock is
    taken before the row is read), so it is atomic across threads *and*
    processes.  WAL mode lets readers go on while one process writes.
    Blocking calls run in a worker thread; the event loop never waits on disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        self.path = os.fspath(path) if path is not None else default_sqlite_path()
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._claims = 0

    async def claim(self, key: str, fingerprint: str, *, lease: float) -> ClaimResult:
        return await self._run(self._claim, key, fingerprint, lease)

    async def complete(
        self, key: str, token: str, response: StoredResponse, *, expiry: float
    ) -> bool:
        return await self._run(self._complete, key, token, response, expiry)

    async def release(self, key: str, token: str) -> bool:
        return await self._run(self._write, _RELEASE, key, token)

    async def extend(self, key: str, token: str, *, lease: float) -> bool:
        return await self._run(self._extend, key, token, lease)

    async def aclose(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(self._locked, fn, *args)

    def _locked(self, fn: Callable[..., _T], *args: Any) -> _T:
        # One connection per process, used by one thread at a time.
        with self._lock:
            return fn(self._connection(), *args)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # A connection inherited through fork must not be used: reopen.
            private_file(self.path)
            conn = sqlite3.connect(
                self.path,
                timeout=self._timeout,
                isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
                check_same_thread=False,  # guarded by self._lock
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a database to WAL while another connection holds its write
        # lock fails at once with "database is locked": SQLite does not call
        # the busy handler for it.  So wait here, up to the busy timeout, as
        # every other statement does (processes opening one new file race).
        deadline = time.monotonic() + self._timeout
        pause = 0.005
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _claim(
        self, conn: sqlite3.Connection, key: str, fingerprint: str, lease: float
    ) -> ClaimResult:
        with _immediate(conn):
            now = self._clock()
            self._claims += 1
            if self._claims % _PURGE_EVERY == 0:
                conn.execute(
                    "DELETE FROM idempotency_records WHERE expires_at <= ?", (now,)
                )
            row = conn.execute(
                "SELECT fingerprint, status, headers, body, expires_at"
                " FROM idempotency_records WHERE key = ?",
                (key,),
            ).fetchone()
            if row is None or row[4] <= now:
                token = new_token()
                conn.execute(
                    "INSERT OR REPLACE INTO idempotency_records"
                    " (key, fingerprint, token, status, headers, body, expires_at)"
                    " VALUES (?, ?, ?, NULL, NULL, NULL, ?)",
                    (key, fingerprint, token, now + lease),
                )
                return Claimed(token)
            response = None
            if row[1] is not None:
                response = StoredResponse.from_parts(row[1], row[2], bytes(row[3]))
            return _judge(
                row[0], response, fingerprint=fingerprint, lease_left=row[4] - now
            )

    def _complete(
        self,
        conn: sqlite3.Connection,
        key: str,
        token: str,
        response: StoredResponse,
        expiry: float,
    ) -> bool:
        return self._write(
            conn,
            "UPDATE idempotency_records SET token = NULL, status = ?, headers = ?,"
            " body = ?, expires_at = ? WHERE key = ? AND token = ?",
            response.status,
            response.headers_json(),
            response.body,
            self._clock() + expiry,
            key,
            token,
        )

    def _extend(
        self, conn: sqlite3.Connection, key: str, token: str, lease: float
    ) -> bool:
        return self._write(
            conn,
            "UPDATE idempotency_records SET expires_at = ? WHERE key = ? AND token = ?",
            self._clock() + lease,
            key,
            token,
        )

    @staticmethod
    def _write(conn: sqlite3.Connection, sql: str, *params: Any) -> bool:
        with _immediate(conn):
            return conn.execute(sql, params).rowcount == 1


_RELEASE = "DELETE FROM idempotency_records WHERE key = ? AND token = ?"


class _immediate:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        if kind is not None:
            self._conn.execute("ROLLBACK")
            return
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")  # never leave the transaction open
            raise
