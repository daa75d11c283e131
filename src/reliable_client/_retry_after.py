"""Parsing of the Retry-After response header (RFC 9110, section 10.2.3)."""

from __future__ import annotations

import re
from datetime import timezone
from email.utils import parsedate_to_datetime

__all__ = ["parse_retry_after"]

# delay-seconds is 1*DIGIT; many servers send a decimal, which we accept too.
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# An HTTP-date is short; anything longer is not one and is not worth parsing.
_MAX_DATE_LENGTH = 64


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the delay in seconds that ``value`` asks for, or ``None``.

    ``now`` is the current Unix time in seconds, used for the HTTP-date form.
    ``None`` means "no usable value": the header is absent, malformed (``abc``,
    ``1e999``), negative, or a date that cannot be read.  The caller then falls
    back to its own backoff.  A date in the past means "retry now" and gives
    ``0.0``.  Huge values are returned as they are (possibly ``inf``), so that
    the caller compares them with its ``max_retry_after`` and stops instead of
    sleeping.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        # A valid but absurd delay (say 400 digits) becomes inf: longer than
        # any max_retry_after, so the caller stops rather than sleeps.
        return float(text)
    if len(text) > _MAX_DATE_LENGTH or not text[0].isalpha():
        # Covers "-5", "1e999", "+3", "0x10", and other numbers in disguise.
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are always in GMT
        when = when.replace(tzinfo=timezone.utc)
    try:
        delay = when.timestamp() - now
    except (OverflowError, OSError, ValueError):  # pragma: no cover - platform
        return None
    return max(0.0, delay)
