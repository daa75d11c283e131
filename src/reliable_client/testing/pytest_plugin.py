"""pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

- ``chaos_server``: a running :class:`~reliable_client.testing.ChaosServer`
  on 127.0.0.1, stopped after the test.
- ``retry_testing_mode``: retries sleep zero time for the test; the fixture's
  value records the delays they asked for.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import ChaosServer, TestingMode, testing_mode


@pytest.fixture
def chaos_server() -> Iterator[ChaosServer]:
    """A fault-injecting HTTP server on 127.0.0.1 (ephemeral port)."""
    with ChaosServer(seed=0, lifetime=300.0) as server:
        yield server


@pytest.fixture
def retry_testing_mode() -> Iterator[TestingMode]:
    """reliable_client's testing mode for one test: no real retry sleeps."""
    with testing_mode() as mode:
        yield mode
