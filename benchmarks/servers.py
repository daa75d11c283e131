"""A fast local HTTP/1.1 keep-alive server for the benchmarks (stdlib sockets).

One background thread serves every connection with a selector loop.  It
listens on 127.0.0.1 on an ephemeral port and never talks to anything else.
Routes (any method unless said):

``/fast``     200 with a small JSON body.
``/outage``   503 (no Retry-After): a full outage.
``/flaky``    503 for a seeded 20% of requests, else 200.
``/orders``   POST create that honours ``Idempotency-Key``: the key is claimed
              atomically (under a lock) before the order is made, and a second
              request with the same key gets the stored response back, marked
              ``Idempotent-Replayed: true``.  After processing, a seeded 20% of
              requests lose their connection instead of their response: half
              closed with FIN, half reset with RST (``SO_LINGER`` 0).

Every request is counted per route; :meth:`BenchServer.reset` zeroes the
counters and re-seeds the fault generator, so every contestant faces the same
sequence of faults.
"""

from __future__ import annotations

import contextlib
import json
import random
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["BenchServer", "ServerCounters"]

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 1024 * 1024

_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    404: "Not Found",
    503: "Service Unavailable",
}


def _response(status: int, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}\r\n"
    )
    return head.encode("latin-1") + body


_FAST = _response(200, b'{"ok":true}')
_UNAVAILABLE = _response(503, b'{"error":"unavailable"}')


