"""The seven measurements of the benchmark issue.

Timings are taken in interleaved rounds: in round ``r`` the contestants run in
an order rotated by ``r`` (A B C, B C A, C A B, ...), each for one batch of
requests, and each contestant's time is divided by plain httpx's time *in the
same round*.  The reported ratio is the median of those per-round ratios, so
a slow moment of the machine hits both sides of a ratio.  A second, identical
plain httpx client (``httpx (A/A)``) is timed like any contestant: its ratio
would be 1.00 on a silent machine, and how far it strays is the noise.  A
difference smaller than that noise is not a result.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import reliable_client

from .contestants import (
    ASYNC_CONTESTANTS,
    CONFIG,
    CONTESTANTS,
    RC_FOUR_ATTEMPTS,
    AsyncCaller,
    Caller,
)
from .report import Report, Table, verdict, verdict_at_least
from .servers import BenchServer

__all__ = ["MEASUREMENTS", "Options"]

JSON_BODY: dict[str, Any] = {"amount": 4200, "currency": "EUR", "note": "benchmark"}
FLOOR = "httpx"
GAUGE = "httpx (A/A)"

# Targets from the issue.
TARGET_GET = 1.05
TARGET_POST = 1.10
TARGET_CPU = 1.03
TARGET_SUCCESS = 0.995
TARGET_TRANSIENT_AMP = 1.25
TARGET_FAILED = 0.005
TARGET_MEMORY = 1024 * 1024


@dataclass(frozen=True)
class Options:
    quick: bool
    # (1) and (6): rounds x requests per batch
    mock_rounds: int
    mock_batch: int
    # (2)
    loop_rounds: int
    loop_batch: int
    # (3)
    outage_calls: tuple[int, ...]
    outage_peer_calls: int
    # (4) and (5)
    transient_calls: int
    create_calls: int
    # (6)
    async_tasks: int
    async_calls: int
    async_transient_calls: int
    # (7)
    memory_requests: int

    @classmethod
    def make(cls, quick: bool) -> Options:
        if quick:
            return cls(
                quick=True,
                mock_rounds=5,
                mock_batch=300,
                loop_rounds=5,
                loop_batch=100,
                outage_calls=(500, 2000),
                outage_peer_calls=50,
                transient_calls=300,
                create_calls=300,
                async_tasks=64,
                async_calls=320,
                async_transient_calls=200,
                memory_requests=20_000,
            )
        return cls(
            quick=False,
            mock_rounds=7,
            mock_batch=1200,
            loop_rounds=6,
            loop_batch=300,
            outage_calls=(500, 5000),
            outage_peer_calls=300,
            transient_calls=1000,
            create_calls=1000,
            async_tasks=64,
            async_calls=960,
            async_transient_calls=640,
            memory_requests=200_000,
        )


# -- helpers ---------------------------------------------------------------------


def _fmt_ratio(x: float) -> str:
    return f"{x:.3f}x"


def _iqr(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def _noise(gauge_ratios: Sequence[float]) -> float:
    """How far the A/A gauge strays: its median's distance from 1, or half its
    interquartile range, whichever is larger."""
    lo, hi = _iqr(gauge_ratios)
    return max(abs(statistics.median(gauge_ratios) - 1.0), (hi - lo) / 2)


def _body(method: str) -> Any:
    return JSON_BODY if method == "POST" else None


def _const(body: Any) -> Callable[[int], Any]:
    def body_of(_: int) -> Any:
        return body

    return body_of


def mock_handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, content=b'{"ok":true}', headers={"Content-Type": "application/json"}
    )


@dataclass
class Timings:
    wall: dict[str, list[float]]  # seconds per request, per round
    cpu: dict[str, list[float]]

    def ratios(self, which: str, name: str) -> list[float]:
        series = self.wall if which == "wall" else self.cpu
        return [
            a / b for a, b in zip(series[name], series[FLOOR], strict=True) if b > 0
        ]


def _interleaved(
    runners: dict[str, Callable[[int], tuple[float, float]]],
    rounds: int,
    batch: int,
) -> Timings:
    """Run every runner once per round, in an order rotated every round."""
    names = list(runners)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # warm-up: imports, pools, caches
        runners[name](max(20, batch // 10))
    for r in range(rounds):
        k = r % len(names)
        gc.collect()
        for name in names[k:] + names[:k]:
            w, c = runners[name](batch)
            wall[name].append(w)
            cpu[name].append(c)
    return Timings(wall, cpu)


def _sync_runner(
    caller: Caller, method: str, url: str
) -> Callable[[int], tuple[float, float]]:
    call = caller.call
    body = _body(method)

    def run(n: int) -> tuple[float, float]:
        bad = 0
        w0 = time.perf_counter()
        c0 = time.thread_time()
        for _ in range(n):
            if call(method, url, body) != 200:
                bad += 1
        c1 = time.thread_time()
        w1 = time.perf_counter()
        if bad:
            raise RuntimeError(f"{bad} of {n} happy-path calls did not return 200")
        return (w1 - w0) / n, (c1 - c0) / n

    return run


def _timing_table(
    title: str,
    timings: Timings,
    which: str,
    method: str,
    target: float | None,
    extra_cpu: bool = False,
) -> Table:
    headers = ["contestant", "µs/request", "ratio to httpx", "IQR of ratio"]
    if extra_cpu:
        headers = [
            "contestant",
            "wall µs/req",
            "wall ratio",
            "CPU µs/req",
            "CPU ratio",
            "CPU ratio IQR",
        ]
    headers += ["target", "verdict"]
    table = Table(title, headers)
    noise = _noise(timings.ratios(which, GAUGE))
    rows_ours = {c.name for c in CONTESTANTS if c.ours} | {
        c.name for c in ASYNC_CONTESTANTS if c.ours
    }
    for name in timings.wall:
        ratio_series = timings.ratios(which, name)
        ratio = statistics.median(ratio_series)
        lo, hi = _iqr(ratio_series)
        goal = target if name in rows_ours and target is not None else None
        tgt = f"<= {goal:.2f}x" if goal is not None else ""
        ver = verdict(ratio, goal, noise) if goal is not None else ""
        if extra_cpu:
            wall_us = statistics.median(timings.wall[name]) * 1e6
            cpu_us = statistics.median(timings.cpu[name]) * 1e6
            wall_ratio = statistics.median(timings.ratios("wall", name))
            table.add(
                name,
                f"{wall_us:.1f}",
                _fmt_ratio(wall_ratio),
                f"{cpu_us:.1f}",
                _fmt_ratio(ratio),
                f"{lo:.3f}-{hi:.3f}",
                tgt,
                ver,
            )
        else:
            us = statistics.median(timings.wall[name]) * 1e6
            table.add(
                name, f"{us:.1f}", _fmt_ratio(ratio), f"{lo:.3f}-{hi:.3f}", tgt, ver
            )
    table.notes.append(
        f"{method}; A/A noise gauge: +/-{noise:.3f} (a difference smaller than "
        "this is not a result)"
    )
    table.notes.append(
        "Steadier than any timing: instructions per request, counted by "
        "`python -m benchmarks.instructions` (benchmarks/INSTRUCTIONS.md)"
    )
    return table


# -- (1) happy path over MockTransport ----------------------------------------------


def happy_mock(opts: Options, server: BenchServer, report: Report) -> None:
    for method, target in (("GET", TARGET_GET), ("POST", TARGET_POST)):
        callers = {
            c.name: c.make(httpx.MockTransport(mock_handler))
            for c in CONTESTANTS
            if c.mockable
        }
        try:
            url = "http://bench.invalid/items"
            runners = {n: _sync_runner(c, method, url) for n, c in callers.items()}
            timings = _interleaved(runners, opts.mock_rounds, opts.mock_batch)
        finally:
            for caller in callers.values():
                caller.close()
        table = _timing_table(
            f"(1) Happy path, no network (httpx.MockTransport): {method}",
            timings,
            "wall",
            method,
            target,
        )
        table.notes.append(
            f"{opts.mock_rounds} interleaved rounds x {opts.mock_batch} requests; "
            "POST sends a JSON body; µs/request is the median over rounds"
        )
        table.notes.append(
            "Not in this table: httpx HTTPTransport(retries=3) (its retries live "
            "inside the connection pool and cannot wrap a MockTransport) and "
            "requests+urllib3 (urllib3's Retry lives in the connection pool too; "
            "a stub adapter would bypass it).  Both are in (2)."
        )
        _note_memory_probe(table)
        report.emit(table)


# -- (2) happy path over loopback -------------------------------------------------


def happy_loopback(opts: Options, server: BenchServer, report: Report) -> None:
    for method in ("GET", "POST"):
        callers = {c.name: c.make(None) for c in CONTESTANTS}
        try:
            url = f"{server.url}/fast"
            runners = {n: _sync_runner(c, method, url) for n, c in callers.items()}
            timings = _interleaved(runners, opts.loop_rounds, opts.loop_batch)
        finally:
            for caller in callers.values():
                caller.close()
        table = _timing_table(
            f"(2) Happy path over loopback keep-alive: {method}",
            timings,
            "cpu",
            method,
            TARGET_CPU,
            extra_cpu=True,
        )
        table.notes.append(
            f"{opts.loop_rounds} interleaved rounds x {opts.loop_batch} requests to a "
            "threaded keep-alive server in this process; CPU is the calling "
            "thread's own (time.thread_time), so the server's threads are not "
            "counted; wall includes them and the GIL hand-offs.  Target applies "
            "to CPU."
        )
        _note_memory_probe(table)
        report.emit(table)


# -- (3) amplification under a full outage -------------------------------------------


def _budget_bound(calls: int, duration: float) -> float:
    budget = reliable_client.RetryBudget()
    windows = max(1, math.ceil(duration / budget.ttl))
    return 1 + budget.ratio + budget.reserve * windows / calls


def _run_calls(
    caller: Caller, method: str, url: str, calls: int, body_of: Callable[[int], Any]
) -> tuple[int, float, list[bool]]:
    """Make ``calls`` logical calls; returns (failed, seconds, per-call ok)."""
    failed = 0
    oks: list[bool] = []
    t0 = time.perf_counter()
    for i in range(calls):
        try:
            status = caller.call(method, url, body_of(i))
            ok = 200 <= status < 300
        except httpx.HTTPError:
            ok = False
        except OSError:  # requests' ConnectionError is an OSError
            ok = False
        except Exception as exc:
            if type(exc).__module__.startswith(("requests", "urllib3")):
                ok = False
            else:
                raise
        oks.append(ok)
        if not ok:
            failed += 1
    return failed, time.perf_counter() - t0, oks


def _refused(caller: Caller) -> str:
    stats = getattr(caller.client, "stats", None)
    return str(stats.refused_by_budget) if stats is not None else ""


def outage(opts: Options, server: BenchServer, report: Report) -> None:
    table = Table(
        "(3) Amplification under a full outage (always 503)",
        [
            "contestant",
            "method",
            "calls",
            "server requests",
            "amplification",
            "refused by budget",
            "seconds",
            "target",
            "verdict",
        ],
    )
    url = f"{server.url}/outage"
    for contestant in CONTESTANTS:
        if contestant.name == GAUGE:
            continue
        counts = opts.outage_calls if contestant.budgeted else (opts.outage_peer_calls,)
        if opts.quick and contestant.name == "RetryTransport":
            counts = opts.outage_calls[:1]
        for method in ("GET", "POST"):
            for calls in counts:
                caller = contestant.make(None)
                server.reset()
                try:
                    _, seconds, _ = _run_calls(
                        caller, method, url, calls, _const(_body(method))
                    )
                    refused = _refused(caller)
                finally:
                    caller.close()
                sent = server.snapshot().requests["/outage"]
                amp = sent / calls
                tgt = ver = ""
                if contestant.ours:
                    bound = _budget_bound(calls, seconds)
                    tgt = f"<= {bound:.3f}"
                    ver = verdict(amp, bound)
                table.add(
                    contestant.name,
                    method,
                    calls,
                    sent,
                    f"{amp:.3f}",
                    refused,
                    f"{seconds:.2f}",
                    tgt,
                    ver,
                )
    budget = reliable_client.RetryBudget()
    table.notes.append(
        f"Target for reliable_client rows: 1 + ratio + reserve x windows / calls "
        f"with the default RetryBudget (ratio {budget.ratio}, reserve "
        f"{budget.min_per_second:g}/s x {budget.ttl:g} s = {budget.reserve:g} retries, "
        f"replenished every ttl: windows = ceil(seconds / {budget.ttl:g})).  A fresh "
        "client (and budget) per row."
    )
    peer_calls = opts.outage_peer_calls
    table.notes.append(
        f"Peers have no budget: each call makes the same number of attempts whatever "
        f"the count, so they are measured at {peer_calls} calls only (the 5,000-call "
        "rows are for budgeted contestants)."
        + ("  --quick: RetryTransport at 500 only." if opts.quick else "")
    )
    table.notes.append(
        "The POST rows: reliable_client keys every POST, so a keyed POST is retried "
        "(and budgeted); httpx-retries and urllib3 do not retry POST; tenacity, "
        "stamina and retryhttp retry it blindly."
    )
    report.emit(table)


# -- (4) transient faults -----------------------------------------------------------


def _transient_verdict(
    success: float, amp: float, attempts: int, rate: float
) -> tuple[str, str]:
    """Target (4) and its verdict, which says so when ``attempts`` cannot
    reach it at this fault ``rate``."""
    ok = verdict_at_least(success, TARGET_SUCCESS) == "met"
    ok_amp = verdict(amp, TARGET_TRANSIENT_AMP) == "met"
    ceiling = 1 - rate**attempts
    ver = "met" if ok and ok_amp else "MISSED"
    if not ok and ceiling < TARGET_SUCCESS:
        ver = f"MISSED: {attempts} attempts cap it at {ceiling:.2%}"
    return f">= {TARGET_SUCCESS:.1%} at <= {TARGET_TRANSIENT_AMP}", ver


def transient(opts: Options, server: BenchServer, report: Report) -> None:
    table = Table(
        "(4) Transient faults (seeded 20% 503s)",
        [
            "contestant",
            "method",
            "calls",
            "success",
            "amplification",
            "refused by budget",
            "target",
            "verdict",
        ],
    )
    url = f"{server.url}/flaky"
    calls = opts.transient_calls
    rate = server.fault_rate
    for contestant in (*CONTESTANTS, RC_FOUR_ATTEMPTS):
        if contestant.name == GAUGE:
            continue
        attempts = 4 if contestant is RC_FOUR_ATTEMPTS else CONFIG.attempts
        for method in ("GET", "POST"):
            caller = contestant.make(None)
            server.reset()
            try:
                failed, _, _ = _run_calls(
                    caller, method, url, calls, _const(_body(method))
                )
                refused = _refused(caller)
            finally:
                caller.close()
            sent = server.snapshot().requests["/flaky"]
            success = 1 - failed / calls
            amp = sent / calls
            tgt, ver = (
                _transient_verdict(success, amp, attempts, rate)
                if contestant.ours
                else ("", "")
            )
            table.add(
                contestant.name,
                method,
                calls,
                f"{success:.2%}",
                f"{amp:.3f}",
                refused,
                tgt,
                ver,
            )
    best = 1 - rate**CONFIG.attempts
    table.notes.append(
        f"The server draws 503 for {rate:.0%} of requests from a generator re-seeded "
        f"for every row, so every contestant meets the same fault sequence.  With "
        f"independent faults, {CONFIG.attempts} attempts can at best reach "
        f"{best:.2%} success (1 - {rate}^{CONFIG.attempts}) at amplification "
        f"{sum(rate**k for k in range(CONFIG.attempts)):.2f}; the {TARGET_SUCCESS:.1%}"
        f" target needs {CONFIG.attempts + 1} attempts.  With {calls} calls one "
        f"failure is {1 / calls:.2%}."
    )
    table.notes.append(
        f"The last rows use 4 attempts (the shared configuration otherwise): "
        f"at best {1 - rate**4:.2%} success at amplification "
        f"{sum(rate**k for k in range(4)):.3f}, the target's own arithmetic; the "
        "budget is the same default RetryBudget()."
    )
    report.emit(table)


# -- (5) duplicate effects ------------------------------------------------------------


def duplicates(opts: Options, server: BenchServer, report: Report) -> None:
    table = Table(
        "(5) Duplicate effects: create endpoint honouring Idempotency-Key, "
        "20% of connections dropped after processing",
        [
            "contestant",
            "calls",
            "orders/call",
            "duplicates",
            "caller saw fail",
            "failed but created",
            "server requests",
            "target",
            "verdict",
        ],
    )
    url = f"{server.url}/orders"
    calls = opts.create_calls
    for contestant in CONTESTANTS:
        if contestant.name == GAUGE:
            continue
        caller = contestant.make(None)
        server.reset()
        try:
            failed, _, oks = _run_calls(
                caller,
                "POST",
                url,
                calls,
                lambda i: {"call": i, "amount": 4200},
            )
        finally:
            caller.close()
        snap = server.snapshot()
        dups = sum(n - 1 for n in snap.orders_by_call.values() if n > 1)
        ghost = sum(
            1 for i, ok in enumerate(oks) if not ok and snap.orders_by_call[str(i)]
        )
        per_call = snap.orders / calls
        tgt = ver = ""
        if contestant.ours:
            tgt = f"1.000 and <= {TARGET_FAILED:.1%}"
            ok_orders = snap.orders == calls and dups == 0
            ok_failed = failed / calls <= TARGET_FAILED
            ver = "met" if ok_orders and ok_failed else "MISSED"
        table.add(
            contestant.name,
            calls,
            f"{per_call:.3f}",
            dups,
            f"{failed / calls:.2%}",
            ghost,
            sum(snap.requests.values()),
            tgt,
            ver,
        )
    rate = server.drop_rate
    table.notes.append(
        f"The server claims the key and makes the order atomically, then drops "
        f"{rate:.0%} of connections instead of answering (half FIN, half RST with "
        "SO_LINGER 0), replays included.  'failed but created': the caller saw a "
        "failure although the order exists (a user who clicks again makes a "
        "duplicate).  duplicates = orders beyond the first for one logical call."
    )
    table.notes.append(
        f"With independent drops, {CONFIG.attempts} attempts leave at best "
        f"{rate**CONFIG.attempts:.2%} of calls failed ({rate}^{CONFIG.attempts}); with "
        f"{calls} calls one failure is {1 / calls:.2%}."
    )
    report.emit(table)


# -- (6) async ---------------------------------------------------------------------


async def _async_happy(opts: Options, method: str) -> tuple[Timings, int]:
    limits = httpx.Limits(
        max_connections=opts.async_tasks, max_keepalive_connections=opts.async_tasks
    )
    callers: dict[str, AsyncCaller] = {
        c.name: c.make(httpx.MockTransport(mock_handler), limits)
        for c in ASYNC_CONTESTANTS
    }
    url = "http://bench.invalid/items"
    body = _body(method)
    tasks = opts.async_tasks

    def runner(caller: AsyncCaller) -> Callable[[int], Any]:
        async def run(n: int) -> float:
            per_task = max(1, n // tasks)

            async def worker() -> int:
                bad = 0
                for _ in range(per_task):
                    if await caller.call(method, url, body) != 200:
                        bad += 1
                return bad

            t0 = time.perf_counter()
            bad = sum(await asyncio.gather(*(worker() for _ in range(tasks))))
            elapsed = time.perf_counter() - t0
            if bad:
                raise RuntimeError(f"{bad} async happy-path calls did not return 200")
            return elapsed / (per_task * tasks)

        return run

    names = list(callers)
    runners = {n: runner(c) for n, c in callers.items()}
    wall: dict[str, list[float]] = {n: [] for n in names}
    try:
        for name in names:
            await runners[name](tasks * 4)
        for r in range(opts.mock_rounds):
            k = r % len(names)
            gc.collect()
            for name in names[k:] + names[:k]:
                wall[name].append(await runners[name](opts.async_calls))
    finally:
        for caller in callers.values():
            await caller.close()
    return Timings(wall, wall), opts.async_calls


async def _async_transient(
    opts: Options, server: BenchServer, table: Table, method: str
) -> None:
    limits = httpx.Limits(
        max_connections=opts.async_tasks, max_keepalive_connections=opts.async_tasks
    )
    url = f"{server.url}/flaky"
    calls = opts.async_transient_calls
    tasks = opts.async_tasks
    for contestant in ASYNC_CONTESTANTS:
        if contestant.name == GAUGE:
            continue
        caller = contestant.make(None, limits)
        server.reset()
        queue = list(range(calls))
        failed = 0

        async def worker(caller: AsyncCaller = caller, queue: list[int] = queue) -> int:
            bad = 0
            while queue:
                queue.pop()
                try:
                    status = await caller.call(method, url, _body(method))
                    if not 200 <= status < 300:
                        bad += 1
                except httpx.HTTPError:
                    bad += 1
            return bad

        try:
            failed = sum(await asyncio.gather(*(worker() for _ in range(tasks))))
            refused = _refused_async(caller)
        finally:
            await caller.close()
        sent = server.snapshot().requests["/flaky"]
        success = 1 - failed / calls
        amp = sent / calls
        tgt, ver = (
            _transient_verdict(success, amp, CONFIG.attempts, server.fault_rate)
            if contestant.ours
            else ("", "")
        )
        table.add(
            contestant.name,
            method,
            calls,
            f"{success:.2%}",
            f"{amp:.3f}",
            refused,
            tgt,
            ver,
        )


def _refused_async(caller: AsyncCaller) -> str:
    stats = getattr(caller.client, "stats", None)
    return str(stats.refused_by_budget) if stats is not None else ""


def async_all(opts: Options, server: BenchServer, report: Report) -> None:
    for method, target in (("GET", TARGET_GET), ("POST", TARGET_POST)):
        timings, _ = asyncio.run(_async_happy(opts, method))
        table = _timing_table(
            f"(6a) Async happy path, no network, {opts.async_tasks} concurrent tasks: "
            f"{method}",
            timings,
            "wall",
            method,
            target,
        )
        table.notes.append(
            f"{opts.mock_rounds} interleaved rounds x {opts.async_calls} requests "
            f"shared by {opts.async_tasks} tasks on one event loop "
            "(httpx.MockTransport)"
        )
        _note_memory_probe(table)
        report.emit(table)
    table = Table(
        f"(6b) Async transient faults (seeded 20% 503s), {opts.async_tasks} "
        "concurrent tasks",
        [
            "contestant",
            "method",
            "calls",
            "success",
            "amplification",
            "refused by budget",
            "target",
            "verdict",
        ],
    )
    for method in ("GET", "POST"):
        asyncio.run(_async_transient(opts, server, table, method))
    table.notes.append(
        "Same server and fault rate as (4); with concurrent tasks the order in "
        "which requests meet the seeded faults varies between runs.  At 64 "
        "connections httpcore's pool scans every connection for every request "
        "(is_idle / has_expired), which makes these rows slow for every "
        "contestant alike."
    )
    report.emit(table)


# -- (7) memory --------------------------------------------------------------------


class MemoryProbe:
    """Measurement (7) in a child process (``benchmarks.memory_probe``), so
    that it runs on the second core beside the other measurements."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[str] | None = None
        self._requests = 0

    @property
    def running(self) -> bool:
        return self._child is not None

    def start(self, requests: int) -> None:
        if self._child is None:
            self._requests = requests
            self._child = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.memory_probe", str(requests)],
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parent.parent,
            )

    def result(self, requests: int) -> dict[str, Any]:
        self.start(requests)
        assert self._child is not None
        out, _ = self._child.communicate(timeout=1800)
        if self._child.returncode != 0:
            raise RuntimeError(
                f"benchmarks.memory_probe exited with {self._child.returncode}"
            )
        self._child = None
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


