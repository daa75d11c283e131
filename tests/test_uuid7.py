"""UUIDv7 keys: format, order, a timestamp that follows the clock, uniqueness."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from itertools import pairwise
from types import SimpleNamespace

import pytest

import reliable_client
from reliable_client import Idempotency, _uuid7
from reliable_client._uuid7 import uuid7, uuid7_str

CANONICAL = re.compile(
    r"\A[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z"
)


def timestamp_ms(value: uuid.UUID) -> int:
    """The unix_ts_ms field: the top 48 bits."""
    return value.int >> 80


def test_version_and_variant() -> None:
    for _ in range(1_000):
        value = uuid7()
        assert isinstance(value, uuid.UUID)
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 76) & 0xF == 7
        assert (value.int >> 62) & 0b11 == 0b10


def test_public_name_is_the_same_generator() -> None:
    assert reliable_client.uuid7 is uuid7
    assert reliable_client.uuid7().version == 7


def test_string_form_is_canonical() -> None:
    for _ in range(1_000):
        text = uuid7_str()
        assert CANONICAL.fullmatch(text), text
        assert str(uuid.UUID(text)) == text
        assert uuid.UUID(text).version == 7


def test_str_of_uuid7_is_canonical() -> None:
    assert CANONICAL.fullmatch(str(uuid7()))


def test_strictly_increasing_within_a_thread() -> None:
    values = [uuid7().int for _ in range(100_000)]
    assert all(a < b for a, b in pairwise(values))


def test_strings_sort_like_the_values() -> None:
    texts = [uuid7_str() for _ in range(10_000)]
    assert texts == sorted(texts)
    assert len(set(texts)) == len(texts)


def test_timestamp_is_now() -> None:
    before = time.time() * 1000
    value = uuid7()
    after = time.time() * 1000
    assert before - 1 <= timestamp_ms(value) <= after + 1


def test_timestamp_follows_the_clock_at_a_high_rate() -> None:
    # uuid6's uuid7() moves 1 ms ahead per call inside one millisecond; at this
    # rate it would run seconds into the future.
    values = [uuid7() for _ in range(50_000)]
    now_ms = time.time() * 1000
    newest = max(timestamp_ms(value) for value in values)
    assert newest <= now_ms + 1_000
    assert abs(timestamp_ms(values[-1]) - now_ms) <= 1_000
    assert abs(timestamp_ms(uuid7()) - time.time() * 1000) <= 1_000


def test_unique_and_ordered_across_threads() -> None:
    threads_count, per_thread = 8, 10_000
    barrier = threading.Barrier(threads_count)
    results: list[list[uuid.UUID]] = [[] for _ in range(threads_count)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            out = results[index]
            for _ in range(per_thread):
                out.append(uuid7())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert all(len(values) == per_thread for values in results)
    everything = [value for values in results for value in values]
    assert len(set(everything)) == threads_count * per_thread
    for values in results:
        ints = [value.int for value in values]
        assert all(a < b for a, b in pairwise(ints))
        assert all(value.version == 7 for value in values)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_unique_across_fork() -> None:
    count = 1_000
    # Prime the generator so that the child inherits a live counter state.
    before = {uuid7() for _ in range(100)}
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            os.close(read_end)
            data = b"".join(uuid7().bytes for _ in range(count))
            view = memoryview(data)
            while view:
                written = os.write(write_end, view)
                view = view[written:]
            os.close(write_end)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    parent = [uuid7() for _ in range(count)]
    chunks: list[bytes] = []
    while chunk := os.read(read_end, 65_536):
        chunks.append(chunk)
    os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    data = b"".join(chunks)
    assert len(data) == 16 * count
    child = [uuid.UUID(bytes=data[i : i + 16]) for i in range(0, len(data), 16)]
    assert all(value.version == 7 for value in child)
    assert len(set(child)) == count
    assert len(set(parent)) == count
    assert not set(child) & set(parent)
    assert not set(child) & before
    assert not set(parent) & before


def test_default_idempotency_key_factory_makes_uuid7_strings() -> None:
    factory = Idempotency().key_factory
    keys = [factory() for _ in range(1_000)]
    assert all(isinstance(key, str) for key in keys)
    assert all(CANONICAL.fullmatch(key) for key in keys)
    assert all(uuid.UUID(key).version == 7 for key in keys)
    assert len(set(keys)) == len(keys)
    assert abs(timestamp_ms(uuid.UUID(keys[-1])) - time.time() * 1000) <= 1_000


def _freeze_clock(monkeypatch: pytest.MonkeyPatch, ns: list[int]) -> None:
    """Make the generator read ``ns[0]`` as the time (change it to move)."""
    monkeypatch.setattr(_uuid7, "time", SimpleNamespace(time_ns=lambda: ns[0]))
    # Restored afterwards, so that no later test starts from a moved clock.
    for name in ("_last_ms", "_counter", "_prefix"):
        monkeypatch.setattr(_uuid7, name, getattr(_uuid7, name))


def test_counter_overflow_in_one_millisecond_moves_one_ms_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [time.time_ns()]
    _freeze_clock(monkeypatch, now)
    frozen_ms = now[0] // 1_000_000
    # More than the 14-bit counter holds in one millisecond (>= 8,192 values).
    values = [uuid7() for _ in range(20_000)]
    texts = [uuid7_str() for _ in range(5_000)]
    ints = [value.int for value in values]
    assert all(a < b for a, b in pairwise(ints))
    assert texts == sorted(texts) and len(set(texts)) == len(texts)
    stamps = {timestamp_ms(value) for value in values}
    # Ran out at least once, and moved one millisecond at a time only.
    assert min(stamps) == frozen_ms
    assert 2 <= len(stamps) <= 4
    assert max(stamps) - frozen_ms == len(stamps) - 1


def test_clock_stepping_back_keeps_order(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [time.time_ns()]
    _freeze_clock(monkeypatch, now)
    before = [uuid7_str() for _ in range(100)]
    now[0] -= 3_600 * 10**9  # the wall clock jumps an hour back
    after = [uuid7_str() for _ in range(100)]
    assert before + after == sorted(before + after)
    assert {uuid.UUID(t).int >> 80 for t in after} == {uuid.UUID(before[-1]).int >> 80}


def test_counter_restarts_at_random_each_millisecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [time.time_ns()]
    _freeze_clock(monkeypatch, now)
    firsts = []
    for _ in range(200):
        now[0] += 1_000_000
        value = uuid7()
        firsts.append((value.int >> 64 & 0xFFF) << 2 | (value.int >> 60 & 0b11))
    # Seeded from os.urandom with the top bit clear: spread over 0..8191.
    assert all(0 <= first < 8192 for first in firsts)
    assert len(set(firsts)) > 150


def test_pair_shares_the_millisecond_and_counts_on() -> None:
    key, rid = _uuid7.uuid7_pair_str()
    assert CANONICAL.fullmatch(key) and CANONICAL.fullmatch(rid)
    assert key < rid
    a, b = uuid.UUID(key).int, uuid.UUID(rid).int
    assert a >> 80 == b >> 80 or b >> 80 == (a >> 80) + 1
    # Different random tails: nothing is reused between the two.
    assert key[-12:] != rid[-12:]
