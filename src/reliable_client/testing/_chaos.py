"""ChaosServer: a fault-injecting HTTP/1.1 server on 127.0.0.1 for test suites.

It answers each request by an *action*: from a per-route script (one action
per request, the last one repeating), from a seeded random fault mix, or, in
an outage window, with a 503.  It can sit in front of a real ASGI app
(``Forward``), and it records every request it reads.

Only 127.0.0.1, an ephemeral port, daemon threads, and a bounded lifetime:
every socket has a timeout and the server stops itself after ``lifetime``
seconds, so a forgotten server cannot hang a test run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, BinaryIO

__all__ = [
    "Action",
    "BrokenBody",
    "ChaosServer",
    "Close",
    "FaultMix",
    "Forward",
    "ForwardThenDrop",
    "ForwardThenTruncate",
    "Reply",
    "Reset",
    "Seen",
    "SlowBody",
    "Stall",
    "closed_port",
]

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]

_MAX_LINE = 65_536
_MAX_HEADERS = 200
_MAX_BODY = 16 * 1024 * 1024


def _header_pairs(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(name), str(value)) for name, value in items)


# -- actions ----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Answer with this status, headers and body."""

    status: int = 200
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    body: bytes = b"ok"

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _header_pairs(self.headers))


@dataclass(frozen=True)
class Forward:
    """Pass the request to the ASGI app and return its response (without an
    app: 404)."""


@dataclass(frozen=True)
class ForwardThenDrop:
    """Let the app process the request, then drop the connection instead of
    answering: the work is done but the response is lost.  ``reset`` sends an
    RST instead of a FIN."""

    reset: bool = False


@dataclass(frozen=True)
class Close:
    """Read the request, then close without answering (FIN), unprocessed."""


@dataclass(frozen=True)
class Reset:
    """Read the request, then reset the connection (RST), unprocessed."""


@dataclass(frozen=True)
class Stall:
    """Read the request, say nothing for ``seconds``, then close."""

    seconds: float = 2.0


@dataclass(frozen=True)
class BrokenBody:
    """Announce ``total`` body bytes, send ``sent`` of them, close."""

    status: int = 200
    total: int = 1000
    sent: int = 10


@dataclass(frozen=True)
class SlowBody:
    """Send the body in ``chunks``, ``delay`` seconds apart."""

    status: int = 200
    chunks: tuple[bytes, ...] = (b"a", b"b")
    delay: float = 0.05


@dataclass(frozen=True)
class ForwardThenTruncate:
    """Let the app process the request, then send only half of its response
    body and close: the work is done, the response arrives broken."""


Action = (
    Reply
    | Forward
    | ForwardThenDrop
    | ForwardThenTruncate
    | Close
    | Reset
    | Stall
    | BrokenBody
    | SlowBody
)


@dataclass(frozen=True)
class FaultMix:
    """Random faults at the given rates (each in ``[0, 1]``, summing to <= 1);
    every other request is forwarded to the app.

    Args:
        drop_after: the app processes the request, the response is lost
            (half of these close with FIN, half with RST).
        drop_before: the connection closes before the app sees the request.
        reset: the connection is reset before the app sees the request.
        unavailable: 503, unprocessed, with ``Retry-After: retry_after`` when
            that is not ``None``.
        stall: no answer for ``stall_seconds``, unprocessed.
        truncate: the app processes the request, the response body is cut.
    """

    drop_after: float = 0.0
    drop_before: float = 0.0
    reset: float = 0.0
    unavailable: float = 0.0
    retry_after: float | None = None
    stall: float = 0.0
    stall_seconds: float = 5.0
    truncate: float = 0.0

    def __post_init__(self) -> None:
        rates = self._rates()
        for name, rate in rates:
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"FaultMix.{name} must be in [0, 1], got {rate!r}")
        if sum(rate for _, rate in rates) > 1.0 + 1e-9:
            raise ValueError("FaultMix rates must sum to at most 1")

    def _rates(self) -> list[tuple[str, float]]:
        return [
            ("drop_after", self.drop_after),
            ("drop_before", self.drop_before),
            ("reset", self.reset),
            ("unavailable", self.unavailable),
            ("stall", self.stall),
            ("truncate", self.truncate),
        ]

    def pick(self, rng: random.Random) -> Action:
        roll = rng.random()
        for name, rate in self._rates():
            if roll < rate:
                return self._action(name, rng)
            roll -= rate
        return Forward()

    def _action(self, name: str, rng: random.Random) -> Action:
        if name == "drop_after":
            return ForwardThenDrop(reset=rng.random() < 0.5)
        if name == "drop_before":
            return Close()
        if name == "reset":
            return Reset()
        if name == "unavailable":
            headers = (
                {}
                if self.retry_after is None
                else {"Retry-After": f"{self.retry_after:g}"}
            )
            return Reply(503, headers, b"unavailable")
        if name == "stall":
            return Stall(self.stall_seconds)
        return ForwardThenTruncate()


