"""UUIDv7 generation that is thread-safe, fork-safe and never runs ahead of the clock.

Layout (RFC 9562, section 6.2, method 1 "fixed-length dedicated counter"):

    48 bits  unix_ts_ms
     4 bits  version (7)
    12 bits  counter, high part      (rand_a)
     2 bits  variant (0b10)
    30 bits  counter, low part       (rand_b, high)
    32 bits  fresh random per UUID    (rand_b, low), from os.urandom

The 42-bit counter is re-seeded with random bits (its top bit clear, leaving
room to count) whenever the millisecond changes, and incremented within one
millisecond.  The timestamp therefore follows the real clock at any rate of
calls; it only moves ahead when 2**41 UUIDs share one millisecond, which does
not happen.  The random tail keeps two processes that forked from one state
apart even before the child re-seeds.

The uuid6 package's ``uuid7()`` instead pushes the timestamp 1 ms forward for
every call inside one millisecond, so at high rates its keys drift seconds into
the future; it is also documented as not thread-safe.  From uuid6 we take only
its ``UUID`` class, which reads a v7 timestamp back.  Python 3.14's
``uuid.uuid7`` uses a counter method like this module's, and is used there.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid

if sys.version_info < (3, 14):
    import uuid6

__all__ = ["uuid7", "uuid7_pair_str", "uuid7_str"]

_COUNTER_BITS = 42
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_COUNTER_SEED_MASK = (1 << (_COUNTER_BITS - 1)) - 1  # top bit clear: room to count
_POOL_SIZE = 4096

_lock = threading.Lock()
_last_ms = -1
_counter = 0
# Random bytes from os.urandom, drawn in batches: one system call per ~400
# UUIDs instead of one per UUID.
_pool = b""
_pool_at = 0


def _reset_after_fork() -> None:
    # A child must not continue its parent's counter or reuse its random
    # bytes: both would emit the same UUIDs.  A fresh lock too, in case the
    # parent held it.
    global _lock, _last_ms, _counter, _pool, _pool_at
    _lock = threading.Lock()
    _last_ms = -1
    _counter = 0
    _pool = b""
    _pool_at = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _random_bits(nbytes: int) -> int:
    """``nbytes`` random bytes as an int; call with the lock held."""
    global _pool, _pool_at
    at = _pool_at
    if at + nbytes > len(_pool):
        _pool = os.urandom(_POOL_SIZE)
        at = 0
    _pool_at = at + nbytes
    return int.from_bytes(_pool[at : at + nbytes], "big")


def _uuid7_ints(count: int) -> list[int]:
    """``count`` new UUIDv7 values as ints, under one lock and one clock read."""
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    values = []
    with _lock:
        tails = _random_bits(4 * count)
        for _ in range(count):
            if now_ms > _last_ms:
                _last_ms = now_ms
                _counter = _random_bits(6) & _COUNTER_SEED_MASK
            else:
                # Same millisecond, or the wall clock stepped back: keep the
                # last timestamp and count, so the order stays monotonic.
                _counter += 1
                if _counter > _COUNTER_MAX:
                    _last_ms += 1
                    _counter = _random_bits(6) & _COUNTER_SEED_MASK
            counter = _counter
            values.append(
                (_last_ms & 0xFFFF_FFFF_FFFF) << 80
                | 0x7 << 76  # version
                | (counter >> 30) << 64  # rand_a: the counter's high 12 bits
                | 0b10 << 62  # variant
                | (counter & 0x3FFF_FFFF) << 32  # the counter's low 30 bits
                | (tails & 0xFFFF_FFFF)  # 32 fresh random bits
            )
            tails >>= 32
    return values


if sys.version_info >= (3, 14):  # pragma: no cover - exercised on 3.14 only
    _stdlib_uuid7 = uuid.uuid7  # type: ignore[attr-defined]
    _stdlib_lock = threading.Lock()

    def uuid7() -> uuid.UUID:
        """Return a new UUIDv7 (stdlib generator, guarded by a lock)."""
        with _stdlib_lock:
            result: uuid.UUID = _stdlib_uuid7()
        return result

    def _next_ints(count: int) -> list[int]:
        return [uuid7().int for _ in range(count)]

else:

    def uuid7() -> uuid.UUID:
        """Return a new UUIDv7."""
        # uuid6.UUID reads a v7 timestamp back through ``.time`` (milliseconds),
        # which the stdlib UUID of Python < 3.14 cannot.
        return uuid6.UUID(int=_uuid7_ints(1)[0])

    _next_ints = _uuid7_ints


def _canonical(value: int) -> str:
    h = value.to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_str() -> str:
    """Return a new UUIDv7 as its canonical 36-character string."""
    return _canonical(_next_ints(1)[0])


def uuid7_pair_str() -> tuple[str, str]:
    """Two new UUIDv7 strings (an idempotency key and a resource id) for the
    price of one clock read and one lock."""
    first, second = _next_ints(2)
    return _canonical(first), _canonical(second)
