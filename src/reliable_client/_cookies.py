"""Cookies across retries: a discarded response's ``Set-Cookie`` counts.

httpx puts every response's cookies in the client's jar, and builds a
request's ``Cookie`` header once, when the request is made.  A retry is the
same request sent again, so without help it would still carry the cookies of
before the discarded response (a sticky-session or CSRF cookie set by a 503
would never reach the server).  Before a retry, the cookies that the discarded
response (and its redirect hops) set are taken from the jar again: changed
values replace the old ones, deleted cookies leave, the others stay.  A
``Cookie`` header the caller set (it holds what the jar does not) is left as
it is, as httpx would send it.
"""

from __future__ import annotations

import httpx

__all__ = ["refresh_cookie_header"]


def _set_names(response: httpx.Response) -> set[str]:
    names = set()
    for hop in (*response.history, response):
        for value in hop.headers.get_list("set-cookie"):
            name = value.split("=", 1)[0].strip()
            if name:
                names.add(name)
    return names


def _pairs(header: str | None) -> list[tuple[str, str]]:
    pairs = []
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            pairs.append((name, value))
    return pairs


def refresh_cookie_header(
    request: httpx.Request, jar: httpx.Cookies, replaced: httpx.Response
) -> None:
    """Update ``request``'s ``Cookie`` header with the jar's values of the
    cookies that ``replaced`` set (nothing to do when it set none)."""
    names = _set_names(replaced)
    if not names:
        return
    # What the jar sends to this URL now (domain, path, secure and expiry
    # rules applied by the standard library's cookie jar).
    scratch = httpx.Request(request.method, request.url)
    jar.set_cookie_header(scratch)
    now = _pairs(scratch.headers.get("Cookie"))
    kept = [
        pair for pair in _pairs(request.headers.get("Cookie")) if pair[0] not in names
    ]
    if dict(kept) != {name: value for name, value in now if name not in names}:
        # Not the jar's header: the caller's own Cookie header, which httpx
        # would send unchanged (the jar never adds to one).
        return
    pairs = kept + [pair for pair in now if pair[0] in names]
    if pairs:
        request.headers["Cookie"] = "; ".join(
            f"{name}={value}" for name, value in pairs
        )
    else:
        request.headers.pop("Cookie", None)
