from __future__ import annotations

import httpx

import reliable_client as rc
from reliable_client import testing

from .loopback import Close, LoopbackServer, Reply, Reset, Stall, BrokenBody, closed_port


def test_smoke(server: LoopbackServer, no_sleep: testing.TestingMode) -> None:
    server.script("/a", Close(), Reset(), Reply(200, body=b"fine"))
    server.script("/b", BrokenBody(), Reply(200, body=b"whole"))
    server.script("/c", Stall(1.0), Reply(200, body=b"late"))
    with rc.Client(base_url=server.url, timeout=0.3) as client:
        r = client.get("/a")
        assert r.text == "fine"
        print(rc.outcome(r))
        r = client.get("/b")
        assert r.text == "whole"
        print(rc.outcome(r))
        r = client.get("/c")
        print(rc.outcome(r))
    with rc.Client(base_url=f"http://127.0.0.1:{closed_port()}") as client:
        try:
            client.get("/")
        except httpx.ConnectError as exc:
            print(rc.outcome(exc), exc.__notes__)
