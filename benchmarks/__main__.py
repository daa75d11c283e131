"""``python -m benchmarks [--quick] [--only NAME] [--markdown FILE]``."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from .contestants import (
    ASYNC_CONTESTANTS,
    CONFIG,
    CONTESTANTS,
    RC_FOUR_ATTEMPTS,
    quiet_loggers,
)
from .measure import MEASUREMENTS, MEMORY_PROBE, Options
from .report import Report, Table, command_line, machine, versions
from .servers import BenchServer

SWITCH_INTERVAL = 0.0005


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = command_line(
        "python -m benchmarks",
        "reliable_client against plain httpx and peer retry libraries. "
        "Prints every measurement beside its target; never asserts.",
        "smaller runs (about 40 s), for smoke tests",
        list(MEASUREMENTS),
        "measurement",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    opts = Options.make(quick=args.quick)
    quiet_loggers()
    # The server shares this process: with CPython's default 5 ms switch
    # interval a busy event loop (64 tasks) keeps the server thread waiting for
    # the GIL up to 5 ms per hand-off.  A shorter interval lets it answer.
    sys.setswitchinterval(SWITCH_INTERVAL)
    report = Report()
    started = time.perf_counter()
    mode = "--quick" if opts.quick else "default (full)"
    report.preamble.extend(
        [
            f"Run: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, mode {mode}, "
            "one process (the memory probe in a child process of its own), all "
            "traffic on 127.0.0.1.",
            "",
            f"Machine: {machine()}.",
            "",
            f"Versions: {versions()}.",
            "",
            f"Shared retry configuration: {CONFIG.describe()}.",
            "",
            "The loopback server runs in a thread of this process (a selector "
            f"loop); sys.setswitchinterval({SWITCH_INTERVAL}) so that it gets the "
            "GIL promptly.",
        ]
    )
    report.print_preamble()
    lineup = Table("Contestants", ["contestant", "configuration"], align="ll")
    for c in (*CONTESTANTS, RC_FOUR_ATTEMPTS):
        lineup.add(c.name, c.config)
    for a in ASYNC_CONTESTANTS:
        lineup.add(f"{a.name} (async)", a.config)
    report.emit(lineup)

    names = args.only or list(MEASUREMENTS)
    if "memory" in names:
        # On the second core, beside everything else: its tracemalloc phase is
        # the run's longest piece.
        MEMORY_PROBE.start(opts.memory_requests)
    with BenchServer() as server:
        for name in names:
            t0 = time.perf_counter()
            MEASUREMENTS[name](opts, server, report)
            print(f"[{name}: {time.perf_counter() - t0:.1f} s]\n", flush=True)
    total = time.perf_counter() - started
    print(f"Total: {total:.1f} s")
    report.preamble.append("")
    report.preamble.append(f"Total runtime: {total:.0f} s.")
    if args.markdown:
        report.write_markdown(args.markdown, "Benchmark results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
