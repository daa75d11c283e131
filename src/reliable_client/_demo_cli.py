"""``reliable-client demo``: its command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ._demo import DEFAULT_FAULTS, DemoConfig, parse_faults, run_demo
from ._demo_report import format_table, plot
from .testing import FaultMix

__all__ = ["add_parser", "build_parser", "main", "run_from_args"]


def _bounded(kind: type, low: float, high: float) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {kind.__name__}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low:g}..{high:g}")
        return value

    return convert


def _faults_arg(text: str) -> FaultMix:
    try:
        return parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``reliable-client`` command line with the ``demo`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="reliable-client",
        description="reliable_client: HTTP calls that are safe to retry.",
    )
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to a ``reliable-client`` parser."""
    demo: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="payments under faults: plain httpx vs naive retries vs "
        "reliable_client (and its outbox)",
    )
    demo.add_argument("--calls", type=_bounded(int, 1, 100_000), default=500)
    demo.add_argument("--concurrency", type=_bounded(int, 1, 256), default=16)
    demo.add_argument(
        "--faults",
        type=_faults_arg,
        default=parse_faults(DEFAULT_FAULTS),
        help=f"fault rates, e.g. {DEFAULT_FAULTS!r}",
    )
    demo.add_argument(
        "--outage",
        type=_bounded(float, 0.0, 30.0),
        default=0.5,
        help="seconds of full outage (503) during each run; 0 for none",
    )
    demo.add_argument(
        "--rate",
        type=_bounded(float, 1.0, 10_000.0),
        default=200.0,
        help="payments started per second (default 200)",
    )
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--store", choices=("sqlite", "memory", "redis"), default="sqlite"
    )
    demo.add_argument("--redis-url", default=None, help="with --store redis")
    demo.add_argument("--plot", metavar="FILE", help="write a PNG of requests/s")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(handler=run_from_args)
    return demo


def _progress_printer(stream: TextIO) -> Callable[[str, int, int], None]:
    tty = stream.isatty()

    def show(name: str, done: int, total: int) -> None:
        if done != total and (not tty or done % max(1, total // 50)):
            return
        width = 30
        filled = width * done // total
        bar = "#" * filled + "." * (width - filled)
        end = "\n" if done == total else ""
        stream.write(f"\r{name:<16} [{bar}] {done}/{total}{end}")
        stream.flush()

    return show


def main(argv: Sequence[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    """Run the demo as parsed from ``reliable-client demo ...``."""
    config = DemoConfig(
        calls=args.calls,
        concurrency=args.concurrency,
        faults=args.faults,
        outage=args.outage,
        rate=args.rate,
        seed=args.seed,
        store=args.store,
        redis_url=args.redis_url,
    )
    progress = None if args.no_progress else _progress_printer(sys.stderr)
    results = run_demo(config, progress)
    print(format_table(results, config))
    if args.plot:
        plot(results, config, args.plot)
        print(f"\nplot written to {args.plot}")
    return 0
