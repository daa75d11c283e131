"""An orders API for the worker-death test, run by a real multi-worker uvicorn.

``POST /orders`` creates the order named by the client-generated resource id
(``X-Client-Resource-Id``) in an SQLite table where that id is the primary
key: ``201 Created`` the first time, ``303 See Other`` when it exists, so the
handler stays exactly-once even when it runs twice.  It pauses at random
before and after its commit, so that a worker killed under load dies at
every point of a request.  Every run of the handler is logged in ``runs``.
Behind ``IdempotencyMiddleware`` with an ``SQLiteStore`` shared by the
workers.  Files come from ``ORDERS_DB`` and ``KEYS_DB``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
from typing import Any

from reliable_client.server import IdempotencyMiddleware, SQLiteStore


def _connect(path: str | None = None) -> sqlite3.Connection:
    path = path or os.environ.get("ORDERS_DB", "orders.db")
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def setup(path: str) -> None:
    """Create the tables (before the workers start)."""
    conn = _connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS orders (rid TEXT PRIMARY KEY, body TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS runs (rid TEXT, pid INTEGER)")
    conn.close()


def _create(rid: str, body: str) -> bool:
    conn = _connect()
    try:
        conn.execute("INSERT INTO runs VALUES (?, ?)", (rid, os.getpid()))
        try:
            conn.execute("INSERT INTO orders VALUES (?, ?)", (rid, body))
        except sqlite3.IntegrityError:
            return False
        return True
    finally:
        conn.close()


async def _respond(send: Any, status: int, body: bytes, extra: list[Any]) -> None:
    headers = [(b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def orders(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/health":
        await _respond(send, 200, str(os.getpid()).encode(), [])
        return
    rid = dict(scope["headers"]).get(b"x-client-resource-id", b"").decode()
    if scope["method"] != "POST" or scope["path"] != "/orders" or not rid:
        await _respond(send, 404, b"", [])
        return
    await asyncio.sleep(random.uniform(0.0, 0.15))  # before the commit
    created = await asyncio.to_thread(_create, rid, body.decode())
    await asyncio.sleep(random.uniform(0.0, 0.15))  # after it, before the answer
    location = [(b"location", f"/orders/{rid}".encode())]
    if created:
        await _respond(send, 201, json.dumps({"id": rid}).encode(), location)
    else:
        await _respond(send, 303, b"", location)


app = IdempotencyMiddleware(
    orders, store=SQLiteStore(os.environ.get("KEYS_DB", "keys.db"))
)
