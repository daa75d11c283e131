"""Problem details (RFC 9457) answers and the Idempotency-Key parser."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

__all__ = ["BadKey", "parse_key", "send_problem"]


async def send_problem(
    send: Send,
    status: int,
    detail: str,
    *,
    code: str,
    retry_after: int | None = None,
) -> None:
    """Answer with ``application/problem+json``; ``code`` names the case."""
    body = json.dumps(
        {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
            "code": code,
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BadKey(ValueError):
    """An Idempotency-Key field the server cannot use; the text says why."""


def parse_key(values: list[bytes], *, header: str, max_length: int) -> str:
    """The key from the field's values: an sf-string, or the same unquoted.

    ``"abc"`` and ``abc`` are one key.  Quoted keys may hold spaces and
    ``\\"`` / ``\\\\`` escapes (RFC 8941 section 3.3.3); unquoted keys are
    visible ASCII without quotes.  Anything else raises :class:`BadKey`.
    """
    if len(values) > 1:
        raise BadKey(f"send one {header} field, got {len(values)}")
    raw = values[0].strip(b" \t")
    # Bound the work before looking at characters: a quoted key of
    # max_length characters is at most 2 * max_length + 2 bytes.
    if len(raw) > 2 * max_length + 2:
        raise BadKey(f"{header} is longer than {max_length} characters")
    if any(byte < 0x20 or byte > 0x7E for byte in raw):
        raise BadKey(f"{header} must be printable ASCII")
    text = raw.decode("ascii")
    key = _unquote(text, header) if text.startswith('"') else text
    if not key:
        raise BadKey(f"{header} is empty")
    if len(key) > max_length:
        raise BadKey(f"{header} is longer than {max_length} characters")
    if not text.startswith('"') and any(c in ' \t"' for c in key):
        raise BadKey(
            f"{header}: an unquoted key cannot hold spaces or quotes; "
            'send it as a quoted string ("...")'
        )
    return key


def _unquote(text: str, header: str) -> str:
    chars: list[str] = []
    escaped = False
    for index, char in enumerate(text[1:], start=1):
        if escaped:
            if char not in '"\\':
                raise BadKey(f'{header}: only \\" and \\\\ may be escaped')
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            if index != len(text) - 1:
                raise BadKey(f"{header}: nothing may follow the closing quote")
            return "".join(chars)
        else:
            chars.append(char)
    raise BadKey(f"{header}: the quoted key has no closing quote")
