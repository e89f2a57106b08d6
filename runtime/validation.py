"""Shared by the edge models: strict JSON decoding and one-line-per-problem error messages.

Touches untrusted input (manifests, payloads, request bodies): JSON is decoded without NaN or
duplicate keys, and every message quotes input through `short`, clipped and never repr'd raw.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_PROBLEMS = 20


class EdgeModel(BaseModel):
    """Strict (no coercion: "15" is not 15, true is not 1), closed (an unknown key is an error
    that names it) and immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


NonEmpty = Annotated[str, Field(min_length=1)]

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""Made once: json.dumps with options builds a new encoder per call. (Not orjson here: it
would turn a NaN into null instead of refusing it.)"""


def compact(value: Any) -> bytes:
    """Compact UTF-8 JSON; ValueError for NaN, TypeError for what is not JSON."""
    return _ENCODER.encode(value).encode("utf-8")


def load_json(text: str | bytes, where: str) -> Any:
    """json.loads that refuses NaN/Infinity and duplicate keys; ValueError names `where`."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in items:
            if key in found:
                raise ValueError(f"{where}: duplicate key {short(key)}")
            found[key] = value
        return found

    def constant(name: str) -> Any:
        raise ValueError(f"{where}: {name} is not valid JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
                         ) from None
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not valid UTF-8 text") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply") from None


_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "float_type": "a number",
    "bool_type": "a boolean", "list_type": "an array", "dict_type": "an object",
    "model_type": "an object", "model_attributes_type": "an object",
}


def problems(exc: ValidationError, root: str,
              known: Mapping[int, Iterable[str]]) -> list[str]:
    """One `path: problem` line per error; `known` lists the keys allowed at each depth."""
    lines = []
    for err in exc.errors(include_url=False)[:MAX_PROBLEMS]:
        loc, text = tuple(err["loc"]), describe(err)
        if err["type"] == "extra_forbidden":
            key, loc = loc[-1], loc[:-1]
            allowed = ", ".join(known.get(len(loc), ()))
            text = f"unknown key {short(key)}" + (f" (allowed: {allowed})" if allowed else "")
        elif loc and loc[-1] == "[key]":
            loc, text = loc[:-2], f"key {short(loc[-2])} {text}"
        where = path(root, loc)
        lines.append(f"{where}: {text}" if where else text)
    if exc.error_count() > MAX_PROBLEMS:
        lines.append(f"... and {exc.error_count() - MAX_PROBLEMS} more problems")
    return lines


def describe(err: Mapping[str, Any]) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]} (got {json_type(value)})"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return f"must be one of {choices} (got {short(value)})"
    if kind in ("string_too_short", "too_short"):
        return "must not be empty"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')} (got {short(value)})"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')} (got {short(value)})"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    msg = str(err.get("msg", kind))
    return msg[:1].lower() + msg[1:]


def path(root: str, loc: Iterable[Any]) -> str:
    joined = root
    for part in loc:
        if isinstance(part, str) and part.isidentifier():
            joined = f"{joined}.{part}" if joined else part
        else:
            joined += f"[{short(part)}]"
    return joined


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    names = {int: "integer", float: "number", str: "string", list: "array", tuple: "array",
             dict: "object", type(None): "null"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def short(value: Any, limit: int = 60) -> str:
    """repr() cut to `limit` characters: messages quote untrusted input."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not escape
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."

