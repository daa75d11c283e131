"""The outbox's documentation (``docs/outbox.md``): every Python example in
it runs, as written, against a loopback server (``PAYMENTS_API``) and a
PostgreSQL database of the tests' own (``DATABASE_URL``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliable_client.outbox import Outbox
from reliable_client.testing import ChaosServer

from .outbox_support import ROOT, EffectsApp, wait_until

PAGE = ROOT / "docs" / "outbox.md"


def examples() -> dict[str, str]:
    """The page's Python blocks, by the file name in their first line."""
    text = PAGE.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    named = {}
    for block in blocks:
        first = block.splitlines()[0]
        name = first.removeprefix("# ").split(":")[0].strip()
        assert first.startswith("# ") and name.endswith(".py"), first
        named[name] = block
    return named


@pytest.fixture
def api() -> Iterator[ChaosServer]:
    with ChaosServer(app=EffectsApp(), lifetime=120) as server:
        yield server


def run(code: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_section_has_its_examples() -> None:
    assert sorted(examples()) == ["pg_shop.py", "relay.py", "results.py", "shop.py"]


def test_the_examples_run(tmp_path: Path, api: ChaosServer, postgres_url: str) -> None:
    code = examples()
    env = {"PAYMENTS_API": api.url, "DATABASE_URL": postgres_url}
    out = run(code["shop.py"], tmp_path, env)
    assert out.startswith("pending ") and "DeliveryCounts(delivered=1" in out
    assert out.rstrip().endswith("201")
    out = run(code["pg_shop.py"], tmp_path, env)
    assert "'pending': 1" in out and Outbox(postgres_url).stats()["pending"] == 1
    out = run(code["results.py"], tmp_path, env)
    assert out.splitlines() == ["delivered 201 None", "delivered 1 1"]

    # relay.py is a service: it runs until SIGTERM.
    outbox = Outbox(tmp_path / "shop.db")
    entry = outbox.enqueue("POST", "/payments", json={"order": "order-4"})
    relay = subprocess.Popen(
        [sys.executable, "-c", code["relay.py"]],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        done = wait_until(lambda: outbox.get(entry.id).state == "delivered", timeout=30)  # type: ignore[union-attr]
        assert done
    finally:
        relay.send_signal(signal.SIGTERM)
        out, err = relay.communicate(timeout=30)
    assert relay.returncode == 0, err
    assert out.startswith("relay stopped: {'delivered': 1")
    assert f"delivered POST {api.url}/payments (entry {entry.id})" in err
    assert api.requests()[-1].headers["authorization"] == "Bearer dev"
