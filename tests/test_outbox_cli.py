"""``reliable-client outbox status|list|retry|purge TARGET``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reliable_client.__main__ import main
from reliable_client.outbox import Outbox
from reliable_client.outbox._cli import main as outbox_main
from reliable_client.outbox._model import Result


def fill(target: str) -> tuple[Outbox, list[str]]:
    """Two pending, one delivered, two dead (one of them with a query)."""
    outbox = Outbox(target)
    made = [
        outbox.enqueue("POST", f"https://api.example/{name}?token=hush")
        for name in ("a", "b", "c", "d", "e")
    ]
    store = outbox._store
    claimed = {c.id: c for c in store.claim("cli-test", 3, 30.0)}
    ids = [str(e.id) for e in made]
    store.record(claimed[ids[0]], Result("delivered", 1, status=201))
    store.record(claimed[ids[1]], Result("dead", 2, reason="status 404", status=404))
    store.record(claimed[ids[2]], Result("dead", 1, reason="status 410", status=410))
    return outbox, ids


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["outbox", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_counts_by_state(
    outbox_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(outbox_target)
    code, out, _ = run(capsys, "status", outbox_target)
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == ["pending", "2", "(0", "in", "flight)"]
    assert lines[2].split() == ["delivered", "1"] and lines[3].split() == ["dead", "2"]


def test_list_shows_dead_entries_with_their_last_error(
    sqlite_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ids = fill(sqlite_target)
    code, out, _ = run(capsys, "list", sqlite_target)
    assert code == 0
    rows = out.splitlines()
    assert rows[0].split()[:4] == ["id", "state", "method", "url"]
    assert [row.split()[0] for row in rows[1:]] == [ids[1], ids[2]]
    assert "status 404" in rows[1] and "https://api.example/b" in rows[1]
    assert "hush" not in out  # no query strings
    code, out, _ = run(capsys, "list", sqlite_target, "--state", "all", "--limit", "2")
    assert [row.split()[0] for row in out.splitlines()[1:]] == ids[:2]
    code, out, _ = run(capsys, "list", sqlite_target, "--state", "delivered")
    assert len(out.splitlines()) == 2


def test_list_of_nothing(
    sqlite_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Outbox(sqlite_target)
    assert run(capsys, "list", sqlite_target)[1] == "no dead entries\n"
    assert run(capsys, "list", sqlite_target, "--state", "all")[1] == "no entries\n"


def test_retry_one_or_all_dead_entries(
    sqlite_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox, ids = fill(sqlite_target)
    code, out, _ = run(capsys, "retry", sqlite_target, ids[1])
    assert code == 0 and out == f"entry {ids[1]} will be delivered again\n"
    assert outbox.get(ids[1]).state == "pending"  # type: ignore[union-attr]
    code, _, err = run(capsys, "retry", sqlite_target, ids[1])
    assert code == 1 and "is pending, not dead" in err
    code, _, err = run(
        capsys, "retry", sqlite_target, "01a230c8-9186-7198-bfa1-a69d4ea220aa"
    )
    assert code == 1 and "no entry" in err
    code, _, err = run(capsys, "retry", sqlite_target, "not-an-id")
    assert code == 2 and "not an outbox entry id" in err
    code, out, _ = run(capsys, "retry", sqlite_target, "--all")
    assert code == 0 and out == "1 dead entry to deliver again\n"
    assert outbox.stats()["dead"] == 0


def test_purge_old_delivered_entries(
    sqlite_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox, _ = fill(sqlite_target)
    assert run(capsys, "purge", sqlite_target)[1] == "purged 0 entries\n"  # 7 days
    code, out, _ = run(capsys, "purge", sqlite_target, "--older-than", "0")
    assert code == 0 and out == "purged 1 entry\n"
    out = run(
        capsys, "purge", sqlite_target, "--older-than", "0", "--dead-older-than", "0"
    )[1]
    assert out == "purged 2 entries\n"
    assert outbox.stats()["pending"] == 2


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing.db", "cannot open outbox 'missing.db': no such file"),
        ("mysql://db/x", "neither a SQLite file path nor a postgresql:// URL"),
        (
            "postgresql://app:hunter2@127.0.0.1:1/app",
            "cannot open outbox 'postgresql://app:***@127.0.0.1:1/app'",
        ),
    ],
)
def test_a_bad_target_is_a_clear_error(
    target: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "status", target)
    assert code == 2 and out == "" and message in err
    assert "hunter2" not in err
    assert not (tmp_path / "missing.db").exists()  # never created


def test_a_file_without_an_outbox_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    code, _, err = run(capsys, "status", str(other))
    assert code == 2 and "has no reliable_client_outbox" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status"], "the following arguments are required: target"),
        (["list", "x.db", "--limit", "0"], "0 is not >= 1"),
        (["list", "x.db", "--state", "lost"], "invalid choice"),
        (["retry", "x.db"], "one of the arguments id --all is required"),
        (["purge", "x.db", "--older-than", "soon"], "'soon' is not a number"),
        (["purge", "x.db", "--older-than", "-1"], "not a number of seconds >= 0"),
        (["explode", "x.db"], "invalid choice"),
    ],
)
def test_bad_usage(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["outbox", *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_outbox_command_alone_and_as_a_program(
    sqlite_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(sqlite_target)
    assert outbox_main(["status", sqlite_target]) == 0
    assert "delivered" in capsys.readouterr().out
    result = subprocess.run(
        [sys.executable, "-m", "reliable_client", "outbox", "status", sqlite_target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "dead" in result.stdout
