"""A retried call against a flaky local server, end to end.

    python examples/retry_demo.py

Starts an HTTP server on 127.0.0.1 (ephemeral port) that answers its first
request with 503 + Retry-After, drops the connection on the second (after
reading the request, so the client cannot know whether it was processed), and
creates the payment on the third.  It records the Idempotency-Key of every
attempt, so you can see that all attempts of one POST carry the same key.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import reliable_client

attempts: list[str] = []


class FlakyPayments(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        attempts.append(self.headers.get("Idempotency-Key", "-"))
        if len(attempts) == 1:
            self.send_response(503)
            self.send_header("Retry-After", "0.2")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if len(attempts) == 2:
            self.close_connection = True  # request read, response lost
            return
        payload = json.dumps({"id": body["id"], "amount": body["amount"]}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyPayments)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    policy = reliable_client.RetryPolicy(max_attempts=4, backoff_initial=0.05)
    idempotency = reliable_client.Idempotency(resource_id_field="id")

    def show(event: reliable_client.RetryEvent) -> None:
        print(f"  retry after {event.reason}: sleeping {event.sleep:.2f}s")

    try:
        with reliable_client.Client(
            base_url=url,
            retry=policy,
            idempotency=idempotency,
            on_retry=show,
            timeout=2.0,
        ) as client:
            print(
                f"POST {url}/payments"
                "  (server: 503, then a dropped connection, then 201)"
            )
            response = client.post("/payments", json={"amount": 4200})
            result = reliable_client.outcome(response)
            print(f"-> {response.status_code} {response.json()}")
            print(
                f"   attempts: {result.attempts}, retried after: {list(result.retries)}"
            )
            print(f"   Idempotency-Key: {result.idempotency_key}")
            print(f"   resource id:     {result.resource_id}")
            same = len(set(attempts)) == 1
            print(
                f"   the server saw {len(attempts)} attempts, "
                f"all with the same key: {same}"
            )
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
