"""Outbox construction and enqueue: what is stored, and what is refused."""

from __future__ import annotations

import io
import itertools
import json
import uuid
from pathlib import Path

import httpx
import pytest

from reliable_client import Idempotency, RetryPolicy
from reliable_client.outbox import DEFAULT_REDELIVERY, Outbox, OutboxError


@pytest.fixture
def outbox(sqlite_target: str) -> Outbox:
    return Outbox(sqlite_target)


def test_an_entry_is_pending_keyed_and_readable_by_its_id(outbox: Outbox) -> None:
    entry = outbox.enqueue("post", "https://api.example/pay?x=1", json={"amount": 5})
    assert entry.state == "pending" and entry.method == "POST"
    assert entry.url == "https://api.example/pay?x=1" and entry.group is None
    assert uuid.UUID(entry.idempotency_key).version == 7
    assert uuid.UUID(entry.resource_id).version == 7
    assert entry.id.version == 7 and entry.idempotency_key != entry.resource_id
    assert (entry.attempts, entry.deliveries, entry.status) == (0, 0, None)
    assert entry.delivered_at is None and entry.created_at > 1.7e9
    assert outbox.get(entry.id) == entry
    assert outbox.get(str(entry.id)) == entry
    assert outbox.get(uuid.uuid4()) is None
    with pytest.raises(ValueError, match="not an outbox entry id"):
        outbox.get("nope")
    with pytest.raises(TypeError, match=r"uuid\.UUID"):
        outbox.get(5)  # type: ignore[arg-type]
    assert outbox.stats()["pending"] == 1


def test_two_entries_never_share_a_key_or_id(outbox: Outbox) -> None:
    entries = [outbox.enqueue("POST", "/p", json={"n": n}) for n in range(50)]
    keys = {e.idempotency_key for e in entries} | {e.resource_id for e in entries}
    assert len(keys) == 100


def test_a_callers_key_makes_enqueue_idempotent(outbox_target: str) -> None:
    outbox = Outbox(outbox_target)
    headers = {"Idempotency-Key": "order-77"}
    first = outbox.enqueue("POST", "/orders", json={"n": 1}, headers=headers, group="g")
    again = outbox.enqueue(
        "POST", "/orders", json={"n": 1}, headers={**headers, "X-Other": "1"}, group="g"
    )
    assert again.id == first.id and again.idempotency_key == "order-77"
    assert again.resource_id == first.resource_id
    assert outbox.stats()["pending"] == 1
    for change in (
        {"method": "PUT"},
        {"url": "/elsewhere"},
        {"json": {"n": 2}},
        {"group": "h"},
        {"group": None},
    ):
        call = {"method": "POST", "url": "/orders", "json": {"n": 1}, "group": "g"}
        call.update(change)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"order-77.*another method, URL, body"):
            outbox.enqueue(headers=headers, **call)  # type: ignore[arg-type]
    assert outbox.stats()["pending"] == 1


def test_the_callers_resource_id_is_kept_in_header_and_field(
    sqlite_target: str,
) -> None:
    outbox = Outbox(sqlite_target, idempotency=Idempotency(resource_id_field="id"))
    from_header = outbox.enqueue(
        "POST", "/p", json={"a": 1}, headers={"X-Client-Resource-Id": "rid-1"}
    )
    from_field = outbox.enqueue("POST", "/p", json={"a": 1, "id": "rid-2"})
    filled = outbox.enqueue("POST", "/p", json={"a": 1, "id": None})
    assert from_header.resource_id == "rid-1"
    assert from_field.resource_id == "rid-2"
    assert uuid.UUID(filled.resource_id).version == 7


def test_keys_come_from_the_idempotency_given(sqlite_target: str) -> None:
    counter = itertools.count()
    idempotency = Idempotency(
        header="X-Key",
        resource_id_header=None,
        key_factory=lambda: f"k{next(counter)}",
    )
    outbox = Outbox(sqlite_target, idempotency=idempotency)
    entry = outbox.enqueue("DELETE", "https://api.example/things/1")
    assert (entry.idempotency_key, entry.resource_id) == ("k0", "k1")
    bad = Outbox(sqlite_target, idempotency=Idempotency(key_factory=lambda: ""))
    with pytest.raises(TypeError, match="key_factory must return a non-empty str"):
        bad.enqueue("POST", "/p")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer x"},
        {"authorization": "Basic eA=="},
        {"Proxy-Authorization": "Basic eA=="},
        [("Cookie", "session=1")],
    ],
)
def test_secret_headers_are_refused(outbox: Outbox, headers: object) -> None:
    with pytest.raises(ValueError, match="secret and is never stored"):
        outbox.enqueue("POST", "/p", headers=headers)
    assert outbox.stats()["pending"] == 0


