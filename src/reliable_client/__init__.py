"""reliable_client: httpx clients and transports that retry only what is safe.

import reliable_client

with reliable_client.Client(base_url="https://api.example") as client:
    response = client.post("/payments", json={"amount": 100})
    print(reliable_client.outcome(response).attempts)
"""

from __future__ import annotations

from ._budget import BudgetStats, RetryBudget
from ._client import AsyncClient, Client
from ._decision import RetryIfSafe
from ._decorator import retry
from ._exceptions import RetryError
from ._idempotency import Idempotency
from ._outcome import ClientStats, Outcome, RetryEvent, outcome
from ._policy import RetryPolicy
from ._throttle import AdaptiveThrottle, ThrottledError, ThrottleStats
from ._transports import AsyncRetryTransport, RetryTransport
from ._uuid7 import uuid7

__version__ = "0.1.0"

__all__ = [
    "AdaptiveThrottle",
    "AsyncClient",
    "AsyncRetryTransport",
    "BudgetStats",
    "Client",
    "ClientStats",
    "Idempotency",
    "Outcome",
    "RetryBudget",
    "RetryError",
    "RetryEvent",
    "RetryIfSafe",
    "RetryPolicy",
    "RetryTransport",
    "ThrottleStats",
    "ThrottledError",
    "__version__",
    "outcome",
    "retry",
    "uuid7",
]
