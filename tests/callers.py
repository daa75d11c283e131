"""Client and AsyncClient behind one interface, for tests that run both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

import reliable_client as rc

BASE = "https://api.test"


class Caller:
    """A Client or an AsyncClient behind one awaitable ``request``."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        self.client: rc.Client | rc.AsyncClient
        if kind == "sync":
            self.client = rc.Client(**kwargs)
        else:
            self.client = rc.AsyncClient(**kwargs)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if isinstance(self.client, rc.Client):
            return self.client.request(method, url, **kwargs)
        return await self.client.request(method, url, **kwargs)

    async def close(self) -> None:
        if isinstance(self.client, rc.Client):
            self.client.close()
        else:
            await self.client.aclose()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make(kind: str) -> AsyncIterator[Callable[..., Caller]]:
    made: list[Caller] = []

    def factory(**kwargs: Any) -> Caller:
        caller = Caller(kind, **kwargs)
        made.append(caller)
        return caller

    yield factory
    for caller in made:
        await caller.close()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router
