"""What ``python -m benchmarks.outbox`` runs beside itself.

- ``Postgres``: a PostgreSQL server with its durability settings as shipped
  (``fsync`` and ``synchronous_commit`` on), ``initdb`` into a temporary
  folder and ``pg_ctl`` on a free loopback port, as the ``postgres`` user
  when run as root; or the server at ``BENCH_POSTGRES_URL``.
- ``python -m benchmarks.outbox_support slow-server SECONDS``: an asyncio
  HTTP/1.1 keep-alive server on 127.0.0.1 that answers every request 201
  after ``SECONDS``; prints its port.
- ``python -m benchmarks.outbox_support relay TARGET URL CONCURRENCY``: a
  relay process that connects, prints ``ready``, starts delivering at a
  ``go`` line on stdin and stops at end of input.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["Postgres", "RelayProcess", "SlowServer"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def find_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


class Postgres:
    """A PostgreSQL server for the benchmark (None of it if not installed:
    ``Postgres.start()`` returns None)."""

    def __init__(self, url: str, root: str | None, bindir: Path | None) -> None:
        self.url = url
        self._root = root
        self._bindir = bindir
        self._as: dict[str, Any] = {}
        if root is not None and os.geteuid() == 0:
            self._as = {"user": "postgres", "group": "postgres"}

    @classmethod
    def start(cls) -> Postgres | None:
        if os.environ.get("BENCH_POSTGRES_URL"):
            return cls(os.environ["BENCH_POSTGRES_URL"], None, None)
        bindir = find_bindir()
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return None
        if bindir is None:
            return None
        root = tempfile.mkdtemp(prefix="rc-bench-pg-")
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        port = _free_port()
        server = cls(f"postgresql://postgres@127.0.0.1:{port}/postgres", root, bindir)
        data = os.path.join(root, "data")
        server._run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        server._run(
            "pg_ctl",
            "-D",
            data,
            "-l",
            os.path.join(root, "log"),
            "-o",
            options,
            "-w",
            "start",
        )
        return server

    def _run(self, tool: str, *args: str) -> None:
        assert self._bindir is not None and self._root is not None
        subprocess.run(
            [str(self._bindir / tool), *args],
            cwd=self._root,
            check=True,
            capture_output=True,
            timeout=120,
            **self._as,
        )

    def database(self, name: str) -> str:
        """A fresh database on the server (dropped first if there)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            fsync = conn.execute("SHOW fsync").fetchone()
            commit = conn.execute("SHOW synchronous_commit").fetchone()
        assert row and fsync and commit
        return f"PostgreSQL {row[0]} (fsync {fsync[0]}, synchronous_commit {commit[0]})"

    def close(self) -> None:
        if self._root is None:
            return
        try:
            self._run(
                "pg_ctl", "-D", os.path.join(self._root, "data"), "-m", "fast", "stop"
            )
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


class SlowServer:
    """The slow-server subprocess: every request answered after ``delay`` s."""

    def __init__(self, delay: float) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.outbox_support",
                "slow-server",
                str(delay),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


class RelayProcess:
    """A relay process for the scaling measurement: ready, go, stop."""

    def __init__(self, target: str, url: str, concurrency: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "benchmarks.outbox_support", "relay"),
                *(target, url, str(concurrency)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the relay did not start: {line!r}")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def stop(self) -> str:
        out, _ = self.process.communicate(timeout=60)  # closes stdin: stop
        return out.strip()


# -- the child processes ------------------------------------------------------


async def _slow_server(delay: float) -> None:
    body = b'{"ok":true}'
    answer = (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(delay)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def _relay(target: str, url: str, concurrency: int) -> None:
    import reliable_client
    from reliable_client.outbox import Outbox

    outbox = Outbox(target)
    stop = threading.Event()
    with reliable_client.Client(base_url=url, timeout=30.0) as client:
        outbox.stats()  # connected
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        threading.Thread(
            target=lambda: (sys.stdin.read(), stop.set()), daemon=True
        ).start()
        counts = outbox.run(
            client, stop=stop, concurrency=concurrency, poll_interval=0.01
        )
    print(counts.delivered, flush=True)


def main(argv: list[str]) -> int:
    if argv[0] == "slow-server":
        asyncio.run(_slow_server(float(argv[1])))
        return 0
    if argv[0] == "relay":
        _relay(argv[1], argv[2], int(argv[3]))
        return 0
    raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
