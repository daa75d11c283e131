"""An enqueued call, checked and frozen into the bytes every delivery sends.

Everything a delivery needs is decided here, once: the method, the URL, the
body's exact bytes (JSON and form bodies encoded as httpx encodes them), the
headers, the Idempotency-Key and the resource id (set in the body field too
when the ``Idempotency`` asks for one).  Bad input is refused here, before
anything is stored, with an error naming the argument.
"""

from __future__ import annotations

import hashlib
import json as _json
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from .._idempotency import Idempotency
from .._uuid7 import uuid7_str
from ._model import NewEntry

__all__ = ["SECRET_HEADERS", "prepare"]

#: Request headers never stored: the relay's client brings its own auth.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
# Worked out from the stored body at delivery; a stored one could lie.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A host as urlsplit gives it (lower case): a name, or an IP address.
_HOST = re.compile(r"[a-z0-9.\-_~%]+|[0-9a-f:.]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
# What an Idempotency-Key may be (as the reference server accepts it).
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
MAX_GROUP = 255


def prepare(
    method: object,
    url: object,
    *,
    json: Any,
    content: object,
    data: object,
    headers: object,
    group: object,
    idempotency: Idempotency,
    max_body: int,
) -> tuple[NewEntry, bool]:
    """Check an ``enqueue`` call and build its entry; also return whether the
    caller set the Idempotency-Key (which makes the enqueue idempotent)."""
    method_ = _method(method)
    url_, endpoint = _url(url)
    group_ = _group(group)
    pairs = _headers(headers)
    body, media, payload = _body(json, content, data)
    names = {name.lower() for name, _ in pairs}
    if media is not None and "content-type" not in names:
        pairs.append(("Content-Type", media))
    caller_key = _find(pairs, idempotency.header)
    if caller_key is not None and not _KEY.fullmatch(caller_key):
        raise ValueError(
            f"enqueue(headers=...): the {idempotency.header} header must be 1 to "
            f"255 visible ASCII characters, got {caller_key!r}"
        )
    rid_header = idempotency.resource_id_header
    rid = _find(pairs, rid_header) if rid_header is not None else None
    field_name = idempotency.resource_id_field
    fill_field = False
    if field_name is not None and isinstance(payload, dict):
        value = payload.get(field_name)
        if value is None or value == "":
            fill_field = True
        elif rid is None and _is_scalar(value):
            rid = str(value)
    # The fingerprint is of the caller's own body, before any id is set in it.
    fingerprint = _fingerprint(method_, url_, body, group_)
    key = caller_key if caller_key is not None else _new(idempotency, "key")
    rid = rid if rid is not None else _new(idempotency, "resource id")
    if caller_key is None:
        pairs.append((idempotency.header, key))
    if rid_header is not None and _find(pairs, rid_header) is None:
        pairs.append((rid_header, rid))
    if fill_field and isinstance(payload, dict) and field_name is not None:
        body = _encode_json({**payload, field_name: rid})
    if body is not None and len(body) > max_body:
        raise ValueError(
            f"enqueue(): the body is {len(body)} bytes, over max_body={max_body}"
        )
    entry = NewEntry(
        id=uuid7_str(),
        idempotency_key=key,
        resource_id=rid,
        method=method_,
        url=url_,
        endpoint=endpoint,
        headers=tuple(pairs),
        body=body,
        fingerprint=fingerprint,
        group=group_,
    )
    return entry, caller_key is not None


def _method(method: object) -> str:
    if not isinstance(method, str):
        raise TypeError(
            f"enqueue(method=...) must be a str, got {type(method).__name__}"
        )
    if not _TOKEN.fullmatch(method):
        raise ValueError(
            f"enqueue(method=...) must be an HTTP method token, got {method!r}"
        )
    return method.upper()


def _url(url: object) -> tuple[str, str]:
    """The URL to store (as given) and its endpoint (``host/path``)."""
    if not isinstance(url, (str, httpx.URL)):
        raise TypeError(
            f"enqueue(url=...) must be a str or httpx.URL, got {type(url).__name__}"
        )
    text = str(url)
    if _CONTROL.search(text):
        raise ValueError("enqueue(url=...) holds a control character")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a bad port is a ValueError
        if not text.isascii():
            httpx.URL(text)  # an international host: as httpx reads it
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"enqueue(url=...) is not a valid URL: {exc}") from None
    if "@" in parts.netloc:
        raise ValueError(
            "enqueue(url=...) carries user info (user:password@): secrets are "
            "not stored in the outbox; give the relay's client its own auth"
        )
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (
        scheme in ("http", "https")
        and host
        and (
            _HOST.fullmatch(host) or not text.isascii()  # httpx checked that one
        )
    ):
        return text, f"{parts.netloc.lower()}{parts.path or '/'}"
    if scheme or parts.netloc or text.startswith("//") or not text.strip():
        raise ValueError(
            "enqueue(url=...) must be an absolute http(s) URL or a relative path "
            f"reference (no scheme, no host), got {_redacted(text)!r}"
        )
    return text, parts.path


