"""Errors of reliable_client's own.

Transport errors keep their httpx type: the caller gets what httpx would have
raised on the last attempt, with :func:`reliable_client.outcome` telling how
many attempts were made.  Errors of our own are only for what httpx has no
word for.
"""

from __future__ import annotations

__all__ = ["RetryError"]


class RetryError(Exception):
    """Base class of reliable_client's own errors."""
