"""UUIDv7 generation that is thread-safe, fork-safe and follows the clock.

Layout (RFC 9562, section 6.2, method 1 "fixed bit-length dedicated counter",
the counter in rand_a and the leftmost bits of rand_b):

    48 bits  unix_ts_ms
     4 bits  version (7)
    12 bits  counter, high part      (rand_a)
     2 bits  variant (0b10)
     2 bits  counter, low part       (rand_b, leftmost)
    60 bits  fresh random per UUID    (rand_b), from os.urandom

The 14-bit counter is re-seeded with random bits (its top bit clear, leaving
at least 8,192 values to count) whenever the millisecond changes, and
incremented within one millisecond.  Only past 8,192 UUIDs in one millisecond
(8 million a second, about ten times what it reaches in CPython) does the
timestamp move a millisecond ahead, so it follows the real clock at any rate
this generator reaches.

Forks: a child made by ``os.fork`` (``multiprocessing``'s fork and forkserver
start methods included) drops its parent's counter and random pool through
``os.register_at_fork`` before it makes a key, so parent and child never
share one.  A fork that bypasses Python's fork hooks (a C library calling
``fork()`` itself, then running Python code in the child without exec) would
carry on from the parent's pool and could repeat its keys; nothing short of a
``getpid()`` per key could tell, and that is not paid here.

Strings are the hot path (two per keyed request): the timestamp's text is
made once per millisecond, the counter's from a table, and the random part is
a slice of a pool of random hex digits, so a key costs no integer formatting.

The uuid6 package's ``uuid7()`` instead pushes the timestamp 1 ms forward for
every call inside one millisecond, so at high rates its keys drift seconds into
the future; it is also documented as not thread-safe.  From uuid6 we take only
its ``UUID`` class, which reads a v7 timestamp back (Python 3.14's own
``uuid.UUID`` does, and is used there).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid

if sys.version_info >= (3, 14):  # pragma: no cover - exercised on 3.14 only
    _UUID = uuid.UUID
else:
    from uuid6 import UUID as _UUID

__all__ = ["uuid7", "uuid7_pair_str", "uuid7_str"]

_COUNTER_MAX = (1 << 14) - 1
_COUNTER_SEED_MASK = (1 << 13) - 1  # top bit clear: room to count

# "7" (the version), the counter's high 12 bits and a dash, as text.
_VERSION_AND_COUNTER = [f"7{high:03x}-" for high in range(4096)]
# The variant (0b10) and the counter's low 2 bits: one hex digit.
_VARIANT_AND_COUNTER = "89ab"

# Random text from os.urandom, cut into groups of 12 hex digits by dashes
# (bytes.hex does it in C).  Two groups make a block of 26 characters: its
# last 16, "hhh-hhhhhhhhhhhh", are a UUID's random tail ready-made, and its
# first digits seed the counter of a new millisecond.
_POOL_BYTES = 4092  # 341 blocks: one os.urandom call per 341 UUIDs
_BLOCK = 26
_TAIL_AT = 9  # the tail's offset in its block
_BLOCKS_END = _POOL_BYTES // 12 * _BLOCK

_lock = threading.Lock()
_last_ms = -1
_counter = 0
_prefix = ""  # the timestamp of _last_ms as text: "xxxxxxxx-xxxx-"
_pool = ""
_pool_at = _BLOCKS_END  # the next unused block; at the end: refill first


def _reset_after_fork() -> None:
    # A child must not continue its parent's counter or reuse its random
    # text: both would emit the same UUIDs.  A fresh lock too, in case the
    # parent held it.
    global _lock, _last_ms, _counter, _prefix, _pool, _pool_at
    _lock = threading.Lock()
    _last_ms = -1
    _counter = 0
    _prefix = _pool = ""
    _pool_at = _BLOCKS_END


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _reserve(count: int) -> tuple[int, str, int, str, int]:
    """Take ``count`` consecutive counter values in one millisecond, and
    ``count`` random tails.

    Returns the millisecond, its text, the first counter value, the pool and
    where in it the first tail starts (the next ones follow every 26
    characters).
    """
    global _last_ms, _counter, _prefix, _pool, _pool_at
    now_ms = time.time_ns() // 1_000_000
    # acquire/release: half the cost of a with block, on every key.
    lock = _lock
    lock.acquire()
    try:
        at = _pool_at
        if at + count * _BLOCK > _BLOCKS_END:
            _pool = os.urandom(_POOL_BYTES).hex("-", 6)
            at = 0
        _pool_at = at + count * _BLOCK
        pool = _pool
        first = _counter + 1
        if now_ms > _last_ms or first + count - 1 > _COUNTER_MAX:
            # A new millisecond; or the counter ran out within one (the
            # timestamp then moves 1 ms ahead, the one way to stay ordered).
            ms = _last_ms = now_ms if now_ms > _last_ms else _last_ms + 1
            h = "%012x" % (ms & 0xFFFF_FFFF_FFFF)
            _prefix = h[:8] + "-" + h[8:] + "-"
            first = int(pool[at : at + 4], 16) & _COUNTER_SEED_MASK
        # Otherwise the same millisecond, or the wall clock stepped back: keep
        # the last timestamp and count on, so the order stays monotonic.
        _counter = first + count - 1
        return _last_ms, _prefix, first, pool, at + _TAIL_AT
    finally:
        lock.release()


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7 (a ``uuid.UUID`` whose ``.time`` reads back the
    millisecond timestamp)."""
    ms, _, counter, pool, at = _reserve(1)
    value = (
        ms << 80
        | 0x7 << 76  # version
        | (counter >> 2) << 64  # rand_a: the counter's high 12 bits
        | (0b1000 | counter & 3) << 60  # variant, the counter's low 2 bits
        | int(pool[at : at + 3] + pool[at + 4 : at + 16], 16)
    )
    return _UUID(int=value)


def _text(prefix: str, counter: int, pool: str, at: int) -> str:
    """A UUID's canonical text from its millisecond's text, its counter and
    the random tail at ``pool[at:]``: four pieces, no formatting."""
    return (
        prefix
        + _VERSION_AND_COUNTER[counter >> 2]
        + _VARIANT_AND_COUNTER[counter & 3]
        + pool[at : at + 16]
    )


def uuid7_str() -> str:
    """Return a new UUIDv7 as its canonical 36-character string."""
    _, prefix, counter, pool, at = _reserve(1)
    return _text(prefix, counter, pool, at)


def uuid7_pair_str() -> tuple[str, str]:
    """Two new UUIDv7 strings (an idempotency key and a resource id) for the
    price of one clock read and one lock."""
    _, prefix, counter, pool, at = _reserve(2)
    return _text(prefix, counter, pool, at), _text(
        prefix, counter + 1, pool, at + _BLOCK
    )
