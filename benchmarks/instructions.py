"""Instructions per request on the happy path, counted by valgrind's callgrind.

``python -m benchmarks.instructions [--quick] [--only NAME] [--markdown FILE]``

Timings on a shared or virtual machine move by several percent from run to
run, which is more than the overheads the happy-path targets are about.  The
number of instructions a request executes barely moves.  Each count here is
``(Ir(warm-up + n requests) - Ir(warm-up)) / n``: two runs of one small child
process under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``, which
differ only in the ``n`` measured requests, so imports, start-up and warm-up
cancel out.  The child sends through the same ``call(method, url, body)``
harness as the timed benchmarks.

Scenarios: ``mock`` (1: sync over ``httpx.MockTransport``), ``async`` (6a:
``AsyncClient`` over ``httpx.MockTransport``, one task), ``loopback`` (2:
sync over 127.0.0.1 keep-alive to :class:`benchmarks.servers.BenchServer`,
which runs in this, untraced, process: the count is the client's own
user-space work; the kernel's share of each request is not counted, and the
clients make the same system calls).

Needs valgrind (Debian/Ubuntu: ``apt install valgrind``); the timed
benchmarks do not.  Prints each ratio beside its target; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import reliable_client

from .contestants import (
    ASYNC_CONTESTANTS,
    CONTESTANTS,
    RC_POLICY,
    AsyncCaller,
    Caller,
    _direct,
    quiet_loggers,
)
from .measure import (
    FLOOR,
    GAUGE,
    JSON_BODY,
    TARGET_CPU,
    TARGET_GET,
    TARGET_POST,
    mock_handler,
)
from .report import Report, Table, command_line, machine, verdict, versions
from .servers import BenchServer

__all__ = ["main"]

WARM_UP = 50
MOCK_URL = "http://bench.invalid/items"
SCENARIOS = ("mock", "async", "loopback")
_TITLES = {
    "mock": "(1) no network, httpx.MockTransport",
    "async": "(6a) async, no network, httpx.MockTransport, one task",
    "loopback": "(2) loopback keep-alive, the client's instructions",
}
_COLLECTED = re.compile(r"Collected : (\d+)")

# Two request headers with the shape of ours (names, 36-character values).
_TWO_HEADERS = [
    (
        b"Idempotency-Key",
        b"idempotency-key",
        b"0193a5c2-7d4e-7abc-8def-0123456789ab",
    ),
    (
        b"X-Client-Resource-Id",
        b"x-client-resource-id",
        b"0193a5c2-7d4e-7abc-8def-0123456789ac",
    ),
]
HEADERS_ROW = "httpx + the same two headers"
NO_KEYS_ROW = "reliable_client.Client, idempotency=None"
THROTTLE_ROW = "reliable_client.Client, throttle=AdaptiveThrottle()"


class _TwoHeadersClient(httpx.Client):
    """Plain httpx sending POST and PATCH with two more headers, appended the
    way reliable_client appends them: what httpx itself charges to carry them."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if request.method in ("POST", "PATCH"):
            request.headers._list.extend(_TWO_HEADERS)
        return super().send(request, **kwargs)


def _plain_with_headers(transport: httpx.BaseTransport | None) -> Caller:
    if transport is None:
        return _direct(_TwoHeadersClient())
    return _direct(_TwoHeadersClient(transport=transport))


def _rc_without_keys(transport: httpx.BaseTransport | None) -> Caller:
    if transport is None:
        return _direct(reliable_client.Client(retry=RC_POLICY, idempotency=None))
    return _direct(
        reliable_client.Client(retry=RC_POLICY, idempotency=None, transport=transport)
    )


def _rc_with_throttle(transport: httpx.BaseTransport | None) -> Caller:
    throttle = reliable_client.AdaptiveThrottle()
    if transport is None:
        return _direct(reliable_client.Client(retry=RC_POLICY, throttle=throttle))
    return _direct(
        reliable_client.Client(retry=RC_POLICY, throttle=throttle, transport=transport)
    )


@dataclass(frozen=True)
class Row:
    name: str
    ours: bool
    peer: bool  # another library: left out of --quick


def _sync_rows() -> dict[str, tuple[Row, Callable[[Any], Caller]]]:
    rows: dict[str, tuple[Row, Callable[[Any], Caller]]] = {}
    for c in CONTESTANTS:
        peer = c.retries and not c.ours
        rows[c.name] = (Row(c.name, c.ours, peer), c.make)
        if c.name == GAUGE:
            rows[HEADERS_ROW] = (Row(HEADERS_ROW, False, False), _plain_with_headers)
    rows[NO_KEYS_ROW] = (Row(NO_KEYS_ROW, False, False), _rc_without_keys)
    rows[THROTTLE_ROW] = (Row(THROTTLE_ROW, False, False), _rc_with_throttle)
    return rows


def _async_rows() -> dict[str, tuple[Row, Callable[..., AsyncCaller]]]:
    return {
        a.name: (Row(a.name, a.ours, a.retries and not a.ours), a.make)
        for a in ASYNC_CONTESTANTS
    }


def _rows(scenario: str) -> list[Row]:
    table: dict[str, Any] = _async_rows() if scenario == "async" else _sync_rows()
    rows = [row for row, _ in table.values()]
    if scenario == "mock":
        mockable = {c.name for c in CONTESTANTS if c.mockable}
        rows = [r for r in rows if r.name in mockable or not r.peer]
    return rows


# -- the child: one client, warm-up + n requests ---------------------------------


