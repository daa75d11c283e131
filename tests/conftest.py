from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from reliable_client import testing
from reliable_client.server import (
    IdempotencyStore,
    MemoryStore,
    RedisStore,
    SQLiteStore,
)

from .callers import api, kind, make  # noqa: F401 - fixtures for the sync/async tests
from .loopback import LoopbackServer, serve

# The package's pytest plugin, loaded here rather than by its entry point (which
# pyproject's addopts turns off) so that coverage sees it imported.
pytest_plugins = ["reliable_client.testing.pytest_plugin"]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A scriptable HTTP server on 127.0.0.1, ephemeral port, per test."""
    with serve() as running:
        yield running


@pytest.fixture
def no_sleep() -> Iterator[testing.TestingMode]:
    """Retries sleep zero time; the delays they asked for are recorded."""
    with testing.testing_mode() as mode:
        yield mode


# --- Redis for the idempotency server's RedisStore tests -------------------


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1, free port, temp dir, no disk."""

    def __init__(self, workdir: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed (run tools/ensure_servers.sh)"
            if os.environ.get("CI"):
                pytest.fail(message)  # CI must test Redis, never skip it
            pytest.skip(message)
        for _ in range(3):  # the free port may be taken before redis binds it
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            self.process = subprocess.Popen(
                [
                    binary,
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", workdir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and self.process.poll() is None:
                if self.ping():
                    self.url = f"redis://127.0.0.1:{self.port}/0"
                    return
                time.sleep(0.02)
            self.stop()
        pytest.fail("redis-server did not answer PING within 5 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except Exception:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (skipped without it, failed in CI)."""
    running = RedisServer(str(tmp_path_factory.mktemp("redis")))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to be stopped mid-test."""
    running = RedisServer(str(tmp_path))
    try:
        yield running
    finally:
        running.stop()


# --- Stores of the idempotency server, each test on a fresh one -------------


class FakeClock:
    """A settable wall clock (seconds) so lease and expiry tests never sleep."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[IdempotencyStore]:
    """Every store kind on the fake ``clock``; Redis keys under a fresh prefix."""
    made: IdempotencyStore
    if request.param == "memory":
        made = MemoryStore(clock=clock)
    elif request.param == "sqlite":
        made = SQLiteStore(tmp_path / "keys.db", clock=clock)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = RedisStore(server.url, prefix=f"t{os.urandom(6).hex()}:", clock=clock)
    try:
        yield made
    finally:
        await made.aclose()


# --- The outbox's engines (SQLite, and a PostgreSQL server the tests start) --

from .outbox_support import (  # noqa: E402, F401 - fixtures
    outbox_target,
    postgres_server,
    postgres_url,
    sqlite_target,
)
