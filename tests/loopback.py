"""A scriptable HTTP/1.1 server on 127.0.0.1 for fault tests.

Each path has a script: a list of actions, one per request to that path; the
last action repeats.  Actions:

    Reply(status, headers, body)      an ordinary response
    Close()                           read the request, close without answering (FIN)
    Reset()                           read the request, reset the connection (RST)
    Stall(seconds)                    read the request, say nothing for a while, close
    BrokenBody(status, total, sent)   announce ``total`` body bytes, send ``sent``,
                                      close
    SlowBody(status, chunks, delay)   send the body in chunks, ``delay`` seconds apart

Every request is recorded (method, path, headers, body, monotonic time).  The
server runs in a daemon thread, on an ephemeral port, only on loopback, and
every socket operation has a timeout so that nothing hangs a test run.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

IO_TIMEOUT = 10.0


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b"ok"


@dataclass(frozen=True)
class Close:
    pass


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class Stall:
    seconds: float = 2.0


@dataclass(frozen=True)
class BrokenBody:
    status: int = 200
    total: int = 1000
    sent: int = 10


@dataclass(frozen=True)
class SlowBody:
    status: int = 200
    chunks: tuple[bytes, ...] = (b"a", b"b")
    delay: float = 0.05


Action = Reply | Close | Reset | Stall | BrokenBody | SlowBody


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class LoopbackServer:
    host: str = "127.0.0.1"
    port: int = 0
    scripts: dict[str, list[Action]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def script(self, path: str, *actions: Action) -> None:
        with self._lock:
            self.scripts[path] = list(actions)
            self._counts[path] = 0

    def requests(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if path is None or s.path == path]

    def start(self) -> LoopbackServer:
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with suppress(OSError):
            # Wakes accept() at once on Linux; elsewhere its timeout does.
            self._sock.shutdown(socket.SHUT_RDWR)
        self._accept_thread.join(5)
        self._sock.close()
        # Wake handlers blocked reading an idle keep-alive connection (a client
        # left open, a cancelled task), so that stopping never waits for
        # IO_TIMEOUT.
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)

    # -- internals ----------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _next_action(self, path: str) -> Action:
        with self._lock:
            script = self.scripts.get(path) or [Reply(404, body=b"no script")]
            index = self._counts.get(path, 0)
            self._counts[path] = index + 1
            return script[min(index, len(script) - 1)]

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(IO_TIMEOUT)
        with self._lock:
            self._conns.add(conn)
        reader = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                method, target, headers, body = request
                path = target.split("?", 1)[0]
                with self._lock:
                    self.seen.append(
                        Seen(method, path, headers, body, time.monotonic())
                    )
                if not self._act(conn, self._next_action(path), method):
                    return
        except (OSError, ValueError):  # a peer gone mid-request, or garbage
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            reader.close()
            with suppress(OSError):
                conn.close()

    def _act(self, conn: socket.socket, action: Action, method: str) -> bool:
        """Carry out ``action``; return whether the connection stays open."""
        if isinstance(action, Reply):
            body = b"" if method == "HEAD" else action.body
            conn.sendall(_head(action.status, action.headers, len(action.body)) + body)
            return True
        if isinstance(action, Close):
            conn.shutdown(socket.SHUT_RDWR)
            return False
        if isinstance(action, Reset):
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            return False
        if isinstance(action, Stall):
            self._stop.wait(action.seconds)
            return False
        if isinstance(action, BrokenBody):
            conn.sendall(_head(action.status, (), action.total) + b"x" * action.sent)
            time.sleep(0.01)
            conn.shutdown(socket.SHUT_RDWR)
            return False
        assert isinstance(action, SlowBody)
        total = sum(len(c) for c in action.chunks)
        conn.sendall(_head(action.status, (), total))
        for chunk in action.chunks:
            if self._stop.wait(action.delay):
                return False
            conn.sendall(chunk)
        return True


def _head(status: int, headers: tuple[tuple[str, str], ...], length: int) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_request(reader) -> tuple[str, str, dict[str, str], bytes] | None:  # type: ignore[no-untyped-def]
    line = reader.readline(65537)
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = reader.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = reader.read(length) if length else b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _read_chunked(reader)
    return method, target, headers, body


def _read_chunked(reader) -> bytes:  # type: ignore[no-untyped-def]
    parts = []
    while True:
        size = int(reader.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            reader.readline()
            return b"".join(parts)
        parts.append(reader.read(size))
        reader.readline()


@contextmanager
def serve() -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    try:
        yield server
    finally:
        server.stop()


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port