def _redacted(text: str) -> str:
    return text.split("?", 1)[0][:200]


def _group(group: object) -> str | None:
    if group is None:
        return None
    if not isinstance(group, str):
        raise TypeError(
            f"enqueue(group=...) must be a str or None, got {type(group).__name__}"
        )
    if not group or len(group) > MAX_GROUP:
        raise ValueError(
            f"enqueue(group=...) must be 1 to {MAX_GROUP} characters, got {len(group)}"
        )
    if _CONTROL.search(group):
        raise ValueError(
            f"enqueue(group=...) must not contain control characters, got {group!r}"
        )
    return group


def _headers(headers: object) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items: Iterable[Any]
    if isinstance(headers, httpx.Headers):
        items = headers.multi_items()
    elif isinstance(headers, Mapping):
        items = headers.items()
    elif isinstance(headers, (list, tuple)):
        items = headers
    else:
        raise TypeError(
            "enqueue(headers=...) must be a mapping or a list of (name, value) "
            f"pairs, got {type(headers).__name__}"
        )
    pairs: list[tuple[str, str]] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(
                f"enqueue(headers=...) must hold (name, value) pairs, got {item!r}"
            )
        name, value = item
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"enqueue(headers=...): header names and values must be str, "
                f"got {name!r}: {type(value).__name__}"
            )
        if not _TOKEN.fullmatch(name):
            raise ValueError(
                f"enqueue(headers=...): {name!r} is not an HTTP header name"
            )
        lower = name.lower()
        if lower in SECRET_HEADERS:
            raise ValueError(
                f"enqueue(headers=...): the {name} header is a secret and is "
                "never stored in the outbox; give the relay's client its own auth"
            )
        if lower in _FRAMING_HEADERS:
            raise ValueError(
                f"enqueue(headers=...): {name} is worked out from the stored "
                "body at delivery; do not set it"
            )
        if _BAD_VALUE.search(value):
            raise ValueError(
                f"enqueue(headers=...): the value of {name} holds CR, LF or NUL"
            )
        pairs.append((name, value))
    return pairs


def _body(
    json: Any, content: object, data: object
) -> tuple[bytes | None, str | None, Any]:
    """The body's bytes, its media type (or None), and the JSON value."""
    given = [
        name
        for name, v in (("json", json), ("content", content), ("data", data))
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(f"enqueue(): give one body at most, got {' and '.join(given)}")
    if json is not None:
        return _encode_json(json), "application/json", json
    if content is not None:
        if isinstance(content, str):
            return content.encode("utf-8"), None, None
        if isinstance(content, (bytes, bytearray, memoryview)):
            return bytes(content), None, None
        raise TypeError(
            "enqueue(content=...) must be bytes or str: a generator, iterator, "
            f"file or stream ({type(content).__name__}) cannot be stored and "
            "sent again byte for byte"
        )
    if data is not None:
        if not isinstance(data, Mapping):
            raise TypeError(
                "enqueue(data=...) must be a mapping of form fields (use "
                f"content= for raw bytes), got {type(data).__name__}"
            )
        try:
            request = httpx.Request("POST", "http://outbox.invalid/", data=data)
        except TypeError as exc:
            raise TypeError(f"enqueue(data=...): {exc}") from None
        return request.read(), "application/x-www-form-urlencoded", None
    return None, None, None


def _encode_json(value: Any) -> bytes:
    # As httpx encodes json=: compact separators, UTF-8, no NaN.
    try:
        text = _json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    except TypeError as exc:
        raise TypeError(f"enqueue(json=...) is not JSON-serializable: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"enqueue(json=...): {exc}") from None
    return text.encode("utf-8")


def _find(pairs: list[tuple[str, str]], name: str) -> str | None:
    lower = name.lower()
    for key, value in pairs:
        if key.lower() == lower:
            return value
    return None


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _new(idempotency: Idempotency, what: str) -> str:
    value = idempotency.key_factory()
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"Idempotency.key_factory must return a non-empty str for the {what}, "
            f"got {value!r}"
        )
    return value


def _fingerprint(method: str, url: str, body: bytes | None, group: str | None) -> str:
    digest = hashlib.sha256()
    for part in (method, url, group or "", "" if body is None else "b"):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    digest.update(body or b"")
    return digest.hexdigest()


def parse_id(value: object) -> str:
    """An entry id (``uuid.UUID`` or its ``str()``) as stored."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"not an outbox entry id: {value[:64]!r}") from None
    raise TypeError(
        f"an outbox entry id is a uuid.UUID or its str(), got {type(value).__name__}"
    )
