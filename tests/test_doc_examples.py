"""Examples that cannot rot: every ```python block of the README and the docs
runs here, or says why not (``<!-- not run: reason -->`` just above it).

The examples talk to ``https://api.example``: a respx mock answers every
request to it (201 to a POST, 200 otherwise, a small JSON body).  A block
may use ``app`` or ``my_asgi_app``, a small ASGI app.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from reliable_client import otel, testing

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->\s*$")


def _blocks() -> Iterator[tuple[str, int, str, str | None]]:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            before = text[: match.start()].rstrip().splitlines()
            marker = NOT_RUN.search(before[-1]) if before else None
            line = text.count("\n", 0, match.start()) + 1
            yield (
                page.relative_to(ROOT).as_posix(),
                line,
                match.group(1),
                marker.group(1) if marker else None,
            )


BLOCKS = list(_blocks())


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b'{"id": "o-1"}'})


def _answer(request: httpx.Request) -> httpx.Response:
    status = 201 if request.method == "POST" else 200
    return httpx.Response(status, json={"id": "o-1", "state": "paid"})


@pytest.fixture
def api() -> Iterator[None]:
    with respx.mock(assert_all_called=False) as router:
        router.route(host="api.example").mock(side_effect=_answer)
        yield


def test_the_pages_have_examples() -> None:
    assert len(BLOCKS) >= 10
    assert {page for page, *_ in BLOCKS} >= {"README.md", "docs/index.md"}


@pytest.mark.parametrize(
    ("page", "line", "code", "reason"),
    BLOCKS,
    ids=[f"{page}:{line}" for page, line, _, _ in BLOCKS],
)
@pytest.mark.usefixtures("api")
def test_example_runs(page: str, line: int, code: str, reason: str | None) -> None:
    if reason is not None:
        # Not run, and says why: a signature with its defaults, a sketch.
        assert len(reason) > 10, f"{page}:{line}: give a reason it is not run"
        compile_if_python(code, reason)
        return
    namespace: dict[str, Any] = {"app": _asgi_app, "my_asgi_app": _asgi_app}
    try:
        with testing.testing_mode():  # retries sleep zero time
            exec(compile(code, f"{page}:{line}", "exec"), namespace)
    finally:
        otel.uninstrument()


def compile_if_python(code: str, reason: str) -> None:
    """A block kept out of the run must still be what it says: a signature
    (not valid Python) says so; anything else must at least compile."""
    if "signature" in reason:
        return
    compile(code, "<not run>", "exec")
