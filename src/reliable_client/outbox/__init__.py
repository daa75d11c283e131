"""The outbox: calls that must happen even if this process dies.

    from reliable_client.outbox import Outbox

    outbox = Outbox("app.db")                    # SQLite: the embedded default
    entry = outbox.enqueue("POST", "https://api.example/payments", json={...})
    outbox.run(reliable_client.Client())         # the relay, anywhere

An entry is written down durably (in the application's own transaction, if
it likes), then delivered by a relay with the same Idempotency-Key and
resource id on every attempt, across crashes and restarts, until the server
has answered; the answer is kept for the application to read.
"""

from __future__ import annotations

from ._decision import DEFAULT_REDELIVERY
from ._model import DeliveryCounts, OutboxEntry, OutboxError
from ._outbox import Outbox
from ._store import OutboxStore

__all__ = [
    "DEFAULT_REDELIVERY",
    "DeliveryCounts",
    "Outbox",
    "OutboxEntry",
    "OutboxError",
    "OutboxStore",
]
