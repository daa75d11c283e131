"""Fixtures and helpers of the outbox's tests.

- ``outbox_target``: a fresh, empty outbox target on every engine (a SQLite
  file; a database of its own on a PostgreSQL server the tests start).
- ``EffectsApp``: an ASGI app that counts what it did per Idempotency-Key
  and per resource id, so a test can tell exactly-once from at-least-once.
- ``relay_process``: a relay in a process of its own, to SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reliable_client import RetryPolicy

from .pg import PostgresServer

__all__ = [
    "FAST",
    "ROOT",
    "EffectsApp",
    "RelayProcess",
    "outbox_target",
    "postgres_server",
    "postgres_url",
    "sqlite_target",
    "wait_until",
]

ROOT = Path(__file__).resolve().parent.parent
#: Redelivery for tests: a few hundredths of a second apart.
FAST = RetryPolicy(
    max_attempts=8, backoff_initial=0.01, backoff_max=0.05, jitter="none"
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (skipped without it, failed in CI)."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database of its own on the session's server."""
    return postgres_server.create_database()


@pytest.fixture
def sqlite_target(tmp_path: Path) -> str:
    return str(tmp_path / "outbox.db")


@pytest.fixture(params=["sqlite", "postgres"])
def outbox_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh outbox target on each engine (any future store joins here)."""
    if request.param == "sqlite":
        return str(tmp_path / "outbox.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


def wait_until(check: Any, timeout: float = 10.0, every: float = 0.02) -> Any:
    """Poll ``check()`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {check}")
        time.sleep(every)


class EffectsApp:
    """``POST /effects/...``: makes a thing once per resource id.

    Counts every run of the handler per Idempotency-Key (``runs``) and every
    thing made per resource id (``made``); a resource id seen before answers
    303 See Other.  ``delay`` seconds of work per request.  Other paths:
    ``/status/NNN`` answers that status; ``/echo`` returns the request.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.runs: Counter[str] = Counter()
        self.made: Counter[str] = Counter()
        self.pairs: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # pragma: no cover - lifespan
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        if path.startswith("/status/"):
            await _answer(send, int(path.rsplit("/", 1)[1]), {"path": path})
            return
        if path == "/echo":
            await _answer(
                send,
                200,
                {"headers": headers, "body": body.decode(), "method": scope["method"]},
            )
            return
        key = headers.get("idempotency-key", "")
        rid = headers.get("x-client-resource-id", "")
        if self.delay:
            await asyncio.sleep(self.delay)
        async with self._lock:
            self.runs[key] += 1
            self.pairs.add((key, rid))
            if rid and self.made[rid]:
                await _answer(send, 303, {"id": rid}, location=f"/things/{rid}")
                return
            self.made[rid] += 1
        await _answer(send, 201, {"id": rid, "body": body.decode()})


async def _answer(send: Any, status: int, payload: object, location: str = "") -> None:
    headers = [(b"content-type", b"application/json")]
    if location:
        headers.append((b"location", location.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


class RelayProcess:
    """``python -m tests.outbox_relay_child``: a relay to kill with SIGKILL."""

    def __init__(
        self,
        target: str,
        base_url: str,
        log: Path,
        *,
        lease: float = 0.6,
        concurrency: int = 4,
        kind: str = "sync",
        poll: float = 0.05,
    ) -> None:
        self.log = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in _close
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.outbox_relay_child",
                target,
                base_url,
                str(lease),
                str(concurrency),
                kind,
                str(poll),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._close()

    def ready(self) -> bool:
        """Whether the relay has started (its SIGTERM handler is in place)."""
        return f"{self.process.pid} relay ready" in self.log.read_text()

    def stop(self) -> int:
        """SIGTERM, and the exit code of a relay that stopped cleanly."""
        wait_until(lambda: self.ready() or not self.alive(), timeout=20)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(15)
        finally:
            if self.process.poll() is None:  # pragma: no cover - hung relay
                self.process.kill()
                self.process.wait(5)
            self._close()
        return code

    def _close(self) -> None:
        self._log.close()

    def alive(self) -> bool:
        return self.process.poll() is None
