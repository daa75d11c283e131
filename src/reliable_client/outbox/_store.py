"""The store interface every outbox engine implements, and how a target is
opened.

A store keeps entries in one table.  Its promises, which the store-contract
tests check for every engine:

- ``add`` writes an entry durably (or inside the caller's transaction) and
  is idempotent for a caller's key: the same key returns the stored entry.
- ``claim`` hands out due entries under a lease, atomically: two relays
  never hold one entry at once; an entry whose lease ran out can be claimed
  again; of a group only the oldest pending entry, and only while no one
  holds it; every claim raises the entry's fencing token.
- ``record``, ``renew`` and ``release`` act only while the caller's token is
  the entry's current one, so a relay whose lease was taken over cannot
  write over its successor.
- Times (``created_at``, due times, leases) come from the store's clock.
"""

from __future__ import annotations

import abc
import json
import os
import re
import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from ._model import Claimed, NewEntry, OutboxEntry, Result, State

__all__ = [
    "OutboxStore",
    "entry_values",
    "headers_of",
    "open_store",
    "pairs_from_json",
    "pairs_to_json",
    "redact",
    "result_values",
    "storable",
]


# Columns read back as an OutboxEntry, in this order (see row_to_entry).
ENTRY_COLUMNS = (
    "id, idempotency_key, resource_id, method, url, grp, state, attempts, "
    "deliveries, last_error, status, response_headers, response_body, "
    "already_existed, {created_at}, {delivered_at}, {due_at}"
)
# Columns of a claimed entry, in this order (see row_to_claimed).
CLAIM_COLUMNS = (
    "seq, token, id, idempotency_key, resource_id, method, url, endpoint, "
    "headers, body, grp, deliveries, attempts, {created_at}, {horizon_from}"
)


class OutboxStore(abc.ABC):
    """Where entries live.  Methods block; the async relay calls them from a
    worker thread.  ``name`` is the target as it may be shown (no password).
    """

    name: str

    @abc.abstractmethod
    def now(self) -> float:
        """The store's clock, in seconds since the epoch."""

    @abc.abstractmethod
    def add(
        self, entry: NewEntry, *, connection: Any = None
    ) -> tuple[OutboxEntry, str]:
        """Write ``entry``, or find the one stored under its key; return the
        stored entry and its fingerprint.  With ``connection``, write in that
        connection's open transaction and never commit it."""

    @abc.abstractmethod
    def get(self, entry_id: str) -> OutboxEntry | None:
        """The entry with this id, or None."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Entries by state, and ``in_flight`` (pending under a live lease)."""

    @abc.abstractmethod
    def entries(
        self, state: State | None, limit: int, *, offset: int = 0
    ) -> list[OutboxEntry]:
        """Up to ``limit`` entries (of ``state``, if given) in enqueue order."""

    @abc.abstractmethod
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
        """Write deliveries' ``results`` (each only if its ``claimed.token``
        still holds the entry), then lease up to ``count`` due entries to
        ``holder`` for ``lease`` seconds, each write atomic.  ``cutoff`` (store
        clock): only entries due by then; ``exclude``: endpoints to leave
        out.  Returns which results were written, and what was claimed."""

    def claim(
        self,
        holder: str,
        count: int,
        lease: float,
        *,
        cutoff: float | None = None,
        exclude: Sequence[str] = (),
    ) -> list[Claimed]:
        """Lease up to ``count`` due entries (see :meth:`settle`)."""
        return self.settle([], holder, count, lease, cutoff=cutoff, exclude=exclude)[1]

    @abc.abstractmethod
    def renew(self, held: Sequence[tuple[int, int]], lease: float) -> set[int]:
        """Extend the leases of ``(seq, token)`` pairs still held; return the
        seqs whose lease was extended."""

    def record_many(self, results: Sequence[tuple[Claimed, Result]]) -> list[bool]:
        """Write deliveries' results (see :meth:`settle`)."""
        return self.settle(results, "", 0, 0.0)[0]

    def record(self, claimed: Claimed, result: Result) -> bool:
        """Write one delivery's result if ``claimed.token`` still holds it."""
        return self.record_many([(claimed, result)])[0]

    @abc.abstractmethod
    def release(self, claimed: Claimed) -> bool:
        """Give an unsent entry back (due now, the delivery not counted)."""

    @abc.abstractmethod
    def retry(self, entry_id: str | None) -> int:
        """Make a dead entry (None: every dead entry) pending and due now,
        with a fresh redelivery horizon; return how many."""

    @abc.abstractmethod
    def purge(self, state: State, older_than: float, batch: int) -> int:
        """Delete up to ``batch`` entries of ``state`` (delivered or dead)
        finished more than ``older_than`` seconds ago; return how many."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the store's connections."""