def test_urls_with_user_info_are_refused(outbox: Outbox) -> None:
    with pytest.raises(ValueError, match="user info"):
        outbox.enqueue("POST", "https://user:pass@api.example/p")
    with pytest.raises(ValueError, match="user info"):
        outbox.enqueue("POST", "https://token@api.example/p")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example/x",
        "http:///no-host",
        "//api.example/p",
        "",
        "  ",
        "mailto:a@b",
    ],
)
def test_urls_that_are_not_http_or_relative_paths_are_refused(
    outbox: Outbox, url: str
) -> None:
    with pytest.raises(ValueError, match=r"url=\.\.\."):
        outbox.enqueue("POST", url)


def test_relative_paths_and_httpx_urls_are_accepted(outbox: Outbox) -> None:
    assert outbox.enqueue("POST", "/p?x=1").url == "/p?x=1"
    assert outbox.enqueue("POST", "things").url == "things"
    url = httpx.URL("http://api.example:8080/a")
    assert outbox.enqueue("POST", url).url == "http://api.example:8080/a"
    with pytest.raises(TypeError, match=r"url=\.\.\.\) must be a str"):
        outbox.enqueue("POST", b"/p")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["", "GE T", "POST\r\n", "PÖST"])
def test_invalid_methods_are_refused(outbox: Outbox, method: str) -> None:
    with pytest.raises(ValueError, match="HTTP method token"):
        outbox.enqueue(method, "/p")
    with pytest.raises(TypeError, match=r"method=\.\.\.\) must be a str"):
        outbox.enqueue(None, "/p")  # type: ignore[arg-type]


def _generator() -> object:
    yield b"a"


@pytest.mark.parametrize(
    "content",
    [_generator(), iter([b"a"]), io.BytesIO(b"abc"), 12],
    ids=["generator", "iterator", "file", "int"],
)
def test_bodies_that_cannot_be_replayed_are_a_type_error(
    outbox: Outbox, content: object
) -> None:
    with pytest.raises(TypeError, match=r"content=.*bytes or str"):
        outbox.enqueue("POST", "/p", content=content)  # type: ignore[arg-type]


