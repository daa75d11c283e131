"""``python -m benchmarks.throttle``: what an outage costs the server, with
and without the AdaptiveThrottle, side by side with the budget alone, no
retries and a peer.

Open-loop load (calls start on a fixed schedule, 200 a second, whatever the
earlier ones are doing) through one client against the loopback server's
``/service`` route, which is up, then down (every request 503) for the
outage, then up again.  The server times every request it receives.  Never
asserts: every number is printed beside its target.

    python -m benchmarks.throttle [--quick] [--only outage|transient]
                                  [--markdown FILE] [--plot FILE]
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

import reliable_client

from .contestants import CONFIG, RC_POLICY, Caller, _plain, _tenacity, quiet_loggers
from .report import (
    Report,
    Table,
    command_line,
    machine,
    verdict,
    verdict_at_least,
    versions,
)
from .servers import BenchServer

RATE = 200.0
TARGET_OUTAGE = 0.25  # server requests per call, after the outage's first 2 s
TARGET_RECOVERY = 0.90  # success of the calls started 1-2 s after recovery
TARGET_REFUSED = 0.005  # calls refused locally under 20% transient 503s
TARGET_SUCCESS = 0.99


@dataclass(frozen=True)
class Phases:
    """Seconds of the open-loop run: healthy, outage, recovered."""

    healthy: float
    outage: float
    recovered: float

    @property
    def total(self) -> float:
        return self.healthy + self.outage + self.recovered


# A window's worth of healthy traffic first: the throttle's history is full of
# accepts when the outage begins, as in production.
FULL = Phases(10.0, 10.0, 5.0)
QUICK = Phases(3.0, 4.0, 3.0)
SMOKE = Phases(1.0, 2.5, 2.0)  # CI: that it runs, not what it measures


@dataclass
class Run:
    name: str
    starts: list[float]  # seconds since the run began, per call
    endings: list[str]  # "ok", "throttled", "failed"
    latencies: list[float]  # seconds per call
    arrivals: list[float]  # seconds since the run began, per server request


def _rc(
    throttle: bool,
    attempts: int = CONFIG.attempts,
    ratio: float | None = None,
    timeout: float = 5.0,
) -> Callable[[], Caller]:
    def make() -> Caller:
        client = reliable_client.Client(
            retry=RC_POLICY.replace(max_attempts=attempts),
            throttle=reliable_client.AdaptiveThrottle() if throttle else None,
            budget=None if ratio is None else reliable_client.RetryBudget(ratio=ratio),
            timeout=timeout,
        )

        def call(method: str, url: str, body: object) -> int:
            return client.request(method, url).status_code

        return Caller(call, client.close, client)

    return make


OUTAGE_CONTESTANTS: tuple[tuple[str, Callable[[], Caller]], ...] = (
    ("httpx, no retries", lambda: _plain(None)),
    ("tenacity (3 attempts)", lambda: _tenacity(with_key=False)(None)),
    ("reliable_client, budget alone", _rc(throttle=False)),
    ("reliable_client, budget + throttle", _rc(throttle=True)),
)


def open_loop(
    server: BenchServer,
    caller: Caller,
    seconds: float,
    schedule: Callable[[float], None] | None = None,
    mode: str = "up",
) -> Run:
    """Start a call every 1 / RATE s for ``seconds``, the server's
    ``/service`` in ``mode``; ``schedule(t)`` is called from a timer thread
    to change the mode as time passes."""
    server.reset()
    server.service = mode
    starts: list[float] = []
    endings: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    begin = time.monotonic() + 0.2
    url = f"{server.url}/service"
    stop = threading.Event()

    def one(at: float) -> None:
        delay = begin + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        try:
            status = caller.call("GET", url, None)
            ended = "ok" if status == 200 else "failed"
        except reliable_client.ThrottledError:
            ended = "throttled"
        except httpx.HTTPError:
            ended = "failed"
        elapsed = time.perf_counter() - t0
        with lock:
            starts.append(at)
            endings.append(ended)
            latencies.append(elapsed)

    def clock() -> None:
        while not stop.wait(0.01):
            if schedule is not None:
                schedule(time.monotonic() - begin)

    timer = threading.Thread(target=clock, daemon=True)
    timer.start()
    try:
        with ThreadPoolExecutor(64) as pool:
            for index in range(int(seconds * RATE)):
                pool.submit(one, index / RATE)
    finally:
        stop.set()
        timer.join()
    arrivals = [t - begin for t in server.arrivals]
    order = sorted(range(len(starts)), key=starts.__getitem__)
    return Run(
        "",
        [starts[i] for i in order],
        [endings[i] for i in order],
        [latencies[i] for i in order],
        arrivals,
    )


def _between(values: Sequence[float], low: float, high: float) -> int:
    return sum(1 for v in values if low <= v < high)


def outage(phases: Phases, server: BenchServer, report: Report) -> list[Run]:
    table = Table(
        f"(T1) A full {phases.outage:g} s outage (every request 503) at "
        f"{RATE:g} calls/s, and its recovery",
        [
            "contestant",
            "server req./call (outage after 2 s)",
            "target",
            "verdict",
            "p50 ms (outage)",
            "success 1-2 s after",
            "target",
            "verdict",
        ],
    )
    down_at, up_at = phases.healthy, phases.healthy + phases.outage

    def schedule(t: float) -> None:
        server.service = "down" if down_at <= t < up_at else "up"

    runs = []
    for name, make in OUTAGE_CONTESTANTS:
        caller = make()
        try:
            run = open_loop(server, caller, phases.total, schedule)
        finally:
            caller.close()
        run.name = name
        runs.append(run)
        calls = _between(run.starts, down_at + 2.0, up_at)
        received = _between(run.arrivals, down_at + 2.0, up_at)
        ratio = received / calls if calls else float("nan")
        during = [
            lat
            for at, lat in zip(run.starts, run.latencies, strict=True)
            if down_at + 2 <= at < up_at
        ]
        p50 = statistics.median(during) * 1e3 if during else float("nan")
        after = [
            ended
            for at, ended in zip(run.starts, run.endings, strict=True)
            if up_at + 1.0 <= at < up_at + 2.0
        ]
        success = after.count("ok") / len(after) if after else float("nan")
        ours = name.endswith("throttle")
        table.add(
            name,
            f"{ratio:.3f}",
            f"<= {TARGET_OUTAGE}" if ours else "",
            verdict(ratio, TARGET_OUTAGE) if ours else "",
            f"{p50:.2f}",
            f"{success:.1%}",
            f">= {TARGET_RECOVERY:.0%}" if ours else "",
            verdict_at_least(success, TARGET_RECOVERY) if ours else "",
        )
    table.notes.append(
        f"Open loop: a call starts every {1e3 / RATE:g} ms whatever the others do "
        f"(64 threads, one client); {phases.healthy:g} s up, {phases.outage:g} s "
        f"down, {phases.recovered:g} s up.  Server requests per call counts what "
        "the server received from 2 s into the outage to its end, over the calls "
        "started then (no retries: 1.0; every retry adds)."
    )
    table.notes.append(
        "The throttle: AdaptiveThrottle() defaults (k=2, window 10 s, 1 probe a "
        "second).  The budget: the default RetryBudget() in both reliable_client "
        f"rows.  Retry policy: {CONFIG.describe()}."
    )
    report.emit(table)
    return runs


def transient(phases: Phases, server: BenchServer, report: Report) -> None:
    seconds = phases.total
    table = Table(
        f"(T2) 20% independent transient 503s at {RATE:g} calls/s, 4 attempts",
        [
            "contestant",
            "calls",
            "refused locally",
            "target",
            "success",
            "target",
            "verdict",
        ],
    )
    for name, throttle, ratio in (
        ("reliable_client, budget alone", False, None),
        ("reliable_client, budget + throttle", True, None),
        ("reliable_client, budget ratio 0.3 alone", False, 0.3),
        ("reliable_client, budget ratio 0.3 + throttle", True, 0.3),
    ):
        caller = _rc(throttle, attempts=4, ratio=ratio)()
        try:
            run = open_loop(server, caller, seconds, mode="flaky")
        finally:
            caller.close()
        calls = len(run.endings)
        # Every refusal, a retry's included (it ends its call on its 503).
        refused = caller.client.stats.throttled / calls
        success = run.endings.count("ok") / calls
        met = refused <= TARGET_REFUSED and success >= TARGET_SUCCESS
        table.add(
            name,
            calls,
            f"{refused:.2%}",
            f"<= {TARGET_REFUSED:.1%}" if throttle else "",
            f"{success:.2%}",
            f">= {TARGET_SUCCESS:.0%}",
            ("met" if met else "MISSED")
            if throttle
            else verdict_at_least(success, TARGET_SUCCESS),
        )
    table.notes.append(
        f"/service answers 503 to {server.fault_rate:.0%} of requests (a seeded "
        "generator); with 4 attempts at most 1 - 0.2^4 = 99.84% of calls can "
        "succeed.  The throttle refuses nothing while the server accepts at "
        "least 1 / k of what is asked."
    )
    table.notes.append(
        "Refused locally: every request the throttle refused, over the calls "
        "(a refused retry ends its call on its 503 and counts here too)."
    )
    table.notes.append(
        "The budget, not the throttle, caps the first two rows: 4 attempts at 20% "
        "faults need 0.2 + 0.04 + 0.008 = 0.248 retries a call, the default "
        "RetryBudget() allows 0.2 a call plus 10 a second, so at 200 calls a "
        "second it refuses about one retry in a hundred once its reserve is "
        "spent.  The last two rows give it room (ratio=0.3): with or without "
        "the throttle, the same success."
    )
    report.emit(table)


def brownout(phases: Phases, server: BenchServer, report: Report) -> None:
    """(T3) A partial overload: the server serves ``capacity`` a second."""
    capacity = 20
    table = Table(
        f"(T3) A brownout: the server serves {capacity} requests a second of "
        f"{RATE:g} calls a second (the rest get 503)",
        [
            "contestant",
            "server requests/s (after 2 s)",
            "calls served/s",
            "target",
            "verdict",
        ],
    )
    seconds = phases.outage + 2.0
    for name, throttle in (
        ("reliable_client, budget alone", False),
        ("reliable_client, budget + throttle", True),
    ):
        caller = _rc(throttle)()
        try:
            server.capacity = capacity
            run = open_loop(server, caller, seconds, mode="brownout")
        finally:
            caller.close()
        span = seconds - 2.0
        received = _between(run.arrivals, 2.0, seconds) / span
        served = (
            sum(
                1
                for at, ended in zip(run.starts, run.endings, strict=True)
                if at >= 2.0 and ended == "ok"
            )
            / span
        )
        bound = 2.0 * capacity * 1.5 + 4  # k x accepts, slack, probes
        table.add(
            name,
            f"{received:.0f}",
            f"{served:.0f}",
            f"<= {bound:.0f}" if throttle else "",
            verdict(received, bound) if throttle else "",
        )
    table.notes.append(
        "SRE's throttle with k=2 keeps sending about twice what the server "
        "accepts; without it every call (and the budget's retries) reaches the "
        "server.  The target is that bound with 50% slack (the short horizon "
        "and the probes add a little)."
    )
    report.emit(table)


def hang(phases: Phases, server: BenchServer, report: Report) -> None:
    """(T4) An outage in which the server answers nothing: only timeouts."""
    table = Table(
        f"(T4) A hanging server: {phases.outage + 3:g} s with no answer at all, "
        "1 s timeouts, no retries",
        ["contestant", "server req./call (after 3 s)", "target", "verdict"],
    )
    seconds = phases.outage + 3.0
    for name, throttle in (
        ("reliable_client, no retries, no throttle", False),
        ("reliable_client, no retries, throttle", True),
    ):
        caller = _rc(throttle, attempts=1, timeout=1.0)()
        try:
            run = open_loop(server, caller, seconds, mode="hang")
        finally:
            caller.close()
        calls = _between(run.starts, 3.0, seconds)
        received = _between(run.arrivals, 3.0, seconds)
        ratio = received / calls if calls else float("nan")
        table.add(
            name,
            f"{ratio:.3f}",
            f"<= {TARGET_OUTAGE}" if throttle else "",
            verdict(ratio, TARGET_OUTAGE) if throttle else "",
        )
    table.notes.append(
        "A request still out is not an accept: once the first timeout has "
        "fired, the requests still waiting count against the server before "
        "their own timeouts do.  (64 threads: "
        "the open loop's rate falls while they wait on their timeouts.)"
    )
    report.emit(table)


def plot(runs: Sequence[Run], phases: Phases, path: str) -> None:
    """Requests per second at the server through the outage, per contestant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    seconds = int(phases.total) + 1
    for run in runs:
        if "tenacity" in run.name:
            continue
        per_second = [0] * seconds
        for at in run.arrivals:
            if 0 <= at < seconds:
                per_second[int(at)] += 1
        ax.plot(range(seconds), per_second, label=run.name, drawstyle="steps-post")
    ax.axvspan(
        phases.healthy, phases.healthy + phases.outage, color="0.9", label="outage"
    )
    ax.axhline(RATE, color="0.5", linestyle=":", linewidth=1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests per second at the server")
    ax.set_title(f"{RATE:g} calls a second through an outage and its recovery")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


MEASUREMENTS = ("outage", "transient", "brownout", "hang")


def main(argv: list[str] | None = None) -> int:
    parser = command_line(
        "python -m benchmarks.throttle",
        "The AdaptiveThrottle in an outage and under transient faults, beside "
        "the budget alone, no retries and a peer.  Never asserts.",
        "shorter phases (3 s up, 4 s down, 3 s up; about a minute)",
        list(MEASUREMENTS),
        "measurement",
    )
    parser.add_argument("--plot", metavar="FILE", help="requests per second, as a PNG")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny phases, for CI: that it runs"
    )
    args = parser.parse_args(argv)
    phases = SMOKE if args.smoke else QUICK if args.quick else FULL
    quiet_loggers()
    sys.setswitchinterval(0.0005)
    report = Report()
    started = time.perf_counter()
    report.preamble.extend(
        [
            f"Run: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, "
            f"{'--smoke' if args.smoke else '--quick' if args.quick else 'full'}, "
            "`python -m benchmarks.throttle`, "
            "all traffic on 127.0.0.1.",
            "",
            f"Machine: {machine()}.",
            "",
            f"Versions: {versions()}.",
        ]
    )
    report.print_preamble()
    names = args.only or list(MEASUREMENTS)
    with BenchServer() as server:
        if "outage" in names:
            runs = outage(phases, server, report)
            if args.plot:
                plot(runs, phases, args.plot)
        if "transient" in names:
            transient(phases, server, report)
        if "brownout" in names:
            brownout(phases, server, report)
        if "hang" in names:
            hang(phases, server, report)
    total = time.perf_counter() - started
    print(f"Total: {total:.1f} s")
    report.preamble.extend(["", f"Total runtime: {total:.0f} s."])
    if args.markdown:
        report.write_markdown(args.markdown, "AdaptiveThrottle results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