def open_store(
    target: object, *, timeout: float, durable: bool, create: bool
) -> OutboxStore:
    """The store for ``target``: a SQLite path (``str``, ``os.PathLike`` or
    ``sqlite:///path``), a ``postgresql://`` URL, or a store object."""
    if isinstance(target, OutboxStore):
        return target
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str):
        raise TypeError(
            "Outbox(target=...) must be a path, a postgresql:// URL or an "
            f"OutboxStore, got {type(target).__name__}"
        )
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    if scheme in ("postgresql", "postgres"):
        from ._postgres import PostgresStore

        return PostgresStore(target, timeout=timeout, durable=durable, create=create)
    if scheme == "sqlite":
        path = target.split("://", 1)[1]
        if not path:
            raise ValueError(f"Outbox target {target!r} names no SQLite file")
        target = path
    elif scheme or not target:
        raise ValueError(
            f"Outbox target {redact(target)!r} is neither a SQLite file path nor "
            "a postgresql:// URL"
        )
    from ._sqlite import SQLiteStore

    return SQLiteStore(target, timeout=timeout, durable=durable, create=create)


_PASSWORD = re.compile(r"(://[^:/@?#]*:)[^@/?#]*@")


def redact(target: str) -> str:
    """A target without its password (``postgresql://app:***@db/app``)."""
    text = _PASSWORD.sub(r"\1***@", target)
    return re.sub(r"(password=)[^&\s]*", r"\1***", text)


def pairs_to_json(pairs: Sequence[tuple[str, str]]) -> str:
    return json.dumps([list(pair) for pair in pairs], ensure_ascii=False)


def result_values(claimed: Claimed, result: Result) -> tuple[Any, ...]:
    """A recorded result's leading columns as both stores write them: seq,
    token (the fence), state, attempts, reason, status, response headers
    (JSON), response body."""
    return (
        claimed.seq,
        claimed.token,
        result.state,
        result.attempts,
        storable(result.reason),
        result.status,
        pairs_to_json(result.response_headers),
        result.response_body,
    )


def entry_values(entry: NewEntry) -> tuple[Any, ...]:
    """A new entry's columns as both stores insert them: id,
    idempotency_key, resource_id, method, url, endpoint, headers (JSON),
    body, fingerprint, group."""
    return (
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
    )


def storable(text: str | None) -> str | None:
    """``text`` as both stores keep it: PostgreSQL's text cannot hold NUL
    (an exception's message may), so it is U+FFFD."""
    return None if text is None else text.replace("\x00", "\ufffd")


def headers_of(pairs: Sequence[tuple[str, str]]) -> httpx.Headers:
    """Headers as a server's response had them: values it sent in UTF-8
    (httpx read them so) are not refused as non-ASCII."""
    return httpx.Headers(list(pairs), encoding="utf-8")


def pairs_from_json(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    return tuple((str(name), str(value)) for name, value in json.loads(text))


def row_to_entry(row: Sequence[Any]) -> OutboxEntry:
    """An OutboxEntry from a row of ``ENTRY_COLUMNS``."""
    body = row[12]
    return OutboxEntry(
        id=uuid.UUID(str(row[0])),
        idempotency_key=row[1],
        resource_id=row[2],
        method=row[3],
        url=row[4],
        group=row[5],
        state=row[6],
        attempts=int(row[7]),
        deliveries=int(row[8]),
        last_error=row[9],
        status=None if row[10] is None else int(row[10]),
        response_headers=headers_of(pairs_from_json(row[11])),
        response_body=None if body is None else bytes(body),
        already_existed=bool(row[13]),
        created_at=float(row[14]),
        delivered_at=None if row[15] is None else float(row[15]),
        due_at=None if row[16] is None or row[6] != "pending" else float(row[16]),
    )


def row_to_claimed(row: Sequence[Any], claimed_at: float) -> Claimed:
    """A Claimed from a row of ``CLAIM_COLUMNS`` (read after the claim)."""
    body = row[9]
    return Claimed(
        seq=int(row[0]),
        token=int(row[1]),
        id=str(row[2]),
        idempotency_key=row[3],
        resource_id=row[4],
        method=row[5],
        url=row[6],
        endpoint=row[7],
        headers=pairs_from_json(row[8]),
        body=None if body is None else bytes(body),
        group=row[10],
        deliveries=int(row[11]),
        attempts=int(row[12]),
        created_at=float(row[13]),
        horizon_from=float(row[14]),
        claimed_at=claimed_at,
    )


def fresh_entry(entry: NewEntry, now: float) -> OutboxEntry:
    """The OutboxEntry of ``entry`` as just written at ``now``."""
    return OutboxEntry(
        id=uuid.UUID(entry.id),
        idempotency_key=entry.idempotency_key,
        resource_id=entry.resource_id,
        method=entry.method,
        url=entry.url,
        group=entry.group,
        state="pending",
        attempts=0,
        deliveries=0,
        last_error=None,
        status=None,
        response_headers=httpx.Headers(),
        response_body=None,
        already_existed=False,
        created_at=now,
        delivered_at=None,
        due_at=now,
    )
