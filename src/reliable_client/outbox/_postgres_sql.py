"""The PostgreSQL store's statements.  Times are the database's:
``statement_timestamp()``, read back as seconds since the epoch."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ._model import Claimed, Result
from ._schema import TABLE
from ._store import CLAIM_COLUMNS, ENTRY_COLUMNS, result_values

__all__ = [
    "BY_KEY",
    "CLAIM",
    "CLAIMING",
    "ENTRY",
    "INSERT",
    "INSERT_IN_GROUP",
    "NOW",
    "PURGE",
    "SECONDS",
    "entries_sql",
    "epoch",
    "record_params",
    "settle_sql",
]


def epoch(column: str) -> str:
    return f"extract(epoch FROM {column})::float8"


ENTRY = ENTRY_COLUMNS.format(
    created_at=epoch("created_at"),
    delivered_at=epoch("delivered_at"),
    due_at=epoch("due_at"),
)
CLAIM = CLAIM_COLUMNS.format(
    created_at=epoch("created_at"), horizon_from=epoch("horizon_from")
)
NOW = "statement_timestamp()"
SECONDS = "* interval '1 second'"
INSERT = (
    f"INSERT INTO {TABLE} (id, idempotency_key, resource_id, method, url,"
    " endpoint, headers, body, fingerprint, grp, due_at, created_at, horizon_from)"
    f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {NOW}, {NOW}, {NOW})"
    f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING {epoch(NOW)}"
)
INSERT_IN_GROUP = (
    "WITH locked AS (SELECT pg_advisory_xact_lock(%s, hashtext(%s)))"
    f" INSERT INTO {TABLE} (id, idempotency_key, resource_id, method, url,"
    " endpoint, headers, body, fingerprint, grp, due_at, created_at, horizon_from)"
    " SELECT %s, %s, %s, %s, %s, %s, %s, %s::bytea, %s, %s,"
    f" {NOW}, {NOW}, {NOW} FROM locked"
    f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING {epoch(NOW)}"
)
# Results of several deliveries in one statement, one array a column: one
# statement text whatever their number (psycopg caches its parsing, which it
# does not for a text with over 50 placeholders), and no limit on how many
# (PostgreSQL takes at most 65,535 parameters a statement).
RECORD = (
    f"UPDATE {TABLE} AS t SET state = v.state, attempts = t.attempts + v.attempts,"
    " last_error = v.reason, status = v.status, response_headers = v.headers,"
    " response_body = v.body, already_existed = v.existed,"
    f" due_at = {NOW} + v.delay {SECONDS},"
    f" delivered_at = CASE WHEN v.state = 'delivered' THEN {NOW} END,"
    f" finished_at = CASE WHEN v.state <> 'pending' THEN {NOW} END,"
    " lease_until = NULL, holder = NULL FROM unnest(%b::bigint[], %b::bigint[],"
    " %b::text[], %b::int[], %b::text[], %b::int[], %b::text[], %b::bytea[],"
    " %b::bool[], %b::float8[]) AS v(seq, token, state, attempts, reason,"
    " status, headers, body, existed, delay)"
    " WHERE t.seq = v.seq AND t.token = v.token AND t.state = 'pending'"
    " RETURNING t.seq, t.token"
)
CLAIMING = (
    f"c AS (SELECT seq FROM {TABLE} AS o WHERE state = 'pending'"
    " AND due_at <= {due}"
    f" AND (lease_until IS NULL OR lease_until <= {NOW})"
    " AND (grp IS NULL OR seq = (SELECT min(seq) FROM"
    f" {TABLE} AS p WHERE p.grp = o.grp AND p.state = 'pending'))"
    " AND NOT (endpoint = ANY(%s)) ORDER BY due_at, seq LIMIT %s"
    f" FOR UPDATE SKIP LOCKED), cl AS (UPDATE {TABLE} AS t SET token = t.token + 1,"
    f" deliveries = t.deliveries + 1, lease_until = {NOW} + %s {SECONDS},"
    f" holder = %s FROM c WHERE t.seq = c.seq RETURNING"
    f" {CLAIM.replace('seq,', 't.seq,', 1)}, {epoch(NOW)} AS now)"
)


@functools.lru_cache(maxsize=4)
def settle_sql(claiming: bool, cutoff: bool) -> str:
    """One statement that records results (data-modifying CTE ``rec``, its
    parameters from :func:`record_params`) and claims (``c``/``cl``): one
    round trip.  Its first column is the array of the recorded (seq, token)
    pairs, the others a claimed row (NULLs when none was claimed)."""
    ctes = [f"rec AS ({RECORD})"]
    if claiming:
        due = f"LEAST({NOW}, to_timestamp(%s))" if cutoff else NOW
        ctes.append(CLAIMING.format(due=due))
    claimed = "cl.*" if claiming else "NULL"
    join = "LEFT JOIN cl ON true" if claiming else ""
    return (
        f"WITH {', '.join(ctes)} SELECT ARRAY(SELECT ARRAY[seq, token] FROM rec),"
        f" {claimed}"
        f" FROM (VALUES (1)) AS one {join}"
    )


def entries_sql(by_state: bool) -> str:
    """Entries in enqueue order (of one state: its parameter first), then
    LIMIT and OFFSET."""
    where = "WHERE state = %s " if by_state else ""
    return f"SELECT {ENTRY} FROM {TABLE} AS o {where}ORDER BY seq LIMIT %s OFFSET %s"


# Finished entries of a state, the oldest first, a batch at a time.
# (state <> 'pending' is what the partial index covers: said outright, a
# plan made for any state, once psycopg prepares the statement, can use it.)
PURGE = (
    f"DELETE FROM {TABLE} WHERE seq IN (SELECT seq FROM {TABLE} AS o"
    f" WHERE state = %s AND state <> 'pending'"
    f" AND finished_at <= {NOW} - %s {SECONDS} ORDER BY finished_at LIMIT %s)"
)

BY_KEY = f"SELECT {ENTRY}, fingerprint FROM {TABLE} WHERE idempotency_key = %s"


def record_params(results: Sequence[tuple[Claimed, Result]]) -> list[list[Any]]:
    """The ``rec`` statement's parameters: one list a column."""
    rows = [
        (
            *result_values(claimed, result),
            result.already_existed,
            float(result.delay or 0),
        )
        for claimed, result in results
    ]
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 10
