"""Measurement (7), run in a child process: ``python -m benchmarks.memory_probe N``.

After a warm-up, sends N requests (alternating GET and POST) through one
reliable_client.Client over httpx.MockTransport and reads RSS before and
after; then N more with tracemalloc on throughout, reading traced memory.
Prints one JSON line: the readings, the peak, the seconds taken, the client's
counters and, when traced memory grew, the lines that grew most.

A process of its own keeps the measurement clean (no other contestant's
objects in the heap) and lets it run beside the measurements that count
requests rather than time them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx

import reliable_client

from .contestants import RC_POLICY
from .measure import JSON_BODY, mock_handler

URL = "http://bench.invalid/items"


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: RSS as it is
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim), so that RSS
    shows what is live rather than what the allocator keeps."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def rss() -> int:
    """This process's resident set size in bytes (0 where unknown), after
    returning freed heap pages to the OS where the C library can."""
    _release_free_memory()
    try:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    return 0


def short(location: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python"):
        if marker in location:
            return location.split(marker, 1)[1]
    return location


def probe(n: int) -> dict[str, Any]:
    client = reliable_client.Client(
        retry=RC_POLICY, transport=httpx.MockTransport(mock_handler)
    )

    def burst(count: int) -> None:
        request = client.request
        for i in range(count):
            if i % 2:
                request("POST", URL, json=JSON_BODY)
            else:
                request("GET", URL)

    rss()  # import psutil now, not inside the measured span
    # Warm-up: pools, caches, interned strings, and the allocator's arenas (a
    # fresh process's RSS grows by some 500 KiB over the first ~100,000
    # requests before it settles, plain httpx's alike).
    burst(min(60_000, n // 2))
    # RSS over n requests without tracemalloc, whose own small allocations
    # fragment the C heap: with it on, RSS after 200,000 requests read from
    # +0.4 to +1.7 MiB from run to run while traced memory stayed flat.
    gc.collect()
    rss0 = rss()
    t0 = time.perf_counter()
    burst(n)
    rss_seconds = time.perf_counter() - t0
    gc.collect()
    rss1 = rss()
    # Then the same count again with tracemalloc on throughout.
    tracemalloc.start()
    try:
        burst(2_000)  # tracemalloc's own tables
        gc.collect()
        snapshot0 = tracemalloc.take_snapshot()
        traced0, _ = tracemalloc.get_traced_memory()
        own0 = tracemalloc.get_tracemalloc_memory()
        t0 = time.perf_counter()
        burst(n)
        seconds = time.perf_counter() - t0
        gc.collect()
        traced1, peak = tracemalloc.get_traced_memory()
        own1 = tracemalloc.get_tracemalloc_memory()
        sites = tracemalloc.take_snapshot().compare_to(snapshot0, "lineno")
    finally:
        tracemalloc.stop()
        client.close()
    stats = client.stats
    return {
        "requests": n,
        "traced0": traced0,
        "traced1": traced1,
        "peak": peak,
        "rss0": rss0,
        "rss1": rss1,
        # tracemalloc's own tables live in RSS too, untraced.
        "tracemalloc_own0": own0,
        "tracemalloc_own1": own1,
        "seconds": seconds,
        "rss_seconds": rss_seconds,
        "calls": stats.calls,
        "attempts": stats.attempts,
        "growth_sites": [
            f"{short(str(s.traceback[0]))} {s.size_diff / 1024:+.1f} KiB "
            f"in {s.count_diff:+d} blocks"
            for s in sites
            if s.size_diff > 0
        ][:5],
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m benchmarks.memory_probe N", file=sys.stderr)
        return 2
    print(json.dumps(probe(int(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