@dataclass(frozen=True)
class Seen:
    """A request the server read."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes
    at: float
    """``time.monotonic()`` when it was read."""
    query: str = ""
    action: str = ""
    """What the server did with it (the action's class name)."""
    connection: int = 0
    """The TCP connection it came on: 1 for the server's first, 2 for the
    next, ... (two requests with one number shared a kept-alive connection)."""


@dataclass
class _Outage:
    start: float
    end: float
    reply: Reply


# -- the server ---------------------------------------------------------------


class ChaosServer:
    """A scriptable, fault-injecting HTTP/1.1 server on 127.0.0.1.

    Use as a context manager (or ``start()``/``stop()``)::

        with ChaosServer(app=my_asgi_app, seed=7) as server:
            server.script("/orders", Reply(503, {"Retry-After": "1"}), Forward())
            server.faults("/payments", FaultMix(drop_after=0.1, unavailable=0.05))
            server.outage(2.0, start_in=1.0)
            httpx.post(server.url + "/orders")
            server.requests("/orders")   # what arrived, in order

    Args:
        app: an ASGI app to forward to (optional).  It runs on an event loop
            in a thread of the server's own.
        seed: seeds the random fault mixes (default ``None``: not repeatable).
        io_timeout: seconds any socket read or write may take (default 10).
        lifetime: seconds after which the server stops itself (default 600).
    """

    def __init__(
        self,
        app: ASGIApp | None = None,
        *,
        seed: int | None = None,
        io_timeout: float = 10.0,
        lifetime: float = 600.0,
    ) -> None:
        self.app = app
        self.io_timeout = io_timeout
        self.lifetime = lifetime
        self.host = "127.0.0.1"
        self.seen: list[Seen] = []
        self.connections = 0
        """TCP connections accepted so far."""
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Action]] = {}
        self._counts: dict[str, int] = {}
        self._mixes: dict[str, FaultMix] = {}
        self._outages: list[_Outage] = []
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self._sock.listen(256)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="chaos-accept", daemon=True
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._started = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    # -- configuration ------------------------------------------------------

    def script(self, path: str, *actions: Action) -> None:
        """Answer requests to ``path`` with ``actions`` in order; the last one
        repeats.  A path ending in ``*`` matches every path with that prefix."""
        if not actions:
            raise ValueError("script() needs at least one action")
        with self._lock:
            self._scripts[path] = list(actions)
            self._counts[path] = 0

    def faults(self, path: str, mix: FaultMix) -> None:
        """Answer requests to ``path`` (``*`` suffix: a prefix) by ``mix``."""
        with self._lock:
            self._mixes[path] = mix

    def outage(
        self,
        duration: float,
        *,
        start_in: float = 0.0,
        status: int = 503,
        retry_after: float | None = None,
    ) -> None:
        """Answer every request with ``status`` for ``duration`` seconds,
        starting ``start_in`` seconds from now."""
        start = time.monotonic() + start_in
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        with self._lock:
            self._outages.append(
                _Outage(start, start + duration, Reply(status, headers, b"outage"))
            )

    def requests(self, path: str | None = None) -> list[Seen]:
        """The requests read so far (to ``path`` only, if given)."""
        with self._lock:
            return [s for s in self.seen if path is None or s.path == path]

    # -- life cycle -----------------------------------------------------------

    def start(self) -> ChaosServer:
        if self._started:
            return self
        self._started = True
        if self.app is not None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=self._loop.run_forever, name="chaos-asgi", daemon=True
            )
            self._loop_thread.start()
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        if self._accept_thread.is_alive():
            self._accept_thread.join(5)
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # wake handlers waiting on idle keep-alive sockets
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(5)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(5)
            self._loop.close()
            self._loop = None

    def __enter__(self) -> ChaosServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------

    def _accept_loop(self) -> None:
        deadline = time.monotonic() + self.lifetime
        while not self._stop.is_set():
            if time.monotonic() > deadline:
                # Past its lifetime: refuse new connections from now on.
                self._stop.set()
                with suppress(OSError):
                    self._sock.close()
                return
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            thread = threading.Thread(
                target=self._serve, args=(conn, number), daemon=True
            )
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _match(self, table: Mapping[str, Any], path: str) -> str | None:
        if path in table:
            return path
        for pattern in table:
            if pattern.endswith("*") and path.startswith(pattern[:-1]):
                return pattern
        return None

    def _next_action(self, path: str) -> Action:
        now = time.monotonic()
        with self._lock:
            for outage in self._outages:
                if outage.start <= now < outage.end:
                    return outage.reply
            key = self._match(self._scripts, path)
            if key is not None:
                script = self._scripts[key]
                index = self._counts[key]
                self._counts[key] = index + 1
                return script[min(index, len(script) - 1)]
            key = self._match(self._mixes, path)
            if key is not None:
                return self._mixes[key].pick(self._rng)
        if self.app is not None:
            return Forward()
        return Reply(404, {}, b"no script for this path")

    def _serve(self, conn: socket.socket, number: int = 0) -> None:
        conn.settimeout(self.io_timeout)
        with self._lock:
            self._conns.add(conn)
        reader = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                method, target, headers, body = request
                path, _, query = target.partition("?")
                action = self._next_action(path)
                with self._lock:
                    self.seen.append(
                        Seen(
                            method,
                            path,
                            headers,
                            body,
                            time.monotonic(),
                            query,
                            type(action).__name__,
                            number,
                        )
                    )
                if not self._act(conn, action, method, path, query, headers, body):
                    return
        except (OSError, ValueError):  # a peer gone mid-request, or garbage
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            reader.close()
            with suppress(OSError):
                conn.close()

    def _act(
        self,
        conn: socket.socket,
        action: Action,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
    ) -> bool:
        """Carry out ``action``; return whether the connection stays open."""
        if isinstance(action, (Forward, ForwardThenDrop, ForwardThenTruncate)):
            status, out_headers, out_body = self._forward(
                method, path, query, headers, body
            )
            if isinstance(action, ForwardThenDrop):
                if action.reset:
                    _reset(conn)
                else:
                    conn.shutdown(socket.SHUT_RDWR)
                return False
            if isinstance(action, ForwardThenTruncate):
                cut = out_body[: len(out_body) // 2]
                conn.sendall(_head(status, out_headers, len(out_body) + 1) + cut)
                conn.shutdown(socket.SHUT_RDWR)
                return False
            payload = b"" if method == "HEAD" else out_body
            conn.sendall(_head(status, out_headers, len(out_body)) + payload)
            return True
        if isinstance(action, Reply):
            payload = b"" if method == "HEAD" else action.body
            assert isinstance(action.headers, tuple)
            conn.sendall(
                _head(action.status, action.headers, len(action.body)) + payload
            )
            return True
        if isinstance(action, Close):
            conn.shutdown(socket.SHUT_RDWR)
            return False
        if isinstance(action, Reset):
            _reset(conn)
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
        conn.sendall(_head(action.status, (), sum(len(c) for c in action.chunks)))
        for chunk in action.chunks:
            if self._stop.wait(action.delay):
                return False
            conn.sendall(chunk)
        return True

    def _forward(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        if self.app is None or self._loop is None:
            return 404, (), b"no app"
        future = asyncio.run_coroutine_threadsafe(
            _call_asgi(self.app, method, path, query, headers, body, self.port),
            self._loop,
        )
        return future.result(timeout=self.io_timeout)


async def _call_asgi(
    app: ASGIApp,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    port: int,
) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        ],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", port),
    }
    sent_body = False
    status = 500
    out_headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects here
        return {"type": "http.disconnect"}  # pragma: no cover

    answered: asyncio.Future[tuple[int, tuple[tuple[str, str], ...], bytes]]
    answered = asyncio.get_running_loop().create_future()

    def answer(result: tuple[int, tuple[tuple[str, str], ...], bytes]) -> None:
        if not answered.done():
            answered.set_result(result)

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for name, value in message.get("headers", []):
                decoded = name.decode("latin-1")
                if decoded.lower() not in ("content-length", "transfer-encoding"):
                    out_headers.append((decoded, value.decode("latin-1")))
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                # Answered: what the app does next (background tasks) runs on,
                # as under a real ASGI server, without holding the response.
                answer((status, tuple(out_headers), b"".join(chunks)))

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            if answered.done():
                logging.getLogger("reliable_client.testing").exception(
                    "the ASGI app raised after its response was sent"
                )
            answer((500, (("Content-Type", "text/plain"),), b"app error"))
        answer((status, tuple(out_headers), b"".join(chunks)))

    task = asyncio.create_task(run())
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    return await answered


