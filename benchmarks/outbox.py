"""``python -m benchmarks.outbox [--quick] [--only NAME] [--markdown FILE]``.

Three measurements of ``reliable_client.outbox``, each printed beside its
target with a verdict (nothing asserts):

- ``enqueue``: ``Outbox.enqueue`` against a bare INSERT + COMMIT of the same
  row into a table of the same layout, with the same durability settings
  (SQLite WAL + ``synchronous=FULL``; PostgreSQL ``synchronous_commit`` on),
  on both stores.  Target: enqueue costs at most 1.5x the bare insert.
- ``delivery``: one relay (``Outbox.deliver``, concurrency 8) against the
  same calls sent directly with the same ``reliable_client.Client`` from 8
  threads, to the loopback server of ``benchmarks/servers.py``, and against
  the floor of any durable relay (``benchmarks/outbox_floor.py``).  Target:
  the relay's throughput at least 0.8x the direct one.
- ``scaling``: four relay processes on one PostgreSQL outbox against one,
  delivering to a server that takes 5 ms a request.  Target: at least 3x.

Timings are taken in rounds whose order alternates; a ratio is the median
of the per-round ratios, and its spread (min-max over the rounds) is shown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import reliable_client
from reliable_client.outbox import Outbox
from reliable_client.outbox._request import prepare
from reliable_client.outbox._schema import POSTGRES_SCHEMA, SQLITE_SCHEMA, TABLE
from reliable_client.outbox._store import entry_values

from .outbox_floor import BareRelay
from .outbox_support import Postgres, RelayProcess, SlowServer
from .report import Report, Table, command_line, machine, verdict, verdict_at_least
from .servers import BenchServer

BODY: dict[str, Any] = {"amount": 4200, "currency": "EUR", "note": "benchmark"}
URL = "https://api.example/payments"
TARGET_ENQUEUE = 1.5
TARGET_DELIVERY = 0.8
TARGET_SCALING = 3.0
DELIVERY_CONCURRENCY = 8
SLOW_SECONDS = 0.005
SWITCH_INTERVAL = 0.0005
_COLUMNS = (
    "id, idempotency_key, resource_id, method, url, endpoint, headers, body,"
    " fingerprint, grp, due_at, created_at, horizon_from"
)


@dataclass(frozen=True)
class Options:
    quick: bool
    enqueue_rounds: int
    enqueue_ops: int
    delivery_rounds: int
    delivery_calls: int
    scaling_rounds: int
    scaling_entries: int

    @staticmethod
    def make(quick: bool) -> Options:
        if quick:
            return Options(True, 2, 40, 4, 150, 1, 240)
        return Options(False, 5, 200, 15, 300, 3, 600)


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def _rounds(
    rounds: int, sides: dict[str, Callable[[], float]]
) -> dict[str, list[float]]:
    """Run each side once per round, alternating the order; seconds."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(sides[name]())
    return times


# -- (O1) enqueue ---------------------------------------------------------------


def _row(outbox: Outbox) -> tuple[Any, ...]:
    """What ``enqueue`` would insert, made before the clock starts."""
    entry, _ = prepare(
        "POST",
        URL,
        json=BODY,
        content=None,
        data=None,
        headers=None,
        group=None,
        idempotency=outbox.idempotency,
        max_body=outbox.max_body,
    )
    return entry_values(entry)


def _interleaved_ops(
    outbox: Outbox, bare: Callable[[tuple[Any, ...]], None], ops: int
) -> tuple[float, float]:
    """Seconds for ``ops`` bare inserts and ``ops`` enqueues, one of each in
    turn, so that both meet the same moments of the disk."""
    rows = [_row(outbox) for _ in range(ops)]
    spent = {"bare": 0.0, "enqueue": 0.0}
    clock = time.perf_counter
    for n, row in enumerate(rows):
        for side in ("bare", "enqueue") if n % 2 == 0 else ("enqueue", "bare"):
            started = clock()
            if side == "bare":
                bare(row)
            else:
                outbox.enqueue("POST", URL, json=BODY)
            spent[side] += clock() - started
    return spent["bare"], spent["enqueue"]


