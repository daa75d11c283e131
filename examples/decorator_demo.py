"""@retry around a function that makes two keyed requests.

    python examples/decorator_demo.py

A local server (127.0.0.1, ephemeral port) creates orders and deduplicates by
Idempotency-Key; its PATCH endpoint answers 503 twice before it succeeds.  The
decorated function is retried as a whole, and each attempt replays the keys of
the first, so the server creates one order, not three.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import reliable_client

orders: dict[str, dict[str, str]] = {}  # Idempotency-Key -> order
patch_failures = 2
lock = threading.Lock()


class Orders(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, payload: object = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        key = self.headers["Idempotency-Key"]
        with lock:
            # A real server claims the key atomically before running the
            # handler; see the README.
            order = orders.setdefault(
                key, {"id": self.headers["X-Client-Resource-Id"], "state": "new"}
            )
        self._reply(201, order)

    def do_PATCH(self) -> None:
        global patch_failures
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            failing = patch_failures > 0
            patch_failures -= 1
        self._reply(503 if failing else 200, None if failing else {"state": "paid"})

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Orders)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = reliable_client.Client(base_url=f"http://127.0.0.1:{server.server_port}")
    policy = reliable_client.RetryPolicy(max_attempts=4, backoff_initial=0.05)

    @reliable_client.retry(policy, budget=client.budget)
    def checkout(cart: str) -> str:
        order = client.post("/orders", json={"cart": cart})
        order.raise_for_status()
        paid = client.patch(f"/orders/{order.json()['id']}", json={"state": "paid"})
        paid.raise_for_status()
        return str(order.json()["id"])

    try:
        order_id = checkout("cart-42")
        print(f"checkout returned order {order_id}")
        print(f"orders created on the server: {len(orders)}")
        print(
            f"client requests: {client.stats.attempts} "
            "(3 POSTs with one key, 3 PATCHes)"
        )
    finally:
        client.close()
        server.shutdown()


if __name__ == "__main__":
    main()
