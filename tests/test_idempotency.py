"""Idempotency keys and client-generated resource ids (contract: "Idempotency")."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx

import reliable_client as rc

from .callers import BASE, Caller

KEY = "Idempotency-Key"
RID = "X-Client-Resource-Id"

pytestmark = pytest.mark.usefixtures("no_sleep")


def assert_uuid7(value: str | None) -> uuid.UUID:
    assert value is not None
    parsed = uuid.UUID(value)
    assert parsed.version == 7
    assert str(parsed) == value  # the bare canonical form
    return parsed


def sent(route: respx.Route, index: int = -1) -> httpx.Request:
    request: httpx.Request = route.calls[index].request
    return request


# -- which requests get keys ------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_post_and_patch_get_key_and_resource_id(
    make: Callable[..., Caller], api: respx.MockRouter, method: str
) -> None:
    route = api.route(method=method, path="/items").mock(
        return_value=httpx.Response(201)
    )
    before = time.time()
    response = await make().request(method, f"{BASE}/items", json={"a": 1})
    request = sent(route)
    key = assert_uuid7(request.headers.get(KEY))
    rid = assert_uuid7(request.headers.get(RID))
    assert key != rid
    # A UUIDv7 carries the Unix time in ms in its top 48 bits: the call's time.
    stamp = (key.int >> 80) / 1000
    assert before - 1 <= stamp <= time.time() + 1
    assert response.request.headers[KEY] == str(key)
    assert response.request.headers[RID] == str(rid)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"])
async def test_other_methods_get_no_key(
    make: Callable[..., Caller], api: respx.MockRouter, method: str
) -> None:
    route = api.route(method=method, path="/items").mock(
        return_value=httpx.Response(200)
    )
    response = await make().request(method, f"{BASE}/items")
    assert KEY not in sent(route).headers
    assert RID not in sent(route).headers
    result = rc.outcome(response)
    assert result.idempotency_key is None
    assert result.resource_id is None


async def test_no_keys_with_idempotency_none(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(return_value=httpx.Response(201))
    response = await make(idempotency=None).request(
        "POST", f"{BASE}/items", json={"a": 1}
    )
    assert KEY not in sent(route).headers
    assert RID not in sent(route).headers
    assert rc.outcome(response).idempotency_key is None


# -- same on every attempt, fresh for every call ----------------------------


async def test_same_key_and_id_on_every_attempt(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.ReadError("reset"),
            httpx.Response(201),
        ]
    )
    response = await make().request("POST", f"{BASE}/items", json={"a": 1})
    assert response.status_code == 201
    assert route.call_count == 3
    keys = {call.request.headers[KEY] for call in route.calls}
    rids = {call.request.headers[RID] for call in route.calls}
    assert len(keys) == 1
    assert len(rids) == 1
    result = rc.outcome(response)
    assert result.idempotency_key == keys.pop()
    assert result.resource_id == rids.pop()
    assert result.attempts == 3


async def test_fresh_key_and_id_per_call(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(return_value=httpx.Response(201))
    caller = make()
    for _ in range(100):
        await caller.request("POST", f"{BASE}/items", json={})
    keys = [call.request.headers[KEY] for call in route.calls]
    rids = [call.request.headers[RID] for call in route.calls]
    assert len(set(keys)) == 100
    assert len(set(rids)) == 100
    assert not set(keys) & set(rids)


# -- the caller's values are never replaced ---------------------------------


async def test_callers_headers_are_kept_on_every_attempt(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(201)]
    )
    response = await make().request(
        "POST",
        f"{BASE}/items",
        json={},
        headers={"idempotency-key": "caller-key", RID: "caller-rid"},
    )
    assert route.call_count == 2
    for call in route.calls:
        assert call.request.headers.get_list(KEY) == ["caller-key"]
        assert call.request.headers.get_list(RID) == ["caller-rid"]
    result = rc.outcome(response)
    assert result.idempotency_key == "caller-key"
    assert result.resource_id == "caller-rid"


async def test_callers_key_kept_and_id_still_generated(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(return_value=httpx.Response(201))
    await make().request("POST", f"{BASE}/items", headers={KEY: "mine"})
    assert sent(route).headers[KEY] == "mine"
    assert_uuid7(sent(route).headers.get(RID))


# -- the resource id in a JSON body ------------------------------------------


def body_of(request: httpx.Request) -> Any:
    assert request.headers["Content-Length"] == str(len(request.content))
    return json.loads(request.content)


async def test_resource_id_field_set_when_absent(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(
        side_effect=[httpx.ReadError("reset"), httpx.Response(201)]
    )
    caller = make(idempotency=rc.Idempotency(resource_id_field="id"))
    response = await caller.request(
        "POST", f"{BASE}/items", json={"name": "Zoë", "n": 1}
    )
    assert route.call_count == 2
    bodies = [body_of(call.request) for call in route.calls]
    rid = sent(route).headers[RID]
    assert_uuid7(rid)
    assert bodies == [{"name": "Zoë", "n": 1, "id": rid}] * 2
    assert rc.outcome(response).resource_id == rid
    assert response.request.headers[RID] == rid


async def test_resource_id_field_with_json_suffix_media_type(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.patch("/items/1").mock(return_value=httpx.Response(200))
    caller = make(idempotency=rc.Idempotency(resource_id_field="id"))
    await caller.request(
        "PATCH",
        f"{BASE}/items/1",
        content=b'{"name": "x"}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert body_of(sent(route)) == {"name": "x", "id": sent(route).headers[RID]}


async def test_callers_field_kept_and_used_for_the_header(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(return_value=httpx.Response(201))
    caller = make(idempotency=rc.Idempotency(resource_id_field="id"))
    response = await caller.request(
        "POST", f"{BASE}/items", json={"id": "order-7", "name": "x"}
    )
    assert body_of(sent(route)) == {"id": "order-7", "name": "x"}
    assert sent(route).headers[RID] == "order-7"
    assert rc.outcome(response).resource_id == "order-7"
    assert_uuid7(sent(route).headers[KEY])


async def test_callers_header_used_for_the_field(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(return_value=httpx.Response(201))
    caller = make(idempotency=rc.Idempotency(resource_id_field="id"))
    await caller.request(
        "POST", f"{BASE}/items", json={"name": "x"}, headers={RID: "hdr-1"}
    )
    assert sent(route).headers[RID] == "hdr-1"
    assert body_of(sent(route)) == {"name": "x", "id": "hdr-1"}


async def test_callers_non_string_field_matches_the_header(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    """The contract: the id in the header and in the body field is the same
    value.  A caller's numeric id is kept in the body, so the header must say
    the same (not a fresh UUID)."""
    route = api.post("/items").mock(return_value=httpx.Response(201))
    caller = make(idempotency=rc.Idempotency(resource_id_field="id"))
    await caller.request("POST", f"{BASE}/items", json={"id": 5})
    assert body_of(sent(route)) == {"id": 5}
    assert sent(route).headers.get(RID) == "5"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"plain text id=1", "text/plain"),
        (b"[1, 2, 3]", "application/json"),
        (b'"just a string"', "application/json"),
        (b"{not json", "application/json"),
        (b'{"a": 1}', "application/octet-stream"),
    ],
)
async def test_resource_id_field_leaves_other_bodies_alone(
    make: Callable[..., Caller],
    api: respx.MockRouter,
    content: bytes,
    content_type: str,
) -> None:
    route = api.post("/items").mock(return_value=httpx.Response(201))
    caller = make(idempotency=rc.Idempotency(resource_id_field="id"))
    await caller.request(
        "POST", f"{BASE}/items", content=content, headers={"Content-Type": content_type}
    )
    request = sent(route)
    assert request.content == content
    assert request.headers["Content-Length"] == str(len(content))
    assert_uuid7(request.headers.get(RID))


async def test_resource_id_field_off_by_default(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(return_value=httpx.Response(201))
    await make().request("POST", f"{BASE}/items", json={"name": "x"})
    assert body_of(sent(route)) == {"name": "x"}


# -- configuration -----------------------------------------------------------


async def test_custom_header_name(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(
        side_effect=[httpx.ReadError("reset"), httpx.Response(201)]
    )
    caller = make(idempotency=rc.Idempotency(header="X-Request-Key"))
    response = await caller.request("POST", f"{BASE}/items", json={})
    # Keyed by the custom header, so the ReadError was retried.
    assert route.call_count == 2
    keys = {call.request.headers.get("X-Request-Key") for call in route.calls}
    assert len(keys) == 1
    key = keys.pop()
    assert_uuid7(key)
    assert KEY not in sent(route).headers
    assert rc.outcome(response).idempotency_key == key


async def test_custom_methods(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    put = api.put("/items/1").mock(return_value=httpx.Response(200))
    post = api.post("/items").mock(
        side_effect=[httpx.ReadError("reset"), httpx.Response(201)]
    )
    caller = make(idempotency=rc.Idempotency(methods={"PUT"}))
    await caller.request("PUT", f"{BASE}/items/1", json={})
    assert_uuid7(sent(put).headers.get(KEY))
    assert_uuid7(sent(put).headers.get(RID))
    with pytest.raises(httpx.ReadError):
        await caller.request("POST", f"{BASE}/items", json={})
    assert KEY not in sent(post).headers
    assert post.call_count == 1  # unkeyed POST: not retried


async def test_custom_key_factory(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(return_value=httpx.Response(201))
    caller = make(idempotency=rc.Idempotency(key_factory=lambda: str(uuid.uuid4())))
    await caller.request("POST", f"{BASE}/items")
    assert uuid.UUID(sent(route).headers[KEY]).version == 4
    assert uuid.UUID(sent(route).headers[RID]).version == 4


async def test_no_resource_id_header(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(return_value=httpx.Response(201))
    caller = make(idempotency=rc.Idempotency(resource_id_header=None))
    response = await caller.request("POST", f"{BASE}/items")
    assert_uuid7(sent(route).headers.get(KEY))
    assert RID not in sent(route).headers
    assert rc.outcome(response).resource_id is None


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"header": "bad header"}, ValueError, "header"),
        ({"header": 5}, TypeError, "header"),
        ({"methods": "POST"}, TypeError, "methods"),
        ({"methods": {"post"}}, ValueError, "methods"),
        ({"key_factory": 42}, TypeError, "key_factory"),
        ({"key_factory": "uuid4"}, TypeError, "key_factory"),
        ({"resource_id_header": "bad header"}, ValueError, "resource_id_header"),
        ({"resource_id_field": ""}, TypeError, "resource_id_field"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(
    kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field):
        rc.Idempotency(**kwargs)


@pytest.mark.parametrize("bad", ["", 123, None, b"bytes"])
async def test_key_factory_bad_result_fails_at_request_time(
    make: Callable[..., Caller], api: respx.MockRouter, bad: object
) -> None:
    route = api.post("/items").mock(return_value=httpx.Response(201))
    caller = make(idempotency=rc.Idempotency(key_factory=lambda: bad))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="key_factory"):
        await caller.request("POST", f"{BASE}/items")
    assert route.call_count == 0
    # A GET does not ask the factory, so it still works.
    api.get("/items").mock(return_value=httpx.Response(200))
    assert (await caller.request("GET", f"{BASE}/items")).status_code == 200


# -- readable by the caller --------------------------------------------------


async def test_key_readable_from_an_exception(
    make: Callable[..., Caller], api: respx.MockRouter
) -> None:
    route = api.post("/items").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(httpx.ConnectError) as excinfo:
        await make().request("POST", f"{BASE}/items")
    result = rc.outcome(excinfo.value)
    assert result.attempts == 3
    assert result.idempotency_key == sent(route).headers[KEY]
    assert result.resource_id == sent(route).headers[RID]


def test_plain_httpx_client_with_retry_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ReadError("reset", request=request)
        return httpx.Response(201)

    transport = rc.RetryTransport(httpx.MockTransport(handler))
    with httpx.Client(transport=transport) as client:
        response = client.post(f"{BASE}/items", json={"a": 1})
        get = client.get(f"{BASE}/items")
    assert response.status_code == 201
    assert len(seen) == 3
    assert seen[0].headers[KEY] == seen[1].headers[KEY]
    assert seen[0].headers[RID] == seen[1].headers[RID]
    key = assert_uuid7(seen[0].headers[KEY])
    assert response.request.headers[KEY] == str(key)
    assert rc.outcome(response).idempotency_key == str(key)
    assert rc.outcome(response).attempts == 2
    assert KEY not in seen[2].headers
    assert rc.outcome(get).idempotency_key is None


async def test_plain_async_httpx_client_with_retry_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201)

    transport = rc.AsyncRetryTransport(
        httpx.MockTransport(handler),
        idempotency=rc.Idempotency(resource_id_field="id"),
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.post(f"{BASE}/items", json={"a": 1})
    assert len(seen) == 2
    assert seen[0].headers[KEY] == seen[1].headers[KEY]
    rid = seen[1].headers[RID]
    assert json.loads(seen[1].content) == {"a": 1, "id": rid}
    assert rc.outcome(response).resource_id == rid