MEMORY_PROBE = MemoryProbe()


def _note_memory_probe(table: Table) -> None:
    if MEMORY_PROBE.running:
        table.notes.append(
            "Timed while the memory probe (7) ran on the other core, which slows "
            "every row and may not slow them alike."
        )


def memory(opts: Options, server: BenchServer, report: Report) -> None:
    m = MEMORY_PROBE.result(opts.memory_requests)
    n = m["requests"]
    traced0, traced1, rss0, rss1 = m["traced0"], m["traced1"], m["rss0"], m["rss1"]
    table = Table(
        f"(7) Memory over {n:,} requests on one reliable_client.Client",
        ["measure", "before", "after", "growth", "target", "verdict"],
    )
    table.add(
        "tracemalloc (traced)",
        f"{traced0 / 1024:.0f} KiB",
        f"{traced1 / 1024:.0f} KiB",
        f"{(traced1 - traced0) / 1024:+.1f} KiB",
        "< 1 MiB",
        "met" if traced1 - traced0 < TARGET_MEMORY else "MISSED",
    )
    table.add(
        "RSS",
        f"{rss0 / 1024:.0f} KiB",
        f"{rss1 / 1024:.0f} KiB",
        f"{(rss1 - rss0) / 1024:+.1f} KiB",
        "< 1 MiB",
        "met" if rss1 - rss0 < TARGET_MEMORY else "MISSED",
    )
    own0, own1 = m["tracemalloc_own0"], m["tracemalloc_own1"]
    table.add(
        "tracemalloc's own tables (traced run)",
        f"{own0 / 1024:.0f} KiB",
        f"{own1 / 1024:.0f} KiB",
        f"{(own1 - own0) / 1024:+.1f} KiB",
        "",
        "",
    )
    table.notes.append(
        f"Alternating GET and POST (JSON body, so every POST gets a key and a "
        f"resource id) over httpx.MockTransport on one client.  After a warm-up "
        f"(half as many requests, at most 60,000): RSS over {n:,} requests "
        f"without tracemalloc ({m['rss_seconds']:.1f} s; glibc's malloc_trim "
        f"before each reading), then traced memory over {n:,} more with "
        f"tracemalloc on throughout ({m['seconds']:.1f} s, peak "
        f"{m['peak'] / 1024:.0f} KiB; tracemalloc's own small allocations "
        f"fragment the C heap, which is why RSS is read without it); "
        f"gc.collect() before each reading.  In a child process of its own "
        f"(benchmarks.memory_probe), which runs beside (1) to (6).  "
        f"client.stats: {m['calls']:,} calls, {m['attempts']:,} attempts."
    )
    if traced1 - traced0 > 64 * 1024 and m["growth_sites"]:
        table.notes.append(
            "Largest growth (tracemalloc, by line): " + "; ".join(m["growth_sites"])
        )
    report.emit(table)


MEASUREMENTS: dict[str, Callable[[Options, BenchServer, Report], None]] = {
    # Timed measurements first, then those that count requests.  The memory
    # probe runs beside all of them, in a process of its own.
    "loopback": happy_loopback,
    "happy": happy_mock,
    "async": async_all,
    "outage": outage,
    "transient": transient,
    "duplicates": duplicates,
    "memory": memory,
}
