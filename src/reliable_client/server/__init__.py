"""A reference Idempotency-Key server: pure ASGI middleware and its stores.

from reliable_client.server import IdempotencyMiddleware, SQLiteStore

app = IdempotencyMiddleware(app, store=SQLiteStore("/var/lib/app/keys.db"))

It implements draft-ietf-httpapi-idempotency-key-header: a keyed POST/PATCH
runs once; a retry with the same key and payload gets the stored response
(``Idempotent-Replayed: true``), one still running gets 409, one with another
payload gets 422, a missing required key 400 (problem+json, RFC 9457).  The
key is claimed atomically in the store *before* the handler runs, so two
requests with one key can never both run it.
"""

from __future__ import annotations

from ._middleware import DEFAULT_REPLAY_HEADERS, IdempotencyMiddleware
from ._redis import RedisStore
from ._stores import (
    Claimed,
    ClaimResult,
    Completed,
    IdempotencyStore,
    InFlight,
    MemoryStore,
    Mismatch,
    SQLiteStore,
    StoredResponse,
    default_sqlite_path,
)

__all__ = [
    "DEFAULT_REPLAY_HEADERS",
    "ClaimResult",
    "Claimed",
    "Completed",
    "IdempotencyMiddleware",
    "IdempotencyStore",
    "InFlight",
    "MemoryStore",
    "Mismatch",
    "RedisStore",
    "SQLiteStore",
    "StoredResponse",
    "default_sqlite_path",
]
