"""The SQLite outbox's file: owner-only permissions, and clear errors for a
file that is not a database or cannot be written."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reliable_client.outbox import Outbox, OutboxError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_it_creates_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "nested" / "app.db"
    old = os.umask(0o022)
    try:
        outbox = Outbox(path)
        outbox.enqueue("POST", "/p", json={"card": "4242"})
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(tmp_path / "new") == mode(tmp_path / "new" / "nested") == 0o700
    for suffix in ("-wal", "-shm"):  # while a connection is open
        side = Path(f"{path}{suffix}")
        assert side.exists() and mode(side) == 0o600
    outbox.close()


def test_an_existing_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    path.touch(0o640)
    os.chmod(path, 0o640)
    Outbox(path).enqueue("POST", "/p")
    assert mode(path) == 0o640


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not SQLite " * 300)
    with pytest.raises(
        OutboxError, match=r"cannot open outbox '.*broken\.db': file is not a database"
    ):
        Outbox(path)


def test_a_database_cut_in_the_middle_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "cut.db"
    outbox = Outbox(path)
    for n in range(200):
        outbox.enqueue("POST", "/p", json={"n": n, "pad": "x" * 200})
    outbox.close()
    data = path.read_bytes()
    path.write_bytes(data[:4096] + b"\xff" * 4096 + data[8192:])
    with pytest.raises(OutboxError, match=r"outbox '.*cut\.db'"):
        reopened = Outbox(path)
        reopened.entries(limit=1000)


@pytest.fixture
def readonly_db() -> Iterator[Path]:
    """An outbox file (with one entry) in a folder anyone may read."""
    folder = Path(tempfile.mkdtemp(prefix="rc-outbox-ro-"))
    os.chmod(folder, 0o755)
    path = folder / "ro.db"
    outbox = Outbox(path)
    outbox.enqueue("POST", "/p")
    outbox.close()
    os.chmod(path, 0o644)
    try:
        yield path
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


def as_reader(check: Callable[[], str]) -> str:
    """Run ``check`` without the right to write the file: as another user
    when root (in a forked child), else with the file and folder made
    read-only."""
    if os.geteuid() != 0:
        return check()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            message = check()
        except BaseException as exc:
            message = f"raised {type(exc).__name__}: {exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    return message


def _reads_then_writes() -> Callable[[Path], str]:
    def check(path: Path) -> str:
        outbox = Outbox(path)
        pending = outbox.stats()["pending"]
        try:
            outbox.enqueue("POST", "/p")
        except OutboxError as exc:
            return f"pending={pending}; {exc}"
        return "the enqueue was written"

    return check


def test_a_read_only_file_can_be_read_and_refuses_writes_clearly(
    readonly_db: Path,
) -> None:
    os.chmod(readonly_db.parent, 0o777)  # the -shm file can be made
    if os.geteuid() != 0:
        os.chmod(readonly_db, 0o444)
    message = as_reader(lambda: _reads_then_writes()(readonly_db))
    assert message.startswith("pending=1; outbox ")
    assert str(readonly_db) in message and "readonly database" in message


def test_a_read_only_file_in_a_read_only_folder_cannot_be_opened(
    readonly_db: Path,
) -> None:
    if os.geteuid() != 0:
        os.chmod(readonly_db, 0o444)
        os.chmod(readonly_db.parent, 0o555)
    try:
        message = as_reader(lambda: _reads_then_writes()(readonly_db))
    finally:
        os.chmod(readonly_db.parent, 0o755)
    assert message.startswith(f"raised OutboxError: cannot open outbox '{readonly_db}'")
