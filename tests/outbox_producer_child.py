"""A producer to kill with SIGKILL: enqueues calls in a loop and prints the
id of each one as soon as ``enqueue`` has returned (acknowledged).

    python -m tests.outbox_producer_child TARGET
"""

from __future__ import annotations

import itertools
import sys

from reliable_client.outbox import Outbox


def main(target: str) -> int:
    outbox = Outbox(target)
    for n in itertools.count():
        entry = outbox.enqueue("POST", "/orders", json={"n": n}, group=f"g{n % 3}")
        print(entry.id, flush=True)
    return 0  # pragma: no cover - killed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
