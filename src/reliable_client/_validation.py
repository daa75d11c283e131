"""Small validators shared by the value objects; each error names its field."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

__all__ = [
    "check_bool",
    "check_int",
    "check_methods",
    "check_number",
    "check_token",
]

# RFC 9110 token characters, upper case for methods.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Z]+")


def _type_name(value: object) -> str:
    return type(value).__name__


def check_bool(owner: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}.{name} must be a bool, got {_type_name(value)}")
    return value


def check_int(owner: str, name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.{name} must be an int, got {_type_name(value)}")
    if value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value}")
    return value


def check_number(
    owner: str,
    name: str,
    value: object,
    *,
    minimum: float = 0.0,
    allow_minimum: bool = True,
) -> float:
    """A finite real number >= (or >) ``minimum``, returned as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}.{name} must be a number, got {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{owner}.{name} must be finite, got {value!r}")
    if number < minimum or (number == minimum and not allow_minimum):
        relation = ">=" if allow_minimum else ">"
        raise ValueError(f"{owner}.{name} must be {relation} {minimum}, got {value!r}")
    return number


def check_token(owner: str, name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{owner}.{name} must be a str, got {_type_name(value)}")
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{owner}.{name} must be an HTTP header name, got {value!r}")
    return value


def check_methods(owner: str, name: str, value: object) -> frozenset[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"{owner}.{name} must be a collection of method names such as "
            f"{{'GET', 'PUT'}}, got {_type_name(value)}"
        )
    methods = frozenset(value)
    for method in methods:
        if not isinstance(method, str):
            raise TypeError(
                f"{owner}.{name} must hold str method names, got {method!r}"
            )
        if not _METHOD.fullmatch(method):
            raise ValueError(
                f"{owner}.{name}: {method!r} is not an upper-case HTTP method token"
            )
    return methods
