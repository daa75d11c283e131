"""A throwaway PostgreSQL server for the outbox's tests.

``initdb`` into a temporary folder and ``pg_ctl`` on a free loopback port,
as the ``postgres`` user when the tests run as root (PostgreSQL refuses to
run as root).  The binaries are looked up on PATH, then under
``/usr/lib/postgresql/*/bin`` (Debian puts them there, off PATH).  Without
them a test skips locally and fails in CI (``CI`` set): ``bash
tools/ensure_postgres.sh`` installs them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PostgresServer", "find_bindir"]


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    return Path(candidates[-1]).parent if candidates else None


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)  # CI must test PostgreSQL, never skip it
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class PostgresServer:
    """A PostgreSQL server on 127.0.0.1, its data in a temporary folder."""

    def __init__(self) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _missing("psycopg is not installed (pip install -e '.[dev]')")
        bindir = find_bindir()
        if bindir is None:
            _missing(
                "PostgreSQL server binaries not found (run tools/ensure_postgres.sh)"
            )
        assert bindir is not None
        self.bindir = bindir
        self._as: dict[str, Any] = {}
        self.root = tempfile.mkdtemp(prefix="rc-outbox-pg-")
        if os.geteuid() == 0:
            try:
                shutil.chown(self.root, "postgres", "postgres")
            except LookupError:
                shutil.rmtree(self.root)
                _missing("running as root, and there is no 'postgres' user")
            self._as = {"user": "postgres", "group": "postgres"}
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self._run(
            "initdb",
            *("-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8"),
            "--no-sync",
            "--no-instructions",
        )
        for _ in range(3):  # the free port may be taken before the server binds
            self.port = _free_port()
            if self.start(check=False):
                return
        raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}")

    def _run(self, tool: str, *args: str, check: bool = True) -> bool:
        result = subprocess.run(
            [str(self.bindir / tool), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
            **self._as,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stderr or result.stdout}")
        return result.returncode == 0

    def start(self, *, check: bool = True) -> bool:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c max_connections=200 -c log_min_messages=warning"
        )
        return self._run(
            "pg_ctl",
            *("-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "30"),
            "start",
            check=check,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode="immediate"``: as if it crashed)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"t_{os.urandom(6).hex()}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def log_tail(self) -> str:
        try:
            return Path(self.log).read_text()[-2000:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                shutil.rmtree(self.root)
                return
            except OSError:
                time.sleep(0.1)
