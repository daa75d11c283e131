"""``reliable-client outbox status|list|retry|purge TARGET``: an outbox from
the shell, for an operator.

TARGET is a SQLite file or a ``postgresql://`` URL; it is never created
(a typo must not make an empty outbox).  Exit status: 0 done, 1 nothing to
do (the entry is not dead, or unknown), 2 bad usage or a target that cannot
be opened.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._model import STATES, OutboxEntry, OutboxError
from ._outbox import Outbox

__all__ = ["add_parser", "main"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``outbox`` and its subcommands to a ``reliable-client`` parser."""
    outbox: argparse.ArgumentParser = commands.add_parser(
        "outbox",
        help="inspect and mend an outbox: status, list, retry, purge",
        description="Inspect and mend an outbox (a SQLite file or a "
        "postgresql:// URL).  The target is never created.",
    )
    actions = outbox.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="entries by state")
    status.add_argument("target")
    listing = actions.add_parser("list", help="entries (dead ones by default)")
    listing.add_argument("target")
    listing.add_argument(
        "--state",
        choices=(*STATES, "all"),
        default="dead",
        help="which entries (default: dead)",
    )
    listing.add_argument("--limit", type=_positive, default=50, help="default 50")
    retry = actions.add_parser("retry", help="deliver dead entries again")
    retry.add_argument("target")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="the dead entry's id")
    which.add_argument("--all", action="store_true", help="every dead entry")
    purge = actions.add_parser("purge", help="delete old delivered entries")
    purge.add_argument("target")
    purge.add_argument(
        "--older-than",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="delivered more than this long ago (default: 7 days)",
    )
    purge.add_argument(
        "--dead-older-than",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="dead ones too, finished more than this long ago (default: 30 days)",
    )
    outbox.set_defaults(handler=run)
    return outbox


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Carry out a parsed ``outbox`` command."""
    out = out or sys.stdout
    try:
        outbox = Outbox(args.target, create=False)
    except (OutboxError, ValueError, TypeError, ImportError) as exc:
        print(f"reliable-client outbox: {exc}", file=sys.stderr)
        return 2
    try:
        return _ACTIONS[args.action](outbox, args, out)
    except (OutboxError, ValueError) as exc:
        print(f"reliable-client outbox: {exc}", file=sys.stderr)
        return 2
    finally:
        outbox.close()


def _status(outbox: Outbox, args: argparse.Namespace, out: TextIO) -> int:
    stats = outbox.stats()
    print(f"outbox {outbox.name}", file=out)
    for state in STATES:
        note = f"  ({stats['in_flight']} in flight)" if state == "pending" else ""
        print(f"  {state:<10} {stats[state]:>8}{note}", file=out)
    return 0


def _list(outbox: Outbox, args: argparse.Namespace, out: TextIO) -> int:
    state = None if args.state == "all" else args.state
    entries = outbox.entries(state, limit=args.limit)
    if not entries:
        print(f"no {args.state if state else ''} entries".replace("  ", " "), file=out)
        return 0
    print(_table(entries), file=out)
    return 0


def _table(entries: Sequence[OutboxEntry]) -> str:
    header = ("id", "state", "method", "url", "deliveries", "attempts", "status")
    rows = [(*header, "last error")]
    for e in entries:
        rows.append(
            (
                str(e.id),
                e.state,
                e.method,
                e.url.split("?", 1)[0],  # no query strings on a terminal
                str(e.deliveries),
                str(e.attempts),
                "" if e.status is None else str(e.status),
                e.last_error or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _retry(outbox: Outbox, args: argparse.Namespace, out: TextIO) -> int:
    if args.all:
        count = outbox.retry_dead()
        print(
            f"{count} dead entr{'y' if count == 1 else 'ies'} to deliver again",
            file=out,
        )
        return 0
    if outbox.retry(args.id):
        print(f"entry {args.id} will be delivered again", file=out)
        return 0
    entry = outbox.get(args.id)
    if entry is None:
        print(f"reliable-client outbox: no entry {args.id}", file=sys.stderr)
    else:
        print(
            f"reliable-client outbox: entry {args.id} is {entry.state}, not dead",
            file=sys.stderr,
        )
    return 1


def _purge(outbox: Outbox, args: argparse.Namespace, out: TextIO) -> int:
    count = outbox.purge(args.older_than, dead_older_than=args.dead_older_than)
    print(f"purged {count} entr{'y' if count == 1 else 'ies'}", file=out)
    return 0


_ACTIONS = {"status": _status, "list": _list, "retry": _retry, "purge": _purge}


def main(argv: Sequence[str] | None = None) -> int:
    """``reliable-client outbox ...`` on its own (``argv`` after ``outbox``)."""
    parser = argparse.ArgumentParser(prog="reliable-client")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["outbox", *(sys.argv[1:] if argv is None else argv)])
    return run(args)
