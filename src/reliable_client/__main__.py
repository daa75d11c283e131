"""``python -m reliable_client demo`` (also the ``reliable-client`` command)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ._demo import main as demo_main

    return demo_main(argv)


if __name__ == "__main__":
    sys.exit(main())
