"""What only the PostgreSQL store must get right: claims that read a few rows
of a large backlog whatever the table's statistics say, and listings that
read a few rows of a large table."""

from __future__ import annotations

import json
from typing import Any

from reliable_client.outbox import Outbox
from reliable_client.outbox._model import Result
from reliable_client.outbox._postgres import PostgresStore
from reliable_client.outbox._postgres_sql import PURGE, entries_sql, settle_sql
from reliable_client.outbox._schema import TABLE

BACKLOG = 1000


def _plan_rows(plan: dict[str, Any], alias: str) -> list[int]:
    """Rows each scan of the outbox table (as ``alias``) read, anywhere in
    the plan: those it returned and those its filter removed."""
    found = []
    if plan.get("Relation Name") == TABLE and plan.get("Alias") == alias:
        found.append(
            int(plan["Actual Rows"]) + int(plan.get("Rows Removed by Filter", 0))
        )
    for child in plan.get("Plans", []):
        found += _plan_rows(child, alias)
    return found


def _explain(conn: Any, sql: str, params: Any) -> list[int]:
    with conn.transaction(force_rollback=True):
        (row,) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params
        ).fetchall()
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return plan[0]["Plan"]


def _outbox(url: str) -> tuple[Outbox, PostgresStore]:
    outbox = Outbox(url, durable=False)
    assert isinstance(outbox._store, PostgresStore)
    return outbox, outbox._store


def _finished_rows(store: PostgresStore, count: int, state: str, when: str) -> None:
    """``count`` finished entries at once: ``state`` and ``when`` (their
    finished_at) are SQL of the row number ``n``."""
    with store._connection() as conn:
        conn.execute(
            f"INSERT INTO {TABLE} (id, idempotency_key, resource_id, method, url,"
            " endpoint, headers, fingerprint, state, due_at, created_at,"
            " horizon_from, finished_at) SELECT gen_random_uuid()::text,"
            " gen_random_uuid()::text, gen_random_uuid()::text, 'POST', '/things',"
            f" 'POST /things', '[]', 'f', {state}, now(), now(), now(), {when}"
            f" FROM generate_series(1, {count}) AS n"
        )


def _churn(outbox: Outbox, rounds: int, entries: int) -> None:
    """Entries enqueued, delivered and purged, ``rounds`` times."""
    store = outbox._store
    for _ in range(rounds):
        for _ in range(entries):
            outbox.enqueue("POST", "/things", json={"n": 1})
        while claimed := store.claim("relay-1", 50, 30.0):
            store.settle(
                [(c, Result("delivered", 1, status=201)) for c in claimed],
                "relay-1",
                0,
                30.0,
            )
        outbox.purge(0.0)


def test_a_claim_reads_a_few_rows_of_a_backlog_whatever_the_statistics(
    postgres_url: str,
) -> None:
    # A table that filled and emptied (a relay keeping up, then a burst),
    # never analyzed: the planner's estimate of the due rows is then small,
    # and without care it fetches and sorts every pending row at each claim.
    outbox, store = _outbox(postgres_url)
    _churn(outbox, 3, 300)
    for _ in range(BACKLOG):
        outbox.enqueue("POST", "/things", json={"n": 1})
    with store._connection("ordered") as conn:
        plan = _explain(
            conn, settle_sql(True, False), [*[[]] * 10, [], 8, 30.0, "relay-1"]
        )
    scanned = _plan_rows(plan, "o")
    # The due index read in order, stopping at the eighth entry.
    assert scanned and max(scanned) <= 16, scanned
    assert len(store.claim("relay-1", 8, 30.0)) == 8


def test_a_purge_batch_reads_a_batch_of_a_large_table_whatever_the_statistics(
    postgres_url: str,
) -> None:
    outbox, store = _outbox(postgres_url)
    _churn(outbox, 3, 300)
    _finished_rows(store, 20000, "'delivered'", "now() - interval '1 hour'")
    with store._connection("ordered") as conn:  # the connections purge() uses
        plan = _explain(conn, PURGE, ("delivered", 60.0, 500))
        # And the plan made for any state, once psycopg prepares the purge.
        numbered = PURGE.replace("%s", "$1", 1).replace("%s", "$2", 1)
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL plan_cache_mode TO force_generic_plan")
            conn.execute(
                "PREPARE generic_purge (text, float8, int) AS "
                + numbered.replace("%s", "$3", 1)
            )
            generic = _explain(
                conn, "EXECUTE generic_purge ('delivered', 60, 500)", None
            )
            conn.execute("DEALLOCATE generic_purge")
    for found in (plan, generic):
        scanned = _plan_rows(found, "o")
        assert scanned and max(scanned) <= 1000, scanned
    assert outbox.purge(60.0) > 0


def test_listing_the_dead_entries_of_a_large_table_reads_a_few_rows(
    postgres_url: str,
) -> None:
    outbox, store = _outbox(postgres_url)
    every = "CASE WHEN n % 20000 = 0 THEN 'dead' ELSE 'delivered' END"
    _finished_rows(store, 100000, every, "now()")
    with store._connection() as conn:
        conn.execute(f"ANALYZE {TABLE}")
    dead = outbox.entries("dead", limit=50)
    assert [e.state for e in dead] == ["dead"] * 5
    with store._connection() as conn:  # the connections entries() uses
        plan = _explain(conn, entries_sql(True), ("dead", 50, 0))
    scanned = _plan_rows(plan, "o")
    assert scanned and sum(scanned) <= 100, scanned
