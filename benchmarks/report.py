"""Tables: printed to stdout as they are made, and rendered as Markdown."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TextIO

__all__ = ["Report", "Table", "command_line", "machine", "verdict", "versions"]

_PACKAGES = (
    "reliable-client",
    "httpx",
    "httpcore",
    "tenacity",
    "httpx-retries",
    "stamina",
    "retryhttp",
    "requests",
    "urllib3",
    "psutil",
)


def versions() -> str:
    """The versions of every package a run compares, for its preamble."""
    found = []
    for name in _PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def command_line(
    prog: str, description: str, quick: str, names: Sequence[str], what: str
) -> argparse.ArgumentParser:
    """The options every benchmark command takes: ``--quick`` (``quick``
    says what it does), ``--only NAME`` (one of ``names``, a ``what``;
    repeatable) and ``--markdown FILE``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument(
        "--only",
        choices=sorted(names),
        action="append",
        metavar="NAME",
        help=f"run only this {what} (repeatable): {', '.join(names)}",
    )
    parser.add_argument(
        "--markdown", metavar="FILE", help="also write the results as Markdown to FILE"
    )
    return parser


def machine() -> str:
    """The machine and its load now, for a run's preamble."""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, load "
        f"average {load} at start; Python {platform.python_version()} "
        f"({platform.python_implementation()})"
    )


def verdict(value: float, target: float, noise: float = 0.0) -> str:
    """``met`` when ``value <= target``; a miss smaller than the A/A noise is not
    a result, and says so; anything else is ``MISSED``."""
    if value <= target:
        return "met"
    if value <= target + noise:
        return "missed, within A/A noise"
    return "MISSED"


def verdict_at_least(value: float, target: float) -> str:
    return "met" if value >= target else "MISSED"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: per column "l" or "r"; default: first column left, the others right
    align: str = ""

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def _align(self) -> str:
        return self.align or "l" + "r" * (len(self.headers) - 1)

    def text(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))

        align = self._align()

        def line(cells: list[str]) -> str:
            out = []
            for i, cell in enumerate(cells):
                left = align[i] == "l"
                out.append(cell.ljust(widths[i]) if left else cell.rjust(widths[i]))
            return "  ".join(out).rstrip()

        parts = [self.title, "=" * len(self.title), line(self.headers)]
        parts.append("  ".join("-" * w for w in widths))
        parts.extend(line(row) for row in self.rows)
        parts.extend(f"  * {note}" for note in self.notes)
        return "\n".join(parts)

    def markdown(self) -> str:
        def esc(cell: str) -> str:
            return cell.replace("|", "\\|")

        parts = [f"### {self.title}", ""]
        parts.append("| " + " | ".join(esc(h) for h in self.headers) + " |")
        aligns = ["---" if a == "l" else "---:" for a in self._align()]
        parts.append("| " + " | ".join(aligns) + " |")
        parts.extend("| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows)
        if self.notes:
            parts.append("")
            parts.extend(f"- {note}" for note in self.notes)
        return "\n".join(parts)


@dataclass
class Report:
    preamble: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    out: TextIO = sys.stdout

    def emit(self, table: Table) -> None:
        self.tables.append(table)
        print(table.text(), file=self.out)
        print(file=self.out, flush=True)

    def print_preamble(self) -> None:
        for line in self.preamble:
            if line:
                print(line, file=self.out)
        print(file=self.out)

    def write_markdown(self, path: str, title: str) -> None:
        with open(path, "w", encoding="utf-8") as out:
            out.write(self.markdown(title))
        print(f"Markdown written to {path}", file=self.out)

    def markdown(self, title: str) -> str:
        parts = [f"# {title}", ""]
        parts.extend(self.preamble)
        parts.append("")
        for table in self.tables:
            parts.append(table.markdown())
            parts.append("")
        return "\n".join(parts)
