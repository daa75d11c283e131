"""The demo: three callers through faults, and the payments app behind it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from reliable_client import _demo, _demo_report
from reliable_client.__main__ import main
from reliable_client.server import IdempotencyMiddleware, MemoryStore


async def test_payments_app_creates_and_answers_303_for_a_known_id() -> None:
    app = _demo.PaymentsApp(work_seconds=0.0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        body = {"amount": 5, "reference": "r1"}
        made = await client.post(
            "/payments", json=body, headers={"X-Client-Resource-Id": "p-1"}
        )
        again = await client.post(
            "/payments", json=body, headers={"X-Client-Resource-Id": "p-1"}
        )
        anonymous = await client.post(
            "/payments", json={"amount": 1, "reference": "r2"}
        )
        fetched = await client.get("/payments/p-1")
        missing = await client.get("/payments/nope")
        bad = await client.post("/payments", content=b"not json")
        other = await client.get("/elsewhere")
    assert made.status_code == 201 and made.headers["location"] == "/payments/p-1"
    assert again.status_code == 303 and again.headers["location"] == "/payments/p-1"
    assert anonymous.status_code == 201 and anonymous.json()["id"] != "p-1"
    assert fetched.json() == {"id": "p-1", "amount": 5, "reference": "r1"}
    assert (missing.status_code, bad.status_code, other.status_code) == (404, 400, 404)
    assert len(app.payments) == 2


def test_run_caller_counts_what_the_server_did(tmp_path: Path) -> None:
    config = _demo.DemoConfig(
        calls=80,
        concurrency=8,
        faults=_demo.parse_faults("drop_after=0.15,unavailable=0.05"),
        outage=0.1,
        rate=2000.0,
        seed=3,
        store="memory",
    )
    seen: list[tuple[str, int, int]] = []
    results = {
        name: _demo.run_caller(name, config, tmp_path, lambda *a: seen.append(a))
        for name in _demo.CALLERS
    }
    reliable = results["reliable_client"]
    # Never a duplicate, never a silent loss: a payment is missing only where
    # the caller saw its call fail (six faults in a row; rare, not impossible).
    assert reliable.duplicates == 0
    assert reliable.missing <= reliable.failed <= 2
    assert reliable.payments == 80 - reliable.missing
    assert reliable.succeeded + reliable.failed == 80 and reliable.requests > 80
    plain = results["plain httpx"]
    assert plain.requests == 80 and plain.failed > 0  # lost responses, unretried
    naive = results["naive retries"]
    assert naive.duplicates > 0  # retried creates without keys
    outboxed = results["reliable_client + outbox"]
    # Its relay was SIGKILLed mid-run, again and again: still every payment
    # made, and made once.
    assert outboxed.relay_kills == _demo.RELAY_KILLS
    assert outboxed.duplicates == 0 and outboxed.missing == 0
    assert outboxed.payments == outboxed.succeeded == 80 and outboxed.failed == 0
    assert outboxed.requests >= 80 and len(outboxed.latencies) == 80
    assert ("reliable_client + outbox", 80, 80) in seen
    table = _demo_report.format_table(list(results.values()), config)
    assert "reliable_client" in table and "duplicates" in table
    row = next(line for line in table.splitlines() if "+ outbox" in line)
    assert row.split()[-1] == f"{_demo.RELAY_KILLS}x"


def test_cli_runs_the_demo_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "rps.png"
    code = main(
        [
            "demo",
            "--calls",
            "40",
            "--concurrency",
            "8",
            "--rate",
            "2000",
            "--outage",
            "0.1",
            "--store",
            "memory",
            "--plot",
            str(png),
        ]
    )
    out = capsys.readouterr()
    assert code == 0
    assert "reliable_client" in out.out and "plain httpx" in out.out
    assert "reliable_client + outbox" in out.out
    assert "[##############################] 40/40" in out.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calls", "0"], "outside"),
        (["--calls", "many"], "not a int"),
        (["--concurrency", "1000"], "outside"),
        (["--faults", "drop_after=2"], "FaultMix.drop_after"),
        (["--faults", "explode=0.1"], "bad fault"),
        (["--faults", "reset=x"], "not a number"),
        (["--outage", "-1"], "outside"),
        (["--store", "postgres"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_options(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_sqlite_store_is_the_default_for_the_demo(tmp_path: Path) -> None:
    config = _demo.DemoConfig(calls=1)
    store = _demo._make_store(config, tmp_path)
    assert type(store).__name__ == "SQLiteStore"
    assert (
        type(_demo._make_store(_demo.DemoConfig(store="memory"), tmp_path))
        is MemoryStore
    )


async def test_demo_app_behind_the_middleware_replays_a_keyed_create() -> None:
    app = IdempotencyMiddleware(
        _demo.PaymentsApp(work_seconds=0.0), store=MemoryStore()
    )
    transport = httpx.ASGITransport(app=app)
    headers = {"Idempotency-Key": "k-1", "X-Client-Resource-Id": "p-9"}
    body = json.dumps({"amount": 3, "reference": "r"})
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        first = await client.post(
            "/payments",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        second = await client.post(
            "/payments",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
