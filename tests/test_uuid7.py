"""UUIDv7 keys: format, order, a timestamp that follows the clock, uniqueness."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from itertools import pairwise

import pytest

import reliable_client
from reliable_client import Idempotency
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
