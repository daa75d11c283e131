from __future__ import annotations

from collections.abc import Iterator

import pytest

from reliable_client import testing

from .loopback import LoopbackServer, serve


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
