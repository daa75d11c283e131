"""Workers killed under load: a real ``uvicorn --workers 3`` (directly, and
behind a real nginx), whose workers are SIGKILLed at random moments while
reliable_client clients send creates.  The two halves fit together: the
middleware's short, renewed lease and its 409 ``Retry-After`` (the lease
left) let the client's default retries take over a dead worker's key, the
handler's resource id as a unique key keeps the effect single (201, then
303), and a call that still ends on a 409 says it may be in progress.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import reliable_client as rc

from .worker_app import setup

ROOT = Path(__file__).resolve().parent.parent
CALLS = 160
KILLS = 6


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within 20 s")


def _workers(master: int) -> list[int]:
    """The uvicorn workers (multiprocessing spawn children) of ``master``."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return []
    pids = []
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(int(child))
    return pids


@pytest.fixture
def uvicorn_workers(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """``uvicorn --workers 3`` serving tests/worker_app.py: (url, master pid,
    orders database)."""
    orders = tmp_path / "orders.db"
    setup(str(orders))
    port = _free_port()
    env = {
        **os.environ,
        "ORDERS_DB": str(orders),
        "KEYS_DB": str(tmp_path / "keys.db"),
        # This tree's package and tests first, whatever is installed.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "uvicorn", "tests.worker_app:app", "--workers", "3"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "error"),
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, "uvicorn")
        yield url, process.pid, orders
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _nginx(tmp_path: Path, upstream: str) -> Iterator[str]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        message = "nginx is not installed (run tools/ensure_servers.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must test behind nginx, never skip it
        pytest.skip(message)
    port = _free_port()
    root = tmp_path / "nginx"
    root.mkdir()
    temp = "\n".join(
        f"  {name}_temp_path {root / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    (root / "nginx.conf").write_text(
        f"""{user}
daemon off;
worker_processes 1;
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
{temp}
  upstream app {{ server {upstream.removeprefix("http://")}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream off;
      proxy_read_timeout 10s;
    }}
  }}
}}
"""
    )
    process = subprocess.Popen(
        [binary, "-e", str(root / "error.log"), "-c", str(root / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, "nginx")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _kill_workers(master: int, stop: threading.Event, killed: list[int]) -> None:
    rng = random.Random()
    while not stop.is_set() and len(killed) < KILLS:
        if stop.wait(rng.uniform(0.2, 0.6)):
            return
        workers = _workers(master)
        if len(workers) < 2:
            continue  # let uvicorn bring a killed one back first
        victim = rng.choice(workers)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(victim)


def _create(client: rc.Client, n: int) -> tuple[str, str, str]:
    """(key, resource id, how it ended) for one call."""
    try:
        response = client.post("/orders", json={"n": n})
    except httpx.TransportError as exc:
        result = rc.outcome(exc)
        ended = "error"
    else:
        result = rc.outcome(response)
        if response.status_code in (201, 303):
            ended = "made"
        elif result.in_progress:
            ended = "in progress"
        else:
            ended = f"status {response.status_code}"
    assert result.idempotency_key and result.resource_id
    return result.idempotency_key, result.resource_id, ended


def _run_load(url: str, master: int, orders: Path) -> None:
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_workers, args=(master, stop, killed))
    with rc.Client(base_url=url, timeout=5.0) as client:
        killer.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                calls = list(pool.map(lambda n: _create(client, n), range(CALLS)))
        finally:
            stop.set()
            killer.join()
        endings = Counter(ended for _, _, ended in calls)
        # Calls that did not hear "made" may still be running, or their worker
        # died with the claim: the key is taken over when its lease runs out,
        # and sending the call again (same key, same id) learns its result.
        time.sleep(5.5)
        for n, (key, rid, ended) in enumerate(calls):
            if ended == "made":
                continue
            again = client.post(
                "/orders",
                json={"n": n},
                headers={"Idempotency-Key": key, "X-Client-Resource-Id": rid},
            )
            assert again.status_code in (201, 303), again.status_code
    assert len(killed) >= 3, f"only {len(killed)} workers were killed"
    conn = sqlite3.connect(orders)
    made = [rid for (rid,) in conn.execute("SELECT rid FROM orders")]
    runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    conn.close()
    rids = [rid for _, rid, _ in calls]
    print(
        f"\n{CALLS} calls, {len(killed)} workers killed: {dict(endings)}; "
        f"handler runs {runs}, orders {len(made)}"
    )
    # Exactly once: one order per call, for every call, none twice.
    assert sorted(made) == sorted(rids)
    # The handler ran again only for calls a dead worker held: each kill
    # took at most the 8 requests in flight with it (the middleware's claim
    # kept every other retry from running the handler twice).
    assert runs <= CALLS + 8 * len(killed), runs
    # The two halves fit: a killed worker's calls still end "made" on the
    # client's default retries, nearly always; none ends as a plain failure.
    assert endings["made"] >= CALLS * 0.9, endings
    assert set(endings) <= {"made", "in progress", "error"}, endings


def test_killed_workers_keep_every_create_exactly_once(
    uvicorn_workers: tuple[str, int, Path],
) -> None:
    url, master, orders = uvicorn_workers
    _run_load(url, master, orders)


def test_killed_workers_behind_nginx_keep_every_create_exactly_once(
    uvicorn_workers: tuple[str, int, Path], tmp_path: Path
) -> None:
    url, master, orders = uvicorn_workers
    for proxied in _nginx(tmp_path, url):
        _run_load(proxied, master, orders)
