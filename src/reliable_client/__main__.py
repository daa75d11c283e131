"""``python -m reliable_client demo|outbox ...`` (also the ``reliable-client``
command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """``reliable-client``: the ``demo`` and ``outbox`` subcommands."""
    from . import _demo_cli
    from .outbox import _cli

    parser = argparse.ArgumentParser(
        prog="reliable-client",
        description="reliable_client: HTTP calls that are safe to retry.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _demo_cli.add_parser(commands)
    _cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