class _Conn:
    __slots__ = ("buffer", "out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.out = b""


@dataclass
class ServerCounters:
    """What the server saw since the last reset."""

    requests: Counter[str] = field(default_factory=Counter)
    orders: int = 0
    orders_by_call: Counter[str] = field(default_factory=Counter)
    replays: int = 0
    dropped_fin: int = 0
    dropped_rst: int = 0


class BenchServer:
    """A threaded keep-alive HTTP server on 127.0.0.1 (ephemeral port)."""

    def __init__(
        self, *, seed: int = 20240601, fault_rate: float = 0.2, drop_rate: float = 0.2
    ) -> None:
        self.seed = seed
        self.fault_rate = fault_rate
        self.drop_rate = drop_rate
        self._lock = threading.Lock()
        self._faults = random.Random(seed)
        self._drops = random.Random(seed + 1)
        self._store: dict[str, bytes] = {}
        self.counters = ServerCounters()
        #: what ``/service`` does: "up" (200), "down" (503), "flaky" (503 at
        #: ``fault_rate``, drawn like ``/flaky``), "brownout" (200 to at most
        #: ``capacity`` requests a second, 503 to the rest) or "hang" (no
        #: answer at all); its arrivals are timed.
        self.service = "up"
        self.capacity = 20
        self.arrivals: list[float] = []
        self._served_second = -1
        self._served = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="bench-server", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BenchServer:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._acceptor.join(timeout=2.0)
        self._listener.close()

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Zero the counters, forget stored keys and re-seed the faults."""
        with self._lock:
            self.counters = ServerCounters()
            self._store.clear()
            self._faults = random.Random(self.seed)
            self._drops = random.Random(self.seed + 1)
            self.service = "up"
            self.arrivals = []

    def snapshot(self) -> ServerCounters:
        with self._lock:
            c = self.counters
            return ServerCounters(
                requests=Counter(c.requests),
                orders=c.orders,
                orders_by_call=Counter(c.orders_by_call),
                replays=c.replays,
                dropped_fin=c.dropped_fin,
                dropped_rst=c.dropped_rst,
            )

    # -- serving -----------------------------------------------------------
    #
    # One background thread runs a selector loop over the listener and every
    # connection (non-blocking sockets).  A thread per connection would make
    # 64 concurrent async clients fight 64 server threads for the GIL; one
    # thread keeps the server's share of the process small and the same for
    # every contestant.

    def _accept_loop(self) -> None:
        selector = selectors.DefaultSelector()
        self._listener.setblocking(False)
        selector.register(self._listener, selectors.EVENT_READ, None)
        states: dict[socket.socket, _Conn] = {}
        try:
            while not self._stopped.is_set():
                for key, events in selector.select(timeout=0.2):
                    if key.data is None:
                        self._accept(selector, states)
                        continue
                    conn = key.fileobj
                    assert isinstance(conn, socket.socket)
                    state = states[conn]
                    if events & selectors.EVENT_WRITE and not self._flush(state):
                        self._close(selector, states, conn, None)
                        continue
                    if events & selectors.EVENT_READ:
                        verdict = self._on_readable(state)
                        if verdict is not None:
                            self._close(selector, states, conn, verdict)
                            continue
                    want = selectors.EVENT_READ
                    if state.out:
                        want |= selectors.EVENT_WRITE
                    if want != key.events:
                        selector.modify(conn, want, key.data)
        finally:
            for conn in list(states):
                self._close(selector, states, conn, "close")
            selector.close()

    def _accept(
        self, selector: selectors.BaseSelector, states: dict[socket.socket, _Conn]
    ) -> None:
        for _ in range(64):  # a bounded burst of pending connections
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            states[conn] = _Conn(conn)
            selector.register(conn, selectors.EVENT_READ, True)

    def _close(
        self,
        selector: selectors.BaseSelector,
        states: dict[socket.socket, _Conn],
        conn: socket.socket,
        how: str | None,
    ) -> None:
        states.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn)
        with contextlib.suppress(OSError):
            if how == "fin":
                conn.shutdown(socket.SHUT_WR)
            elif how == "rst":
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        with contextlib.suppress(OSError):
            conn.close()

    @staticmethod
    def _flush(state: _Conn) -> bool:
        try:
            sent = state.sock.send(state.out)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        state.out = state.out[sent:]
        return True

    def _on_readable(self, state: _Conn) -> str | None:
        """Read what arrived and answer every complete request in it.  Returns
        None to keep the connection, or how to end it ("close", "fin", "rst")."""
        try:
            chunk = state.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return "close"
        if not chunk:
            return "close"
        state.buffer += chunk
        for _ in range(1024):  # requests pipelined in one read: bounded
            head_end = state.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return "close" if len(state.buffer) > _MAX_HEADER_BYTES else None
            try:
                lines = state.buffer[:head_end].decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
            except ValueError:
                return "close"
            if length > _MAX_BODY_BYTES:
                return "close"
            end = head_end + 4 + length
            if len(state.buffer) < end:
                return None
            body = state.buffer[head_end + 4 : end]
            state.buffer = state.buffer[end:]
            reply, drop = self._handle(method, target.split("?", 1)[0], headers, body)
            if drop == "hang":
                return None  # no answer, ever: the client's timeout ends it
            if drop is not None:
                return drop
            state.out += reply
            if not self._flush(state):
                return "close"
            if headers.get("connection", "").lower() == "close" and not state.out:
                return "close"
        return None

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[bytes, str | None]:
        with self._lock:
            self.counters.requests[path] += 1
            if path == "/fast":
                return _FAST, None
            if path == "/outage":
                return _UNAVAILABLE, None
            if path == "/service":
                now = time.monotonic()
                self.arrivals.append(now)
                mode = self.service
                if mode == "hang":
                    return b"", "hang"
                if mode == "brownout":
                    second = int(now)
                    if second != self._served_second:
                        self._served_second, self._served = second, 0
                    self._served += 1
                    return (
                        _FAST if self._served <= self.capacity else _UNAVAILABLE
                    ), None
                if mode == "down" or (
                    mode == "flaky" and self._faults.random() < self.fault_rate
                ):
                    return _UNAVAILABLE, None
                return _FAST, None
            if path == "/flaky":
                if self._faults.random() < self.fault_rate:
                    return _UNAVAILABLE, None
                return _FAST, None
            if path == "/orders" and method == "POST":
                return self._create(headers, body)
        return _response(404, b'{"error":"not found"}'), None

    def _create(self, headers: dict[str, str], body: bytes) -> tuple[bytes, str | None]:
        # Called with the lock held: claiming the key and making the order are
        # one atomic step, so two attempts with one key can never both create.
        key = headers.get("idempotency-key")
        stored = self._store.get(key) if key else None
        if stored is not None:
            self.counters.replays += 1
            reply = stored
        else:
            try:
                call = str(json.loads(body)["call"])
            except (ValueError, KeyError, TypeError):
                return _response(400, b'{"error":"bad body"}'), None
            self.counters.orders += 1
            self.counters.orders_by_call[call] += 1
            order = json.dumps({"order": self.counters.orders, "call": call})
            reply = _response(201, order.encode())
            if key:
                self._store[key] = _response(
                    201, order.encode(), "Idempotent-Replayed: true\r\n"
                )
        draw = self._drops.random()
        if draw < self.drop_rate / 2:
            self.counters.dropped_fin += 1
            return reply, "fin"
        if draw < self.drop_rate:
            self.counters.dropped_rst += 1
            return reply, "rst"
        return reply, None
