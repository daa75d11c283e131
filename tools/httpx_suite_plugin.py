"""pytest plugin: run httpx's own client tests against reliable_client's clients.

Loaded by tools/run_httpx_suite.py.  It replaces ``httpx.Client`` and
``httpx.AsyncClient`` with reliable_client's, retries and keys off, so that
every client the httpx suite builds is ours: the suite then checks that we
changed no httpx behaviour.
"""

from __future__ import annotations

from typing import Any

import httpx

import reliable_client


class Client(reliable_client.Client):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(retry=False, idempotency=None, **kwargs)


class AsyncClient(reliable_client.AsyncClient):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(retry=False, idempotency=None, **kwargs)


httpx.Client = Client  # type: ignore[misc]
httpx.AsyncClient = AsyncClient  # type: ignore[misc]


def pytest_report_header() -> str:
    return (
        "httpx.Client / httpx.AsyncClient replaced by reliable_client's "
        "(retry=False, idempotency=None)"
    )
