"""What only the PostgreSQL store must get right: claims that read a few rows
of a large backlog whatever the table's statistics say."""

from __future__ import annotations

import json
from typing import Any

from reliable_client.outbox import Outbox
from reliable_client.outbox._model import Result
from reliable_client.outbox._postgres import PostgresStore
from reliable_client.outbox._postgres_sql import settle_sql
from reliable_client.outbox._schema import TABLE

BACKLOG = 1000


def _plan_rows(plan: dict[str, Any], table: str) -> list[int]:
    """Rows each scan of ``table`` returned, anywhere in the plan."""
    found = []
    if plan.get("Relation Name") == table and plan.get("Alias") == "o":
        found.append(int(plan["Actual Rows"]))
    for child in plan.get("Plans", []):
        found += _plan_rows(child, table)
    return found


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
    outbox = Outbox(postgres_url, durable=False)
    store = outbox._store
    assert isinstance(store, PostgresStore)
    _churn(outbox, 3, 300)
    for _ in range(BACKLOG):
        outbox.enqueue("POST", "/things", json={"n": 1})
    with store._connection() as conn, conn.transaction(force_rollback=True):
        (row,) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + settle_sql(True, False),
            [*[[]] * 10, [], 8, 30.0, "relay-1"],
        ).fetchall()
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    scanned = _plan_rows(plan[0]["Plan"], TABLE)
    # The due index read in order, stopping at the eighth entry.
    assert scanned and max(scanned) <= 16, scanned
    assert len(store.claim("relay-1", 8, 30.0)) == 8