def _sqlite_sides(folder: Path) -> tuple[Outbox, Callable[[tuple[Any, ...]], None]]:
    outbox = Outbox(folder / "outbox.db")
    bare = sqlite3.connect(folder / "bare.db")  # the sqlite3 module's defaults
    bare.execute("PRAGMA journal_mode = WAL")
    bare.execute("PRAGMA synchronous = FULL")  # as the outbox's enqueues
    for statement in SQLITE_SCHEMA:
        bare.execute(statement)
    bare.commit()
    insert = f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES ({', '.join('?' * 13)})"

    def bare_insert(row: tuple[Any, ...]) -> None:
        now = time.time()
        bare.execute(insert, (*row, now, now, now))
        bare.commit()

    return outbox, bare_insert


def _postgres_sides(pg: Postgres) -> tuple[Outbox, Callable[[tuple[Any, ...]], None]]:
    import psycopg

    outbox = Outbox(pg.database("bench_enqueue"))
    bare = psycopg.connect(pg.database("bench_bare"))  # not autocommit
    for statement in POSTGRES_SCHEMA:
        bare.execute(statement)
    bare.commit()
    now = "statement_timestamp()"
    insert = (
        f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES ({', '.join(['%s'] * 10)},"
        f" {now}, {now}, {now})"
    )

    def bare_insert(row: tuple[Any, ...]) -> None:
        bare.execute(insert, row)
        bare.commit()

    return outbox, bare_insert


def enqueue(opts: Options, report: Report, pg: Postgres | None) -> None:
    table = Table(
        "(O1) enqueue against a bare INSERT + COMMIT of the same row",
        [
            "store",
            "bare µs/op",
            "enqueue µs/op",
            "enqueues/s",
            "ratio",
            "spread",
            "target",
            "verdict",
        ],
    )
    with tempfile.TemporaryDirectory(prefix="rc-bench-outbox-") as tmp:
        stores: list[tuple[str, Callable[[], Any]]] = [
            ("SQLite", lambda: _sqlite_sides(Path(tmp)))
        ]
        if pg is not None:
            stores.append(("PostgreSQL", lambda: _postgres_sides(pg)))
        for name, make in stores:
            outbox, bare = make()
            _interleaved_ops(outbox, bare, 20)  # warm up
            rounds = [
                _interleaved_ops(outbox, bare, opts.enqueue_ops)
                for _ in range(opts.enqueue_rounds)
            ]
            ratios = [e / b for b, e in rounds]
            ratio = statistics.median(ratios)
            per_op = {
                "bare": statistics.median(b for b, _ in rounds)
                / opts.enqueue_ops
                * 1e6,
                "enqueue": statistics.median(e for _, e in rounds)
                / opts.enqueue_ops
                * 1e6,
            }
            table.add(
                name,
                f"{per_op['bare']:.0f}",
                f"{per_op['enqueue']:.0f}",
                f"{1e6 / per_op['enqueue']:.0f}",
                f"{ratio:.3f}x",
                _spread(ratios),
                f"<= {TARGET_ENQUEUE}x",
                verdict(ratio, TARGET_ENQUEUE),
            )
    table.notes += [
        f"{opts.enqueue_rounds} rounds x {opts.enqueue_ops} operations of each "
        "side, one bare insert and one enqueue in turn (so both meet the same "
        "moments of a disk whose fsync time varies); spread is the min-max "
        "of the per-round ratios.",
        "Both sides write the same row into a table of the same layout and "
        "indexes, one transaction each, with the same durability: SQLite in "
        "WAL mode with synchronous=FULL (files in the system temp folder), "
        "PostgreSQL with fsync and synchronous_commit on.  The bare side is "
        "execute(INSERT) + commit() on a connection with the driver's "
        "defaults; enqueue runs its INSERT as one statement in autocommit mode.",
        "The ratio moves with the cost of an fsync on the machine (a fast disk "
        "makes the same Python work a larger share).",
        "enqueue includes checking and encoding the call, making the key and "
        "resource id, and the store's idempotency lookup; the bare side's rows "
        "are made before its clock starts.",
    ]
    if pg is None:
        table.notes.append("PostgreSQL not installed: its row is missing.")
    report.emit(table)


# -- (O2) delivery -----------------------------------------------------------------


def delivery(opts: Options, report: Report, pg: Postgres | None) -> None:
    calls, c = opts.delivery_calls, DELIVERY_CONCURRENCY
    table = Table(
        f"(O2) one relay against direct Client calls, concurrency {c}, loopback",
        [
            "store",
            "direct calls/s",
            "bare relay /s",
            "relay /s",
            "bare/direct",
            "relay/direct",
            "spread",
            "target",
            "verdict",
            "relay/bare",
        ],
    )
    with (
        BenchServer() as server,
        tempfile.TemporaryDirectory(prefix="rc-bench-outbox-") as tmp,
    ):
        targets = [("SQLite", str(Path(tmp) / "deliver.db"))]
        if pg is not None:
            targets.append(("PostgreSQL", pg.database("bench_deliver")))
        direct_client = reliable_client.Client(base_url=server.url)
        relay_client = reliable_client.Client(base_url=server.url)

        def direct() -> float:
            started = time.perf_counter()
            with ThreadPoolExecutor(c) as pool:
                statuses = list(
                    pool.map(
                        lambda _: direct_client.post("/fast", json=BODY).status_code,
                        range(calls),
                    )
                )
            elapsed = time.perf_counter() - started
            assert statuses == [200] * calls
            return elapsed

        for name, target in targets:
            outbox = Outbox(target, durable=False)  # setting up, not measured

            def drained(send: Callable[[], object], outbox: Outbox = outbox) -> float:
                for _ in range(calls):
                    outbox.enqueue("POST", "/fast", json=BODY)
                started = time.perf_counter()
                send()
                elapsed = time.perf_counter() - started
                stats = outbox.stats()
                assert stats["delivered"] == calls and stats["pending"] == 0, stats
                outbox.purge(0.0)
                return elapsed

            def relay(outbox: Outbox = outbox) -> float:
                return drained(lambda: outbox.deliver(relay_client, concurrency=c))

            floor = BareRelay(target, c)  # its connections, as the store's pool

            def bare(floor: BareRelay = floor) -> float:
                return drained(lambda: floor.deliver(relay_client))

            try:
                direct()  # warm all up
                relay()
                bare()
                times = _rounds(
                    opts.delivery_rounds,
                    {"direct": direct, "bare": bare, "relay": relay},
                )
            finally:
                floor.close()

            def ratios(
                over: str, under: str, times: dict[str, list[float]] = times
            ) -> list[float]:
                pairs = zip(times[over], times[under], strict=True)
                return [o / u for o, u in pairs]

            relay_direct = ratios("direct", "relay")
            ratio = statistics.median(relay_direct)
            per_second = {
                side: calls / statistics.median(times[side]) for side in times
            }
            table.add(
                name,
                f"{per_second['direct']:.0f}",
                f"{per_second['bare']:.0f}",
                f"{per_second['relay']:.0f}",
                f"{statistics.median(ratios('direct', 'bare')):.3f}x",
                f"{ratio:.3f}x",
                _spread(relay_direct),
                f">= {TARGET_DELIVERY}x",
                verdict_at_least(ratio, TARGET_DELIVERY),
                f"{statistics.median(ratios('bare', 'relay')):.3f}x",
            )
        direct_client.close()
        relay_client.close()
    table.notes += [
        f"{opts.delivery_rounds} rounds x {calls} POSTs with a JSON body to the "
        "loopback server's /fast (in this process), short rounds in turn so "
        "that the three sides meet the same load of the machine; each uses a "
        "reliable_client.Client with its defaults and the same concurrency. "
        "Ratios are medians of the per-round ratios; spread is relay/direct's.",
        "The relay's time covers claiming under leases, sending, and recording "
        "each answer (status, headers, body); the entries were enqueued before "
        "its clock started.",
        "The bare relay is the floor of any durable relay "
        "(benchmarks/outbox_floor.py): per 8 calls one claiming UPDATE ... "
        "RETURNING and one UPDATE recording status and body, written by hand "
        "with the store's connection settings, and nothing else (no lease "
        "renewed or fenced, no redelivery decided, no group order, no log, "
        "no callback).  bare/direct is what durability costs on this machine, "
        "whoever writes the relay; relay/bare what this relay adds to it.",
    ]
    report.emit(table)


# -- (O3) scaling ------------------------------------------------------------------


def _drain_time(url: str, relays: list[RelayProcess], entries: int) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        for relay in relays:
            relay.go()
        while True:
            row = conn.execute(
                f"SELECT count(*) FROM {TABLE} WHERE state = 'pending'"
            ).fetchone()
            if row is not None and row[0] == 0:
                return time.perf_counter() - started
            time.sleep(0.005)


def scaling(opts: Options, report: Report, pg: Postgres | None) -> None:
    table = Table(
        "(O3) four relay processes on one PostgreSQL outbox against one",
        [
            "concurrency per relay",
            "1 relay /s",
            "4 relays /s",
            "ratio",
            "spread",
            "target",
            "verdict",
        ],
    )
    if pg is None:
        table.notes.append("PostgreSQL not installed: not measured.")
        report.emit(table)
        return
    slow = SlowServer(SLOW_SECONDS)
    url = pg.database("bench_scaling")
    producer = Outbox(url, durable=False)
    entries = opts.scaling_entries
    try:
        for concurrency in (1,) if opts.quick else (1, 4):
            throughput: dict[int, list[float]] = {1: [], 4: []}
            for r in range(opts.scaling_rounds):
                for count in (1, 4) if r % 2 == 0 else (4, 1):
                    for _ in range(entries):
                        producer.enqueue("POST", "/things", json=BODY)
                    relays = [
                        RelayProcess(url, slow.url, concurrency) for _ in range(count)
                    ]
                    elapsed = _drain_time(url, relays, entries)
                    delivered = sum(int(relay.stop()) for relay in relays)
                    assert delivered == entries, (delivered, entries)
                    producer.purge(0.0)
                    throughput[count].append(entries / elapsed)
            ratios = [f / o for f, o in zip(throughput[4], throughput[1], strict=True)]
            ratio = statistics.median(ratios)
            table.add(
                str(concurrency),
                f"{statistics.median(throughput[1]):.0f}",
                f"{statistics.median(throughput[4]):.0f}",
                f"{ratio:.2f}x",
                _spread(ratios),
                f">= {TARGET_SCALING}x" if concurrency == 1 else "",
                verdict_at_least(ratio, TARGET_SCALING) if concurrency == 1 else "",
            )
    finally:
        slow.close()
    table.notes += [
        f"{opts.scaling_rounds} rounds x {entries} entries; a server in its own "
        f"process answers each request after {SLOW_SECONDS * 1000:.0f} ms "
        "(asyncio, keep-alive); the relays are processes of their own, "
        "started and connected before the clock starts, and the clock stops "
        "when no entry is pending.",
        "The target is read at concurrency 1 (each relay one delivery at a "
        "time: the case where relays, not the machine, are the bottleneck); "
        "the concurrency-4 row, in a full run only, shows where the machine's "
        "cores become it.",
    ]
    report.emit(table)


MEASUREMENTS: dict[str, Callable[[Options, Report, Postgres | None], None]] = {
    "enqueue": enqueue,
    "delivery": delivery,
    "scaling": scaling,
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = command_line(
        "python -m benchmarks.outbox",
        "reliable_client.outbox: enqueue cost, a relay's throughput, relays "
        "scaling out.  Prints every measurement beside its target; never asserts.",
        "smaller runs, for smoke tests",
        list(MEASUREMENTS),
        "measurement",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    opts = Options.make(args.quick)
    # As in python -m benchmarks: the loopback server of (O2) shares this
    # process, and with the default 5 ms switch interval it waits for the GIL
    # behind busy client threads; both sides of every ratio run with this.
    sys.setswitchinterval(SWITCH_INTERVAL)
    report = Report()
    started = time.perf_counter()
    pg = Postgres.start()
    try:
        versions = ", ".join(
            f"{name} {metadata.version(name)}"
            for name in ("reliable-client", "httpx", "psycopg")
            if _installed(name)
        )
        report.preamble += [
            f"Run: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, mode "
            f"{'--quick' if opts.quick else 'default (full)'}, all traffic on "
            "127.0.0.1.",
            "",
            f"Machine: {machine()}.",
            "",
            f"Versions: {versions}; SQLite {sqlite3.sqlite_version}; "
            f"{pg.version() if pg else 'PostgreSQL not installed'}.",
            "",
            f"sys.setswitchinterval({SWITCH_INTERVAL}), as in python -m benchmarks "
            "(the loopback server of (O2) runs in a thread of this process).",
        ]
        report.print_preamble()
        for name in args.only or list(MEASUREMENTS):
            t0 = time.perf_counter()
            MEASUREMENTS[name](opts, report, pg)
            print(f"[{name}: {time.perf_counter() - t0:.1f} s]\n", flush=True)
    finally:
        if pg is not None:
            pg.close()
    total = time.perf_counter() - started
    print(f"Total: {total:.1f} s")
    report.preamble += ["", f"Total runtime: {total:.0f} s."]
    if args.markdown:
        report.write_markdown(args.markdown, "Outbox benchmark results")
    return 0


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
