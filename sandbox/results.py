"""Turns a handler's return value into JSON bytes; the value is untrusted.

Plain JSON only: None, bool, int within 64 bits, finite float, str, list/tuple, and dict with
str keys, no cycles, at most `max_depth` deep and `max_bytes` long. Anything else is a
ResultError that says what the value is and where it sits: `value['items'][3]: set is not
JSON`. The checks look at exact types only and never call `repr`, `str`, `==` or `hash` on
the handler's objects (that would run handler code here); messages name types, and every
part of a message is clipped, so a message stays small whatever the value.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from handlerbox.sandbox.errors import ResultError

MAX_DEPTH = 100

INT_MIN, INT_MAX = -(2**63), 2**64 - 1
"""The integers the host's JSON parser (orjson) carries exactly: signed and unsigned 64-bit.
Beyond them it would read a float (2**64 + 1) or fail; so the worker refuses them."""

_NAME_CHARS = 80  # characters kept of a type name or a key in a message

_SCALARS = (str, bool, type(None))


def to_json_bytes(value: Any, max_bytes: int, max_depth: int = MAX_DEPTH) -> bytes:
    """Validate `value` as plain bounded JSON and encode it compactly as UTF-8."""
    _Checker(max_bytes, max_depth).check(value, "value", 0)
    try:
        # The checker has refused NaN, Infinity, big ints, non-str keys, cycles and depth;
        # what is left for orjson to refuse is a str that is not valid Unicode.
        encoded = orjson.dumps(value)
    except TypeError as exc:  # e.g. "str is not valid UTF-8: surrogates not allowed"
        raise ResultError(f"value: cannot be encoded as JSON ({str(exc)[:200]})") from None
    if len(encoded) > max_bytes:
        raise ResultError(f"value: result is {len(encoded)} bytes, over the limit of "
                          f"{max_bytes}")
    return encoded


class _Checker:
    """Walks the value once (recursion bounded by max_depth), counting an estimate of the size
    so a huge result fails before it is encoded."""

    def __init__(self, max_bytes: int, max_depth: int) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.size = 0
        self.path_ids: set[int] = set()

    def check(self, value: Any, where: str, depth: int) -> None:
        kind = type(value)
        if kind in _SCALARS:
            self._grow(len(value) if kind is str else 8, where)
            return
        if kind is int:
            _check_int(value, where)
            self._grow(8, where)
            return
        if kind is float:
            if not math.isfinite(value):
                raise ResultError(f"{where}: {value!r} is not JSON (NaN and Infinity are not)")
            self._grow(8, where)
            return
        if kind not in (list, tuple, dict):
            raise ResultError(f"{where}: {_type_name(value)} is not JSON")
        if depth >= self.max_depth:
            raise ResultError(f"{where}: nested deeper than {self.max_depth} levels")
        if id(value) in self.path_ids:
            raise ResultError(f"{where}: contains itself (a cycle)")
        self.path_ids.add(id(value))
        # Scalars are counted inline (this loop is on every dispatch's path); the limit is
        # checked before each nested container and after each container's scalars.
        size = self.size + 2
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    raise ResultError(f"{where}: key {_describe(key)}, JSON object keys "
                                      "must be strings")
                item_kind = type(item)
                if item_kind is str:
                    size += len(key) + len(item) + 4
                elif item_kind is int:
                    if not INT_MIN <= item <= INT_MAX:
                        _check_int(item, f"{where}[{_key(key)}]")
                    size += len(key) + 12
                elif item_kind is bool or item is None:
                    size += len(key) + 12
                else:
                    self.size = size + len(key) + 4
                    self._grow(0, where)
                    self.check(item, f"{where}[{_key(key)}]", depth + 1)
                    size = self.size
        else:
            for index, item in enumerate(value):
                item_kind = type(item)
                if item_kind is str:
                    size += len(item) + 1
                elif item_kind is int:
                    if not INT_MIN <= item <= INT_MAX:
                        _check_int(item, f"{where}[{index}]")
                    size += 9
                elif item_kind is bool or item is None:
                    size += 9
                else:
                    self.size = size + 1
                    self._grow(0, where)
                    self.check(item, f"{where}[{index}]", depth + 1)
                    size = self.size
        self.size = size
        self._grow(0, where)
        self.path_ids.discard(id(value))

    def _grow(self, amount: int, where: str) -> None:
        self.size += amount
        if self.size > self.max_bytes:
            raise ResultError(f"{where}: result is over the limit of {self.max_bytes} bytes")


def _check_int(value: int, where: str) -> None:
    """Refuse an exact int the host cannot carry exactly. No str(): past 4,300 digits it
    raises, and printing a huge number costs time for nothing."""
    if not INT_MIN <= value <= INT_MAX:
        raise ResultError(f"{where}: integer outside the range JSON results carry exactly "
                          "(-2**63 to 2**64-1); return it as a string, e.g. str(n)")


def _describe(key: Any) -> str:
    """A dict key for a message: the value of a small plain scalar, else its type only."""
    kind = type(key)
    if kind in (bool, float, type(None)) or (kind is int and key.bit_length() <= 64):
        return f"{key!r} is a {kind.__name__}"
    return f"of type {_type_name(key)}"


def _key(key: str) -> str:
    """A str key for a path, clipped: keys can be as long as the result allows."""
    return repr(key) if len(key) <= _NAME_CHARS else repr(key[:_NAME_CHARS]) + "..."


def _type_name(value: Any) -> str:
    name: str = type(value).__name__
    return name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS] + "..."
