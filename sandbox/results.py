"""Turns a handler's return value into JSON bytes; the value is untrusted.

Plain JSON only: None, bool, int, finite float, str, list/tuple, and dict with str keys,
no cycles, at most `max_depth` deep and `max_bytes` long. Anything else is a ResultError that
says what the value is and where it sits: `value['items'][3]: set is not JSON`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from handlerbox.sandbox.errors import ResultError

MAX_DEPTH = 100

_SCALARS = (str, int, bool, type(None))
_PLAIN_NUMBERS = (int, bool)  # floats go through check(): NaN and Infinity are refused


def to_json_bytes(value: Any, max_bytes: int, max_depth: int = MAX_DEPTH) -> bytes:
    """Validate `value` as plain bounded JSON and encode it compactly as UTF-8."""
    _Checker(max_bytes, max_depth).check(value, "value", 0)
    try:
        # The checker has refused NaN, Infinity, non-str keys, cycles and depth already.
        encoded = orjson.dumps(value)
    except TypeError:  # ints beyond 64 bits, lone surrogates: the slower stdlib decides
        try:
            encoded = json.dumps(value, ensure_ascii=False, allow_nan=False,
                                 separators=(",", ":")).encode("utf-8")
        except (ValueError, TypeError, RecursionError) as exc:  # e.g. a 5000-digit int
            raise ResultError(f"value: cannot be encoded as JSON ({exc})") from None
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
                    raise ResultError(f"{where}: key {key!r} is a {_type_name(key)}, "
                                      "JSON object keys must be strings")
                item_kind = type(item)
                if item_kind is str:
                    size += len(key) + len(item) + 4
                elif item_kind in _PLAIN_NUMBERS or item is None:
                    size += len(key) + 12
                else:
                    self.size = size + len(key) + 4
                    self._grow(0, where)
                    self.check(item, f"{where}[{key!r}]", depth + 1)
                    size = self.size
        else:
            for index, item in enumerate(value):
                item_kind = type(item)
                if item_kind is str:
                    size += len(item) + 1
                elif item_kind in _PLAIN_NUMBERS or item is None:
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


def _type_name(value: Any) -> str:
    return type(value).__name__
