"""``Outbox``: write a call down now, deliver it later, exactly once.

The application enqueues a call (in its own transaction if it likes); a
relay delivers it through a ``reliable_client.Client`` with the same
Idempotency-Key and resource id on every attempt of every delivery, across
crashes and restarts, until the server has answered; the answer is kept.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from .._idempotency import Idempotency
from .._policy import RetryPolicy
from .._validation import check_bool, check_int, check_number
from ._arelay import AsyncRelay, StopEvent
from ._decision import DEFAULT_REDELIVERY, check_redelivery
from ._model import DEAD, DELIVERED, STATES, DeliveryCounts, OutboxEntry, State
from ._relay import SyncRelay
from ._relay_core import DEFAULT_CONCURRENCY, logger
from ._request import parse_id, prepare
from ._store import OutboxStore, open_store
from ._waiting import Waiters

__all__ = ["Outbox"]

_OWNER = "Outbox"
_DEFAULT_IDEMPOTENCY = Idempotency()
_RELAY_COUNTERS = ("delivered", "dead", "rescheduled", "lost", "released", "requests")


class Outbox:
    """A durable table of calls to make, and the relays that make them.

    Args:
        target: a SQLite file path (``"app.db"``, ``os.PathLike`` or
            ``"sqlite:///path"``; created 0600 with its table when absent),
            or a ``postgresql://`` URL (needs the ``postgres`` extra).  A
            target that cannot be opened raises :class:`OutboxError` naming
            it.
        redelivery: when a failed delivery is tried again, as a
            :class:`RetryPolicy` counting deliveries (each delivery is one
            call of the relay's client, with that client's own retries).
            Default: 2 s, doubling to an hour apart, equal jitter, dead after
            23 h.  Its ``deadline`` (seconds, at most 86400; None means 23 h)
            runs from ``created_at``: an entry is never sent again after it,
            as the server may have forgotten its key.
        lease: seconds a relay holds an entry without renewing it (default
            30.0); a relay renews every ``lease / 3`` while it delivers, so
            only a dead relay's entries run out and are taken over.
        max_body: largest request body accepted, in bytes (default 1 MiB).
        idempotency: names the key and resource-id headers (and the JSON
            field, ``resource_id_field``) and makes the keys (default
            ``Idempotency()``: UUIDv7).  Every entry is keyed, whatever its
            method.
        max_response_body: bytes of a final response's body kept (default
            65536).
        retention: seconds a delivered entry is kept before a relay purges it
            (default 7 days); ``dead_retention`` the same for dead entries
            (default 30 days).
        durable: an entry survives a power loss once ``enqueue`` returns
            (default True).  False trades that for speed (SQLite
            ``synchronous=NORMAL``, PostgreSQL ``synchronous_commit=off``):
            it still survives a crash of the process.
        timeout: seconds to wait for a lock or a connection (default 5.0).
        on_result: called with the :class:`OutboxEntry` when a relay of
            this process delivers an entry or gives it up (in the relay's
            thread or event loop; exceptions are logged and ignored).
        create: create the file or table when absent (default True).
    """

    def __init__(
        self,
        target: Any,
        *,
        redelivery: RetryPolicy = DEFAULT_REDELIVERY,
        lease: float = 30.0,
        max_body: int = 1024 * 1024,
        idempotency: Idempotency = _DEFAULT_IDEMPOTENCY,
        max_response_body: int = 65_536,
        retention: float = 7 * 86_400.0,
        dead_retention: float = 30 * 86_400.0,
        durable: bool = True,
        timeout: float = 5.0,
        on_result: Callable[[OutboxEntry], object] | None = None,
        create: bool = True,
    ) -> None:
        self._redelivery = check_redelivery(redelivery)
        self.redelivery = redelivery
        self.lease = check_number(_OWNER, "lease", lease, allow_minimum=False)
        self.max_body = check_int(_OWNER, "max_body", max_body, minimum=1)
        if not isinstance(idempotency, Idempotency):
            raise TypeError(
                f"{_OWNER}.idempotency must be an Idempotency, "
                f"got {type(idempotency).__name__}"
            )
        self.idempotency = idempotency
        self.max_response_body = check_int(
            _OWNER, "max_response_body", max_response_body, minimum=0
        )
        self.retention = check_number(_OWNER, "retention", retention)
        self.dead_retention = check_number(_OWNER, "dead_retention", dead_retention)
        check_bool(_OWNER, "durable", durable)
        check_bool(_OWNER, "create", create)
        timeout = check_number(_OWNER, "timeout", timeout, allow_minimum=False)
        if on_result is not None and not callable(on_result):
            raise TypeError(f"{_OWNER}.on_result must be callable or None")
        self.on_result = on_result
        self._relays: set[SyncRelay | AsyncRelay] = set()
        self._lock = threading.Lock()
        self._waiters = Waiters(self._final)
        self._counters: Counter[str] = Counter()
        self._store: OutboxStore = open_store(
            target, timeout=timeout, durable=durable, create=create
        )

    @property
    def name(self) -> str:
        """The target, as it may be shown (a PostgreSQL password hidden)."""
        return self._store.name

    def __repr__(self) -> str:
        return f"Outbox({self.name!r})"

    def close(self) -> None:
        """Close the store's connections (the outbox reopens them if used)."""
        self._store.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the application's side ------------------------------------------------

    def enqueue(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        json: Any = None,
        content: str | bytes | None = None,
        data: Any = None,
        headers: Any = None,
        group: str | None = None,
        connection: Any = None,
    ) -> OutboxEntry:
        """Write a call down; when this returns, it is committed (or, with
        ``connection``, written in that connection's open transaction).

        Args:
            method: an HTTP method (``"POST"``; case-insensitive).
            url: absolute http(s), or a relative path resolved against the
                relay client's ``base_url``.  No user info.
            json: the body as a JSON value (at most one of ``json``,
                ``content`` and ``data``; at most ``max_body`` bytes).
            content: the body as bytes or str.  Not a generator, file or
                stream (``TypeError``).
            data: the body as a mapping of form fields.
            headers: a mapping or (name, value) pairs.  ``Authorization``,
                ``Proxy-Authorization`` and ``Cookie`` are refused: the relay's
                client brings its own auth.  A caller's Idempotency-Key makes
                the enqueue idempotent: the same key again returns the stored
                entry (``ValueError`` if method, URL, body or group differ).
            group: entries of one group are delivered one at a time, in the
                order of their enqueue calls.
            connection: a ``sqlite3`` connection to the outbox's file, or a
                psycopg connection to its database: the entry is written in
                its open transaction, which the caller commits or rolls back.
        """
        entry, keyed = prepare(
            method,
            url,
            json=json,
            content=content,
            data=data,
            headers=headers,
            group=group,
            idempotency=self.idempotency,
            max_body=self.max_body,
        )
        stored, fingerprint = self._store.add(entry, connection=connection)
        if keyed and str(stored.id) != entry.id and fingerprint != entry.fingerprint:
            raise ValueError(
                f"enqueue(): the {self.idempotency.header} {entry.idempotency_key!r} "
                "was enqueued before with another method, URL, body or group"
            )
        for relay in list(self._relays):
            relay.wake()
        return stored

    def get(self, entry_id: uuid.UUID | str) -> OutboxEntry | None:
        """The entry with this id (a ``uuid.UUID`` or its ``str()``), or None."""
        return self._store.get(parse_id(entry_id))

    def entries(
        self, state: State | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[OutboxEntry]:
        """Up to ``limit`` entries (of ``state``, if given) in enqueue order."""
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        check_int(_OWNER, "entries(limit)", limit, minimum=1)
        check_int(_OWNER, "entries(offset)", offset, minimum=0)
        return self._store.entries(state, limit, offset=offset)

    def stats(self) -> dict[str, int]:
        """Entries by state (``pending``, ``delivered``, ``dead``, and
        ``in_flight``: pending under a live lease), and what this process's
        relays did (``relay_delivered``, ``relay_dead``,
        ``relay_rescheduled``, ``relay_lost``, ``relay_released``,
        ``relay_requests``)."""
        counts = self._store.counts()
        with self._lock:
            for name in _RELAY_COUNTERS:
                counts[f"relay_{name}"] = self._counters[name]
        return counts

    def retry(self, entry_id: uuid.UUID | str) -> bool:
        """Deliver a dead entry again (same key and resource id), with a
        fresh redelivery schedule; False if it is not dead."""
        return self._store.retry(parse_id(entry_id)) == 1

    def retry_dead(self) -> int:
        """Deliver every dead entry again; return how many."""
        return self._store.retry(None)

    def purge(
        self,
        older_than: float | None = None,
        *,
        dead_older_than: float | None = None,
        batch: int = 500,
        max_batches: int | None = None,
    ) -> int:
        """Delete delivered entries finished more than ``older_than`` seconds
        ago (default ``retention``) and dead ones past ``dead_older_than``
        (default ``dead_retention``), ``batch`` rows per transaction (at most
        ``max_batches`` transactions of each); return how many went."""
        check_int(_OWNER, "purge(batch)", batch, minimum=1)
        removed = 0
        for state, age in (
            (DELIVERED, self.retention if older_than is None else older_than),
            (DEAD, self.dead_retention if dead_older_than is None else dead_older_than),
        ):
            check_number(_OWNER, "purge(older_than)", age)
            done = 0
            while max_batches is None or done < max_batches:
                count = self._store.purge(state, age, batch)
                removed += count
                done += 1
                if count < batch:
                    break
        return removed

    def wait(
        self, entry_id: uuid.UUID | str, timeout: float | None = None
    ) -> OutboxEntry:
        """Block until the entry is delivered or dead, and return it.  A
        relay of this process wakes the waiter at once; another process's
        result is seen within a quarter second.  ``timeout`` (seconds, None:
        no limit) raises ``TimeoutError``; an unknown id ``KeyError``."""
        return self._waiters.wait(parse_id(entry_id), timeout)

    async def await_entry(
        self, entry_id: uuid.UUID | str, timeout: float | None = None
    ) -> OutboxEntry:
        """``await`` the entry's delivery or death (as :meth:`wait`)."""
        return await self._waiters.await_entry(parse_id(entry_id), timeout)

    def _final(self, key: str) -> OutboxEntry | None:
        entry = self._store.get(key)
        if entry is None:
            raise KeyError(f"no outbox entry {key}")
        return entry if entry.state != "pending" else None

    # -- the relay's side ----------------------------------------------------------

    def deliver(
        self,
        client: httpx.Client,
        *,
        limit: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> DeliveryCounts:
        """Deliver every entry due when this starts, once each, through
        ``client`` (its policy, budget, auth and ``base_url`` apply), at most
        ``limit`` of them, ``concurrency`` at a time (default 8); return
        what happened."""
        self._check_client(client, asynchronous=False)
        self._check_limit(limit)
        relay = SyncRelay(
            self, client, concurrency=concurrency, poll_interval=0.5, limit=limit
        )
        return relay.deliver()

    def run(
        self,
        client: httpx.Client,
        *,
        stop: threading.Event | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        poll_interval: float = 0.5,
    ) -> DeliveryCounts:
        """Deliver entries as they fall due until ``stop`` is set (or, in the
        main thread, SIGTERM arrives); then give back what is unsent, let
        what is being sent finish, and return what happened.  The store is
        looked at every ``poll_interval`` seconds (default 0.5) when idle,
        and at once when this process enqueues."""
        self._check_client(client, asynchronous=False)
        check_number(_OWNER, "run(poll_interval)", poll_interval, allow_minimum=False)
        relay = SyncRelay(
            self, client, concurrency=concurrency, poll_interval=poll_interval
        )
        return relay.run(stop)

    async def adeliver(
        self,
        client: httpx.AsyncClient,
        *,
        limit: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> DeliveryCounts:
        """:meth:`deliver` through an ``AsyncClient``."""
        self._check_client(client, asynchronous=True)
        self._check_limit(limit)
        relay = AsyncRelay(
            self, client, concurrency=concurrency, poll_interval=0.5, limit=limit
        )
        return await relay.deliver()

    async def arun(
        self,
        client: httpx.AsyncClient,
        *,
        stop: StopEvent | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        poll_interval: float = 0.5,
    ) -> DeliveryCounts:
        """:meth:`run` through an ``AsyncClient``; ``stop`` is an
        ``asyncio.Event`` or a ``threading.Event``."""
        self._check_client(client, asynchronous=True)
        check_number(_OWNER, "arun(poll_interval)", poll_interval, allow_minimum=False)
        relay = AsyncRelay(
            self, client, concurrency=concurrency, poll_interval=poll_interval
        )
        return await relay.run(stop)

    def _check_client(self, client: object, *, asynchronous: bool) -> None:
        kind = httpx.AsyncClient if asynchronous else httpx.Client
        if not isinstance(client, kind):
            want = (
                "adeliver/arun take an AsyncClient"
                if asynchronous
                else ("deliver/run take a Client")
            )
            raise TypeError(
                f"{want} (reliable_client's, or httpx's), got {type(client).__name__}"
            )
        if client.is_closed:
            raise RuntimeError("the relay's client is closed")
        theirs = getattr(client, "idempotency", None)
        ours = self.idempotency
        if isinstance(theirs, Idempotency):
            names = (theirs.header.lower(), (theirs.resource_id_header or "").lower())
            mine = (ours.header.lower(), (ours.resource_id_header or "").lower())
            if names[0] != mine[0] or (names[1] and names[1] != mine[1]):
                raise ValueError(
                    f"the relay's client sends keys as {theirs.header!r} / "
                    f"{theirs.resource_id_header!r} but the outbox stored them as "
                    f"{ours.header!r} / {ours.resource_id_header!r}: the client "
                    "would add keys of its own; give both the same Idempotency"
                )

    @staticmethod
    def _check_limit(limit: int | None) -> None:
        if limit is not None:
            check_int(_OWNER, "deliver(limit)", limit, minimum=1)

    def _count(self, names: list[str], requests: int) -> None:
        with self._lock:
            for name in names:
                self._counters[name] += 1
            self._counters["requests"] += requests

    def _told(self, entry_id: str) -> bool:
        """Whether anyone here wants to hear of this entry's result."""
        return self.on_result is not None or self._waiters.waiting(entry_id)

    def _finished(self, entry: OutboxEntry) -> None:
        """A relay of this process delivered or buried ``entry``."""
        self._waiters.wake(str(entry.id))
        if self.on_result is not None:
            try:
                self.on_result(entry)
            except Exception:
                logger.exception("Outbox on_result callback raised; ignored")
