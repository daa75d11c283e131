"""Idempotency keys and client-generated resource ids for mutating requests."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ._context import outer_layer
from ._decision import KEYS_EXTENSION
from ._uuid7 import uuid7_pair_str, uuid7_str
from ._validation import check_methods, check_token

__all__ = ["Idempotency"]

_OWNER = "Idempotency"


@dataclass(frozen=True)
class Idempotency:
    """Which requests get an Idempotency-Key and a client-generated resource id.

    Every request whose method is in ``methods`` gets a fresh key and a fresh
    resource id (both UUIDv7 by default), set before the first attempt and
    therefore the same on every retry of that call.  A value the caller set
    (the header, or the body field) is never replaced; when the caller set the
    resource id in only one of the header and the field, that value is used for
    the other.

    Args:
        header: the key's header name (default ``"Idempotency-Key"``).
        methods: methods that get keys (default POST and PATCH).
        key_factory: makes a key and an id (default: UUIDv7 as a string).  Swap
            it for a server that wants another format, such as
            ``lambda: str(uuid.uuid4())``.
        resource_id_header: the resource id's header name (default
            ``"X-Client-Resource-Id"``), or ``None`` for no header.
        resource_id_field: a field to set in a JSON object body when absent
            (e.g. ``"id"``), or ``None`` (default) to leave bodies alone.
    """

    header: str = "Idempotency-Key"
    methods: Iterable[str] = frozenset({"POST", "PATCH"})
    key_factory: Callable[[], str] = field(default=uuid7_str, repr=False)
    resource_id_header: str | None = "X-Client-Resource-Id"
    resource_id_field: str | None = None

    _methods: frozenset[str] = field(init=False, repr=False, compare=False)
    _header_lower: bytes = field(init=False, repr=False, compare=False)
    _rid_header_lower: bytes | None = field(init=False, repr=False, compare=False)
    _header_raw: bytes = field(init=False, repr=False, compare=False)
    _rid_header_raw: bytes | None = field(init=False, repr=False, compare=False)
    _names: frozenset[bytes] = field(init=False, repr=False, compare=False)
    # Makes a fresh (key, resource id): chosen once, as it runs on every keyed
    # request; the default makes both under one lock.
    _new_pair: Callable[[], tuple[str, str]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        check_token(_OWNER, "header", self.header)
        methods = check_methods(_OWNER, "methods", self.methods)
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "_methods", methods)
        if not callable(self.key_factory):
            raise TypeError(
                f"{_OWNER}.key_factory must be a callable returning str, "
                f"got {type(self.key_factory).__name__}"
            )
        if self.resource_id_header is not None:
            check_token(_OWNER, "resource_id_header", self.resource_id_header)
        # Header names as httpx stores them, worked out once.
        rid_header = self.resource_id_header
        object.__setattr__(self, "_header_raw", self.header.encode("ascii"))
        object.__setattr__(self, "_header_lower", self._header_raw.lower())
        object.__setattr__(
            self, "_rid_header_raw", rid_header and rid_header.encode("ascii")
        )
        object.__setattr__(
            self, "_rid_header_lower", rid_header and rid_header.lower().encode()
        )
        object.__setattr__(
            self,
            "_names",
            frozenset(
                name for name in (self._header_lower, self._rid_header_lower) if name
            ),
        )
        object.__setattr__(
            self,
            "_new_pair",
            uuid7_pair_str if self.key_factory is uuid7_str else self._factory_pair,
        )
        if self.resource_id_field is not None and (
            not isinstance(self.resource_id_field, str) or not self.resource_id_field
        ):
            raise TypeError(
                f"{_OWNER}.resource_id_field must be a non-empty str or None, "
                f"got {self.resource_id_field!r}"
            )

    def _factory_pair(self) -> tuple[str, str]:
        """A fresh (key, resource id) from a user's ``key_factory``."""
        return self._make("key"), self._make("resource id")

    def _make(self, what: str) -> str:
        value = self.key_factory()
        if not isinstance(value, str) or not value:
            raise TypeError(
                f"{_OWNER}.key_factory must return a non-empty str for the {what}, "
                f"got {value!r}"
            )
        return value

    def apply(self, request: httpx.Request) -> None:
        """Give ``request`` its key and resource id, keeping the caller's."""
        headers = request.headers
        key, rid = _find(headers, self._names, self._header_lower)
        rid_in_header = rid is not None
        field_name = self.resource_id_field
        body: dict[str, Any] | None = None
        in_body = False
        if field_name is not None:
            body = _json_object(request)
            if body is not None:
                in_body = True
                value = body.get(field_name)
                if value is not None and value != "":
                    body = None  # the caller's own id stays as it is...
                    if rid is None and _is_scalar(value):
                        rid = str(value)  # ...and the header carries it too
        if key is None or rid is None:
            layer = outer_layer.get()
            if layer is None:
                pair = self._new_pair()
            else:
                # Inside @retry: attempts replay the keys sent before to the
                # same method and URL.
                pair = layer.journal.take(
                    request.method, str(request.url), self._new_pair
                )
            if key is None:
                key = pair[0]
                # Known absent: appended as httpx stores headers, no lookup.
                headers._list.append(
                    (self._header_raw, self._header_lower, key.encode())
                )
            rid = rid or pair[1]
        if not rid_in_header and self._rid_header_raw and self._rid_header_lower:
            headers._list.append(
                (self._rid_header_raw, self._rid_header_lower, rid.encode())
            )
        if body is not None and field_name is not None:
            body[field_name] = rid  # absent, null or empty: ours to fill
            _replace_json_body(request, body)
        # What outcome() and the decorator read back, whatever the headers
        # are called and wherever the id travels (if it travels at all).
        travels = rid_in_header or self._rid_header_raw or in_body
        request.extensions[KEYS_EXTENSION] = (
            self.header,
            key,
            rid if travels else None,
            id(request),  # which request got them: a redirect hop shares this dict
        )


def _find(
    headers: httpx.Headers, names: frozenset[bytes], key_name: bytes
) -> tuple[str | None, str | None]:
    """The values of the key's header and the resource id's (``names``, lower
    case), in one pass."""
    key = rid = None
    # httpx keeps (raw name, lower-case name, value) triples; one scan of them,
    # one set lookup each, costs less than a lookup per header.
    for entry in headers._list:
        if entry[1] in names:
            if entry[1] == key_name:
                key = entry[2].decode(headers.encoding)
            else:
                rid = entry[2].decode(headers.encoding)
    return key, rid


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _json_object(request: httpx.Request) -> dict[str, Any] | None:
    if not isinstance(request.stream, httpx.ByteStream):
        return None
    content_type = request.headers.get("Content-Type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        return None
    try:
        data = json.loads(request.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _replace_json_body(request: httpx.Request, body: dict[str, Any]) -> None:
    # Same encoding as httpx's json= (compact, UTF-8), so servers see no change
    # beyond the added field.
    content = json.dumps(
        body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")
    request.stream = httpx.ByteStream(content)
    request._content = content
    request.headers["Content-Length"] = str(len(content))