def test_an_open_file_is_refused(outbox: Outbox, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with open(tmp_path / "f", "rb") as file, pytest.raises(TypeError, match="file"):
        outbox.enqueue("POST", "/p", content=file)  # type: ignore[arg-type]


def test_body_size_is_capped_by_max_body(sqlite_target: str) -> None:
    outbox = Outbox(sqlite_target, max_body=10)
    assert outbox.enqueue("POST", "/p", content=b"x" * 10).state == "pending"
    with pytest.raises(ValueError, match="11 bytes, over max_body=10"):
        outbox.enqueue("POST", "/p", content=b"x" * 11)
    with pytest.raises(ValueError, match="over max_body"):
        outbox.enqueue("POST", "/p", json={"a": "long enough"})


def test_body_forms(outbox: Outbox) -> None:
    assert outbox.enqueue("POST", "/p", content="é").state == "pending"
    assert outbox.enqueue("POST", "/p", data={"a": "1", "b": ["2", "3"]})
    with pytest.raises(TypeError, match=r"data=.*mapping of form fields"):
        outbox.enqueue("POST", "/p", data=b"raw")
    with pytest.raises(ValueError, match="one body at most, got json and content"):
        outbox.enqueue("POST", "/p", json={}, content=b"x")
    with pytest.raises(TypeError, match="not JSON-serializable"):
        outbox.enqueue("POST", "/p", json={"when": object()})
    with pytest.raises(ValueError, match="json="):
        outbox.enqueue("POST", "/p", json={"x": float("nan")})


@pytest.mark.parametrize(
    ("headers", "error", "message"),
    [
        ({"Bad Name": "x"}, ValueError, "not an HTTP header name"),
        ({"X-A": "a\r\nX-B: b"}, ValueError, "CR, LF or NUL"),
        ({"X-A": 1}, TypeError, "must be str"),
        ({"Content-Length": "3"}, ValueError, "worked out from the stored body"),
        ({"Transfer-Encoding": "chunked"}, ValueError, "worked out"),
        ([("X-A",)], TypeError, r"\(name, value\) pairs"),
        ("X-A: 1", TypeError, "mapping or a list"),
        ({"Idempotency-Key": "has space"}, ValueError, "visible ASCII"),
    ],
)
def test_bad_headers_are_refused_naming_them(
    outbox: Outbox, headers: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        outbox.enqueue("POST", "/p", headers=headers)


def test_headers_in_every_form(outbox: Outbox) -> None:
    for headers in (
        {"X-A": "1"},
        [("X-A", "1"), ("X-A", "2")],
        httpx.Headers({"X-A": "1"}),
    ):
        assert outbox.enqueue("POST", "/p", headers=headers).state == "pending"


def test_bad_groups(outbox: Outbox) -> None:
    with pytest.raises(ValueError, match=r"group=.*1 to 255"):
        outbox.enqueue("POST", "/p", group="")
    with pytest.raises(TypeError, match=r"group=.*str or None"):
        outbox.enqueue("POST", "/p", group=7)  # type: ignore[arg-type]
    for bad in ("a\x00b", "line\nbreak"):  # PostgreSQL's text cannot hold NUL
        with pytest.raises(ValueError, match=r"group=.*control characters"):
            outbox.enqueue("POST", "/p", group=bad)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"lease": 0}, ValueError, "Outbox.lease"),
        ({"lease": "30"}, TypeError, "Outbox.lease"),
        ({"max_body": 0}, ValueError, "Outbox.max_body"),
        ({"max_response_body": -1}, ValueError, "max_response_body"),
        ({"retention": -1.0}, ValueError, "Outbox.retention"),
        ({"idempotency": None}, TypeError, "Outbox.idempotency"),
        ({"redelivery": False}, TypeError, "redelivery=.*RetryPolicy"),
        (
            {"redelivery": RetryPolicy(deadline=90_000.0)},
            ValueError,
            "deadline must be at most 86400",
        ),
        ({"durable": 1}, TypeError, "Outbox.durable"),
        ({"timeout": 0}, ValueError, "Outbox.timeout"),
        ({"on_result": "print"}, TypeError, "on_result must be callable"),
    ],
)
def test_bad_settings_name_the_field(
    sqlite_target: str, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Outbox(sqlite_target, **kwargs)  # type: ignore[arg-type]


def test_a_redelivery_policy_without_deadline_gets_the_23_hour_one(
    sqlite_target: str,
) -> None:
    outbox = Outbox(sqlite_target, redelivery=RetryPolicy(max_attempts=3))
    assert outbox._redelivery.deadline == DEFAULT_REDELIVERY.deadline == 82_800.0
    assert DEFAULT_REDELIVERY.backoff_max == 3_600.0


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ("mysql://db/app", ValueError, "neither a SQLite file path nor a postgresql"),
        ("sqlite://", ValueError, "names no SQLite file"),
        ("", ValueError, "neither a SQLite"),
        (42, TypeError, "must be a path"),
    ],
)
def test_bad_targets(target: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Outbox(target)


def test_a_target_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutboxError, match=r"cannot open outbox '.*file/app\.db'"):
        Outbox(str(tmp_path / "file" / "app.db"))
    with pytest.raises(OutboxError, match=r"cannot open outbox 'missing.db': no such"):
        Outbox("missing.db", create=False)


def test_sqlite_url_and_pathlike_targets(tmp_path: Path) -> None:
    by_url = Outbox(f"sqlite://{tmp_path / 'a.db'}")
    by_path = Outbox(tmp_path / "a.db")
    entry = by_url.enqueue("POST", "/p")
    assert by_path.get(entry.id) == entry
    assert repr(by_path).startswith("Outbox(") and by_path.name.endswith("a.db")


def test_a_json_body_is_stored_as_httpx_encodes_it(sqlite_target: str) -> None:
    outbox = Outbox(sqlite_target, idempotency=Idempotency(resource_id_field="id"))
    entry = outbox.enqueue("POST", "/p", json={"name": "é", "n": [1, 2]})
    stored = outbox._store.claim("t", 1, 30.0)[0]
    expected = dict(json.loads(httpx.Request("POST", "/", json={"name": "é"}).content))
    assert expected == {"name": "é"}
    assert json.loads(stored.body or b"") == {
        "name": "é",
        "n": [1, 2],
        "id": entry.resource_id,
    }
    headers = dict(stored.headers)
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == entry.idempotency_key
    assert headers["X-Client-Resource-Id"] == entry.resource_id
