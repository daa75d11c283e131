"""The outbox table's layout on each engine, and its version.

One table, ``reliable_client_outbox`` (it may live in the application's own
database, beside its tables), and ``reliable_client_outbox_meta`` holding the
schema version.  A table of another version is refused with an error that
says so; this is version 1, the first, so there is nothing to migrate yet.
"""

from __future__ import annotations

from ._model import OutboxError

__all__ = [
    "META",
    "POSTGRES_SCHEMA",
    "SCHEMA_VERSION",
    "SQLITE_SCHEMA",
    "TABLE",
    "judge_schema",
]

TABLE = "reliable_client_outbox"
META = "reliable_client_outbox_meta"
SCHEMA_VERSION = 1

SQLITE_SCHEMA = (
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
POSTGRES_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {META} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        idempotency_key TEXT NOT NULL UNIQUE,
        resource_id TEXT NOT NULL,
        method TEXT NOT NULL,
        url TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        headers TEXT NOT NULL,
        body BYTEA,
        fingerprint TEXT NOT NULL,
        grp TEXT,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        deliveries INTEGER NOT NULL DEFAULT 0,
        token BIGINT NOT NULL DEFAULT 0,
        due_at TIMESTAMPTZ NOT NULL,
        lease_until TIMESTAMPTZ,
        holder TEXT,
        last_error TEXT,
        status INTEGER,
        response_headers TEXT,
        response_body BYTEA,
        already_existed BOOLEAN NOT NULL DEFAULT FALSE,
        created_at TIMESTAMPTZ NOT NULL,
        horizon_from TIMESTAMPTZ NOT NULL,
        delivered_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_due ON {TABLE} (due_at, seq)"
    " WHERE state = 'pending'",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_group ON {TABLE} (grp, seq)"
    " WHERE state = 'pending'",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_finished ON {TABLE} (state, finished_at)"
    " WHERE state <> 'pending'",
)


def judge_schema(name: str, has_table: bool, version: str | None) -> bool:
    """Whether the table is there at our version (False: absent); a table of
    another version, or of no recorded version, raises OutboxError."""
    if not has_table:
        return False
    if version != str(SCHEMA_VERSION):
        found = version or "unknown (no version recorded)"
        raise OutboxError(
            f"outbox {name!r} has a table {TABLE} of schema version {found}; "
            f"this reliable_client reads version {SCHEMA_VERSION} (upgrade "
            "reliable_client, or give the outbox another database)"
        )
    return True