# Apps still running after they answered (kept referenced until they end).
_RUNNING: set[asyncio.Task[None]] = set()


def _reset(conn: socket.socket) -> None:
    # SO_LINGER with a zero timeout makes close() send RST.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _head(status: int, headers: Iterable[tuple[str, str]], length: int) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_request(
    reader: BinaryIO,
) -> tuple[str, str, dict[str, str], bytes] | None:
    line = reader.readline(_MAX_LINE)
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        raw = reader.readline(_MAX_LINE)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return method, target, headers, _read_chunked(reader)
    length = int(headers.get("content-length", "0"))
    if not 0 <= length <= _MAX_BODY:
        raise ValueError("bad Content-Length")
    body = reader.read(length) if length else b""
    if len(body) < length:
        # The client went away mid-body: as a real server does, drop it; the
        # app never sees a truncated body as if it were the whole request.
        raise ValueError("the request body ended before its Content-Length")
    return method, target, headers, body


def _read_chunked(reader: BinaryIO) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size = int(reader.readline(_MAX_LINE).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            reader.readline(_MAX_LINE)
            return b"".join(parts)
        total += size
        if total > _MAX_BODY:
            raise ValueError("body too large")
        part = reader.read(size)
        if len(part) < size:
            raise ValueError("the request body ended inside a chunk")
        parts.append(part)
        if reader.readline(_MAX_LINE) not in (b"\r\n", b"\n"):
            raise ValueError("a chunk without its line end")


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port
