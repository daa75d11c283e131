"""The idempotency stores: one contract, proved on memory, SQLite and Redis."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from reliable_client.server import (
    Claimed,
    Completed,
    IdempotencyStore,
    InFlight,
    MemoryStore,
    Mismatch,
    RedisStore,
    SQLiteStore,
    StoredResponse,
    default_sqlite_path,
)
from reliable_client.server import _redis as redis_module

from .conftest import FakeClock, RedisServer

RESPONSE = StoredResponse(
    201, (("content-type", "application/json"), ("location", "/p/1")), b"\x00\xff{}"
)


async def claim_token(
    store: IdempotencyStore, key: str, fp: str = "fp", lease: float = 30.0
) -> str:
    result = await store.claim(key, fp, lease=lease)
    assert isinstance(result, Claimed)
    return result.token


async def test_claim_in_flight_mismatch_complete_replay(
    store: IdempotencyStore,
) -> None:
    token = await claim_token(store, "k")
    assert await store.claim("k", "fp", lease=30.0) == InFlight()
    assert await store.claim("k", "other", lease=30.0) == Mismatch()
    assert await store.complete("k", token, RESPONSE, expiry=60.0)
    # Completed records replay byte for byte; a second completion cannot land.
    assert await store.claim("k", "fp", lease=30.0) == Completed(RESPONSE)
    assert await store.claim("k", "other", lease=30.0) == Mismatch()
    assert not await store.complete("k", token, RESPONSE, expiry=60.0)
    assert not await store.release("k", token)


async def test_release_frees_the_key_for_its_owner_only(
    store: IdempotencyStore,
) -> None:
    token = await claim_token(store, "k")
    assert not await store.release("k", "not-the-token")
    assert await store.claim("k", "fp", lease=30.0) == InFlight()
    assert await store.release("k", token)
    assert await claim_token(store, "k") != token
    assert not await store.release("missing", token)


async def test_expired_lease_is_taken_over_and_the_stale_owner_cannot_write(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    stale = await claim_token(store, "k")
    clock.advance(29.0)
    assert await store.claim("k", "fp", lease=30.0) == InFlight()
    clock.advance(2.0)  # the worker died: nobody renewed the lease
    fresh = await claim_token(store, "k", fp="another payload is fine now")
    assert fresh != stale
    other = StoredResponse(500, (), b"stale")
    assert not await store.complete("k", stale, other, expiry=60.0)
    assert not await store.extend("k", stale, lease=30.0)
    assert not await store.release("k", stale)
    assert await store.complete("k", fresh, RESPONSE, expiry=60.0)
    claim = await store.claim("k", "another payload is fine now", lease=30.0)
    assert claim == Completed(RESPONSE)


async def test_extend_keeps_a_live_claim(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    token = await claim_token(store, "k")
    clock.advance(20.0)
    assert await store.extend("k", token, lease=30.0)
    clock.advance(20.0)  # 40 s after the claim, 20 s after the renewal
    assert await store.claim("k", "fp", lease=30.0) == InFlight()
    clock.advance(11.0)
    assert isinstance(await store.claim("k", "fp", lease=30.0), Claimed)


async def test_completed_records_expire(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    token = await claim_token(store, "k")
    assert await store.complete("k", token, RESPONSE, expiry=10.0)
    clock.advance(9.0)
    assert await store.claim("k", "fp", lease=30.0) == Completed(RESPONSE)
    clock.advance(2.0)
    assert isinstance(await store.claim("k", "new", lease=30.0), Claimed)


async def test_fifty_concurrent_claims_have_one_winner(store: IdempotencyStore) -> None:
    results = await asyncio.gather(
        *(store.claim("race", "fp", lease=30.0) for _ in range(50))
    )
    assert sum(isinstance(r, Claimed) for r in results) == 1
    assert results.count(InFlight()) == 49


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_expired_records_are_purged(
    kind: str, tmp_path: Path, clock: FakeClock
) -> None:
    store: MemoryStore | SQLiteStore
    store = (
        MemoryStore(clock=clock)
        if kind == "memory"
        else SQLiteStore(tmp_path / "keys.db", clock=clock)
    )
    await store.claim("old", "fp", lease=1.0)
    clock.advance(2.0)
    for n in range(256):  # the purge runs every 256 claims
        await store.claim(f"k{n}", "fp", lease=30.0)
    if isinstance(store, MemoryStore):
        assert len(store) == 256
    else:
        with sqlite3.connect(store.path) as conn:
            rows = conn.execute("SELECT key FROM idempotency_records").fetchall()
        assert ("old",) not in rows
        assert len(rows) == 256
    await store.aclose()


# --- SQLite across processes -------------------------------------------------

KEYS_PER_PROCESS = 150


def _claim_all(path: str, start: multiprocessing.synchronize.Barrier) -> list[str]:
    store = SQLiteStore(path)

    async def run() -> list[str]:
        won = []
        for n in range(KEYS_PER_PROCESS):
            if isinstance(await store.claim(f"k{n}", "fp", lease=30.0), Claimed):
                won.append(f"k{n}")
        await store.aclose()
        return won

    start.wait(10)  # every process starts claiming at the same moment
    return asyncio.run(run())


def _worker(path: str, start: object, out: object) -> None:
    out.put(_claim_all(path, start))  # type: ignore[attr-defined]


def test_sqlite_claim_is_atomic_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    out = context.Queue()
    workers = [
        context.Process(target=_worker, args=(path, start, out)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    try:
        won = [out.get(timeout=30) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
    # Each key was claimed by exactly one of the four processes.
    everything = sorted(key for keys in won for key in keys)
    assert everything == sorted(f"k{n}" for n in range(KEYS_PER_PROCESS))
    assert all(worker.exitcode == 0 for worker in workers)


async def test_sqlite_reopens_after_fork_and_closes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "keys.db")
    token = await claim_token(store, "k")
    store._pid = -1  # as a forked child sees it: the inherited connection is unsafe
    assert await store.claim("k", "fp", lease=30.0) == InFlight()
    assert await store.complete("k", token, RESPONSE, expiry=60.0)
    await store.aclose()
    await store.aclose()
    reopened = SQLiteStore(tmp_path / "keys.db")
    assert await reopened.claim("k", "fp", lease=30.0) == Completed(RESPONSE)
    await reopened.aclose()


async def test_sqlite_rolls_back_a_failed_claim(tmp_path: Path) -> None:
    def broken_clock() -> float:
        raise OSError("clock failed")

    store = SQLiteStore(tmp_path / "keys.db", clock=broken_clock)
    with pytest.raises(OSError, match="clock failed"):
        await store.claim("k", "fp", lease=30.0)
    store._clock = FakeClock()  # the transaction was rolled back: usable again
    assert isinstance(await store.claim("k", "fp", lease=30.0), Claimed)
    await store.aclose()


def test_default_sqlite_path_is_private_and_per_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    path = default_sqlite_path()
    assert not path.startswith(tempfile.gettempdir() + os.sep)
    assert path.startswith(os.path.expanduser("~") + os.sep)
    assert path == default_sqlite_path()
    assert SQLiteStore().path == path  # no file is opened until first use
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    other = default_sqlite_path()
    assert other.startswith(str(tmp_path / "state" / "reliable_client") + os.sep)
    assert other != path  # another app (working directory), another file


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_sqlite_files_are_readable_by_their_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    old_umask = os.umask(0o022)  # a usual umask: new files 0644 by default
    try:
        store = SQLiteStore()  # the default location
        token = await claim_token(store, "k")
        assert await store.complete("k", token, RESPONSE, expiry=60.0)
        folder = Path(store.path).parent
        assert _mode(folder) == 0o700
        for suffix in ("", "-wal", "-shm"):
            assert _mode(Path(store.path + suffix)) == 0o600, suffix
        await store.aclose()
    finally:
        os.umask(old_umask)


async def test_sqlite_tightens_a_file_others_could_read(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    store = SQLiteStore(path)
    await claim_token(store, "k")
    assert _mode(path) == 0o600
    await store.aclose()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="only root can make a file another user owns",
)
async def test_sqlite_refuses_a_file_another_user_owns(tmp_path: Path) -> None:
    path = tmp_path / "planted.db"
    path.touch(mode=0o666)
    os.chown(path, 65534, 65534)  # nobody's file, planted before us
    store = SQLiteStore(path)
    with pytest.raises(PermissionError, match="another user"):
        await store.claim("k", "fp", lease=5.0)


async def test_in_flight_says_how_long_the_lease_has_left(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    await claim_token(store, "k", lease=5.0)
    clock.advance(2.0)
    busy = await store.claim("k", "fp", lease=5.0)
    assert isinstance(busy, InFlight)
    assert busy.lease_left == pytest.approx(3.0, abs=0.01)


# --- Redis specifics ------------------------------------------------------------


async def test_redis_claim_retried_after_a_lost_reply_is_still_ours(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore(redis_server.url, prefix=f"t{os.urandom(6).hex()}:")
    monkeypatch.setattr(redis_module, "new_token", lambda: "same-token")
    assert await store.claim("k", "fp", lease=30.0) == Claimed("same-token")
    assert await store.claim("k", "fp", lease=30.0) == Claimed("same-token")
    await store.aclose()


async def test_redis_store_takes_a_client_of_your_own(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    store = RedisStore(client=client, prefix=f"t{os.urandom(6).hex()}:")
    token = await claim_token(store, "k")
    assert await store.complete("k", token, RESPONSE, expiry=60.0)
    await store.aclose()  # not ours to close
    assert await client.ping()
    await client.aclose()


async def test_redis_store_refuses_bad_arguments(redis_server: RedisServer) -> None:
    decoding = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(client=decoding)
    with pytest.raises(TypeError, match="url or client"):
        RedisStore(redis_server.url, client=decoding)
    await decoding.aclose()


async def test_sqlite_waits_for_a_write_lock_before_switching_to_wal(
    tmp_path: Path,
) -> None:
    # Another process holds the write lock of a database not yet in WAL mode:
    # SQLite refuses the switch at once, without its busy timeout.
    path = tmp_path / "busy.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE unrelated (x)")
    other.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(0.3, other.execute, args=("COMMIT",))
    releaser.start()
    store = SQLiteStore(path, timeout=5.0)
    try:
        started = time.monotonic()
        assert isinstance(await store.claim("k", "fp", lease=30.0), Claimed)
        assert time.monotonic() - started >= 0.2  # it waited for the lock
    finally:
        releaser.join()
        other.close()
        await store.aclose()


async def test_sqlite_gives_up_on_a_lock_held_past_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "stuck.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE unrelated (x)")
    other.execute("BEGIN IMMEDIATE")
    store = SQLiteStore(path, timeout=0.2)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.claim("k", "fp", lease=30.0)
    finally:
        other.execute("COMMIT")
        other.close()
        await store.aclose()