def _check(status: int, method: str) -> None:
    if status != 200:
        raise SystemExit(f"a happy-path {method} returned {status}, not 200")


def _child(scenario: str, name: str, method: str, n: int, url: str) -> int:
    quiet_loggers()
    body = JSON_BODY if method == "POST" else None
    if scenario == "async":
        make_async = _async_rows()[name][1]

        async def run() -> None:
            caller = make_async(httpx.MockTransport(mock_handler), httpx.Limits())
            call: Callable[[str, str, Any], Awaitable[int]] = caller.call
            for _ in range(WARM_UP + n):
                _check(await call(method, url, body), method)
            await caller.close()

        asyncio.run(run())
        return 0
    transport = httpx.MockTransport(mock_handler) if scenario == "mock" else None
    caller = _sync_rows()[name][1](transport)
    for _ in range(WARM_UP + n):
        _check(caller.call(method, url, body), method)
    caller.close()
    return 0


# -- the parent: run the children under callgrind, in parallel -------------------


@dataclass(frozen=True)
class Job:
    scenario: str
    row: str
    method: str
    requests: int
    url: str


def _instructions(valgrind: str, job: Job) -> int:
    """Instructions that one child run executed (all of its process)."""
    argv = [
        valgrind,
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--child",
        job.scenario,
        job.row,
        job.method,
        str(job.requests),
        job.url,
    ]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        timeout=1800,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise RuntimeError(
            f"{job.scenario} {job.row!r} {job.method}: callgrind run failed "
            f"(exit {done.returncode}):\n{tail}"
        )
    return int(found.group(1))


def _table(
    scenario: str, method: str, rows: list[Row], per_request: dict[str, float]
) -> Table:
    floor = per_request[FLOOR]
    noise = abs(per_request[GAUGE] / floor - 1.0)
    target = (
        TARGET_CPU
        if scenario == "loopback"
        else (TARGET_GET if method == "GET" else TARGET_POST)
    )
    table = Table(
        f"Instructions per request, {_TITLES[scenario]}: {method}",
        ["contestant", "instructions/request", "ratio to httpx", "target", "verdict"],
    )
    for row in rows:
        count = per_request[row.name]
        ratio = count / floor
        table.add(
            row.name,
            f"{count:,.0f}",
            f"{ratio:.3f}x",
            f"<= {target:.2f}x" if row.ours else "",
            verdict(ratio, target, noise) if row.ours else "",
        )
    table.notes.append(
        f"{method}; A/A: {per_request[GAUGE] / floor:.4f}x (the method's own noise)"
    )
    return table


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = command_line(
        "python -m benchmarks.instructions",
        "Instructions per happy-path request (valgrind callgrind), "
        "reliable_client against plain httpx and peers.  Never asserts.",
        "100 requests a count, no peer libraries (a smoke run)",
        SCENARIOS,
        "scenario",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="measured requests per count (default 1000; 300 over loopback)",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        scenario, row, method, n, url = args.child
        return _child(scenario, row, method, int(n), url)
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print(
            "python -m benchmarks.instructions needs valgrind "
            "(Debian/Ubuntu: apt install valgrind); python -m benchmarks does not",
            file=sys.stderr,
        )
        return 2
    if args.requests is not None and args.requests < 1:
        print("--requests must be at least 1", file=sys.stderr)
        return 2
    report = Report()
    tool = subprocess.run(
        [valgrind, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    report.preamble.extend(
        [
            f"Run: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, "
            f"{'--quick' if args.quick else 'default'} mode, "
            f"`python -m benchmarks.instructions`, {tool} (callgrind).",
            "",
            f"Machine: {machine()}.",
            "",
            f"Versions: {versions()}.",
            "",
            "Each count: (Ir(warm-up + n requests) - Ir(warm-up)) / n from two "
            "runs of one child process under callgrind (PYTHONHASHSEED=0), the "
            "same call(method, url, body) harness and contestants as "
            "`python -m benchmarks`.  The A/A row is the method's own noise.",
        ]
    )
    report.print_preamble()
    with BenchServer() as server:
        plan: list[tuple[str, str, list[Row], int, str]] = []
        for scenario in args.only or SCENARIOS:
            rows = [r for r in _rows(scenario) if not (args.quick and r.peer)]
            n = args.requests or (
                100 if args.quick else 300 if scenario == "loopback" else 1000
            )
            url = f"{server.url}/fast" if scenario == "loopback" else MOCK_URL
            for method in ("GET", "POST"):
                plan.append((scenario, method, rows, n, url))
        jobs = [
            Job(scenario, row.name, method, count, url)
            for scenario, method, rows, n, url in plan
            for row in rows
            for count in (0, n)
        ]
        print(f"{len(jobs)} callgrind runs, {os.cpu_count()} at a time ...", flush=True)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            counts = dict(
                zip(
                    jobs,
                    pool.map(lambda job: _instructions(valgrind, job), jobs),
                    strict=True,
                )
            )
    for scenario, method, rows, n, url in plan:
        per_request = {
            row.name: (
                counts[Job(scenario, row.name, method, n, url)]
                - counts[Job(scenario, row.name, method, 0, url)]
            )
            / n
            for row in rows
        }
        table = _table(scenario, method, rows, per_request)
        table.notes.append(
            f"(Ir({WARM_UP} + {n} requests) - Ir({WARM_UP})) / {n}, "
            "valgrind --tool=callgrind, PYTHONHASHSEED=0"
        )
        report.emit(table)
    if args.markdown:
        report.write_markdown(args.markdown, "Instruction counts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
