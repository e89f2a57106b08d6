"""Pydantic models at the runtime's edges; they validate untrusted input (manifests, payloads).

Strict (no coercion: "15" is not 15, true is not 1) and closed (an unknown key is an error
that names it). `Manifest.parse`, `EventPayload.parse` and `EngineConfig.parse` turn
validation failures into the runtime's errors, one problem per line, each naming its path:
``payload.region: must be one of US, EU, EUC, AUS, IND (got 'XX')``. Also here: the
deadline rule, `execution_timeout`, and `InvocationResult`, the one result of a dispatch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, Self, get_args

import orjson
from handlerbox.runtime.errors import ConfigError, ManifestError, PayloadError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

MAX_PAYLOAD_BYTES = 256 * 1024
"""A product-event payload is at most this many bytes as compact UTF-8 JSON."""

VALID_REQUEST_TIMEOUTS = (15, 20, 25, 30)
"""Request timeouts an app may declare, in seconds; 15 is the default."""

Region = Literal["US", "EU", "EUC", "AUS", "IND"]
Outcome = Literal["ok", "handler_error", "timeout", "memory_limit", "crashed",
                  "invalid_payload", "not_subscribed", "overloaded"]
REGIONS: tuple[str, ...] = get_args(Region)
OUTCOMES: tuple[str, ...] = get_args(Outcome)

_EVENT_NAME = re.compile(r"on[A-Z]\w*", re.ASCII)
_MAX_PROBLEMS = 20


# -- the deadline rule ---------------------------------------------------------------------

def execution_timeout(request_timeout: int | float | None = None,
                      override: float | None = None) -> float:
    """The execution timeout in seconds: 20 when the request timeout is unset or 15, 40 when
    it is 20, 25 or 30; any other request timeout is a ConfigError. A positive `override`
    (operators, tests, benchmarks) wins over the rule."""
    if request_timeout is None or request_timeout == 15:
        limit = 20.0
    elif request_timeout in (20, 25, 30):
        limit = 40.0
    else:
        raise ConfigError("request timeout must be 15 (default), 20, 25 or 30 seconds; "
                          f"got {_short(request_timeout)}")
    if override is None:
        return limit
    if (isinstance(override, bool) or not isinstance(override, (int, float))
            or not math.isfinite(override) or override <= 0):
        raise ConfigError("timeout override must be a positive number of seconds; "
                          f"got {_short(override)}")
    return float(override)


# -- the manifest --------------------------------------------------------------------------

def _check_event_name(name: str) -> str:
    if not _EVENT_NAME.fullmatch(name):
        raise ValueError("is not an event name: it must be 'on', a capital letter, then "
                         "letters, digits or '_' (like onCallCreate)")
    return name


def _check_handler_name(name: str) -> str:
    if not name.isidentifier() or name.startswith("_"):
        raise ValueError("must be a Python identifier that does not start with '_' "
                         f"(got {_short(name)})")
    return name


def _check_request_timeout(value: int | None) -> int | None:
    try:
        execution_timeout(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return value


class _EdgeModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class EventSpec(_EdgeModel):
    """One subscription in manifest.json: the handler that serves the event."""

    handler: Annotated[str, AfterValidator(_check_handler_name)]


class Manifest(_EdgeModel):
    """manifest.json: `{"events": {"onCallCreate": {"handler": "onCallCreateHandler"}}}`,
    plus an optional `request_timeout` (15, 20, 25 or 30 s) that sets the deadline."""

    events: dict[Annotated[str, AfterValidator(_check_event_name)], EventSpec] = Field(
        min_length=1)
    request_timeout: Annotated[int | None, AfterValidator(_check_request_timeout)] = None

    @classmethod
    def parse(cls, obj: Any, filename: str = "manifest.json") -> Manifest:
        """Validate a decoded manifest, or raise ManifestError naming the file and each
        problem's key path."""
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            known = {0: cls.model_fields, 2: EventSpec.model_fields}
            problems = [f"{filename}: {p}" for p in _problems(exc, "", known)]
            raise ManifestError("\n".join(problems), problems) from None

    @classmethod
    def parse_json(cls, text: str | bytes, filename: str = "manifest.json") -> Manifest:
        """Decode and validate manifest.json's text (duplicate keys are errors too)."""
        try:
            obj = _load_json(text, filename)
        except ValueError as exc:
            raise ManifestError(str(exc)) from None
        return cls.parse(obj, filename)


# -- the event payload ---------------------------------------------------------------------

NonEmpty = Annotated[str, Field(min_length=1)]


class EventPayload(_EdgeModel):
    """A product event's payload: `{account_id, domain, event, region, timestamp, data,
    iparams}`, at most MAX_PAYLOAD_BYTES as compact JSON. Build it with `parse`."""

    account_id: NonEmpty
    domain: NonEmpty
    event: NonEmpty
    region: Region
    timestamp: int
    data: dict[str, Any]
    iparams: dict[str, Any] = Field(default_factory=dict)

    _json: bytes = PrivateAttr(default=b"")

    @classmethod
    def parse(cls, obj: Any) -> EventPayload:
        """Validate a payload dict (an EventPayload passes through) and check it encodes as
        JSON within the size limit, or raise PayloadError naming every bad field path."""
        payload = obj
        if not isinstance(payload, cls):
            try:
                payload = cls.model_validate(obj)
            except ValidationError as exc:
                problems = _problems(exc, "payload", {0: cls.model_fields})
                raise PayloadError("\n".join(problems), problems) from None
        payload.json_bytes()
        return payload

    @classmethod
    def parse_json(cls, raw: str | bytes, source: str = "payload") -> EventPayload:
        """Decode and validate a payload from JSON text (a file, a request body)."""
        if len(raw) > 4 * MAX_PAYLOAD_BYTES:
            raise PayloadError(f"{source}: is {len(raw)} bytes, over the limit of "
                               f"{MAX_PAYLOAD_BYTES} bytes (256 KB) as compact JSON")
        try:
            obj = _load_json(raw, source)
        except ValueError as exc:
            raise PayloadError(str(exc)) from None
        return cls.parse(obj)

    def json_bytes(self) -> bytes:
        """The payload as compact UTF-8 JSON (computed once); PayloadError if it is not
        plain JSON or is over MAX_PAYLOAD_BYTES."""
        if not self._json:
            envelope = self.model_dump(exclude={"data", "iparams"})
            envelope.update(data=self.data, iparams=self.iparams)
            try:
                encoded = _compact(envelope)
            except (TypeError, ValueError, RecursionError) as exc:
                raise PayloadError(_not_json(envelope, exc)) from None
            if len(encoded) > MAX_PAYLOAD_BYTES:
                raise PayloadError(f"payload: is {len(encoded)} bytes as compact JSON, over "
                                   f"the limit of {MAX_PAYLOAD_BYTES} bytes (256 KB)")
            self._json = encoded
        return self._json


_PAYLOAD_KEYS = frozenset(("account_id", "domain", "event", "region", "timestamp", "data",
                           "iparams"))


def payload_json_fast(payload: Any) -> tuple[str, bytes] | None:
    """(event, compact JSON) for a payload that is certainly valid, else None.

    The dispatch hot path: a handful of exact type checks instead of a model validation, for
    a plain dict or for JSON bytes (decoded by orjson, so no NaN or Infinity got in). It
    accepts only what EventPayload.parse accepts; anything unusual returns None and goes
    through EventPayload, which explains what is wrong."""
    if isinstance(payload, (bytes, bytearray)):
        if len(payload) > 4 * MAX_PAYLOAD_BYTES:
            return None
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not _plainly_valid(obj):
            return None
        encoded = orjson.dumps(obj if "iparams" in obj else {**obj, "iparams": {}})
    else:
        if not _plainly_valid(payload):
            return None
        try:
            encoded = _compact(payload if "iparams" in payload else {**payload, "iparams": {}})
        except (TypeError, ValueError, RecursionError):
            return None
    if len(encoded) > MAX_PAYLOAD_BYTES:
        return None
    return str(obj["event"] if isinstance(payload, (bytes, bytearray)) else payload["event"]
               ), encoded


def _plainly_valid(obj: Any) -> bool:
    """The payload's shape with exact types, as the strict model demands."""
    if type(obj) is not dict or not obj.keys() <= _PAYLOAD_KEYS or len(obj) < 6:
        return False
    for name in ("account_id", "domain", "event"):
        value = obj.get(name)
        if type(value) is not str or not value:
            return False
    iparams = obj.get("iparams", {})
    data = obj.get("data")
    return (obj.get("region") in REGIONS and type(obj.get("timestamp")) is int
            and type(data) is dict and type(iparams) is dict
            and all(type(k) is str for k in data) and all(type(k) is str for k in iparams))


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""Made once: json.dumps with options builds a new encoder per call. (Not orjson here: it
would turn a NaN in the payload into null instead of refusing it.)"""


def _compact(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def _not_json(envelope: dict[str, Any], exc: BaseException) -> str:
    """Name the first field that does not encode, with the encoder's reason."""
    for name, value in envelope.items():
        try:
            _compact(value)
        except (TypeError, ValueError, RecursionError) as field_exc:
            return f"payload.{name}: is not plain JSON ({_reason(field_exc)})"
    return f"payload: is not plain JSON ({_reason(exc)})"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeEncodeError):
        return "a string holds a lone surrogate, which is not valid Unicode text"
    return str(exc)[:200]


# -- engine configuration ------------------------------------------------------------------

class EngineConfig(_EdgeModel):
    """The engine's settings; immutable once built.

        config = EngineConfig(workers=4, memory_limit_mb=512, require=["seccomp", "landlock"])
        with Engine(config=config) as engine: ...
        EngineConfig.parse({"workers": 0})   # ConfigError: config.workers: must be at least 1

    `workers` is the global worker budget that all loaded apps share; `require` names
    isolation layers (runtime.isolation.LAYERS) without which the engine refuses to start;
    `isolation=False` turns the optional layers off (benchmarks measure their cost).
    """

    workers: int = Field(default=2, ge=1)
    memory_limit_mb: int = Field(default=256, ge=16)
    max_log_bytes: int = Field(default=64 * 1024, ge=0)
    max_result_bytes: int = Field(default=1024 * 1024, ge=16)
    recycle_after: int = Field(default=1000, ge=1)
    max_queue: int = Field(default=1000, ge=0)
    max_queue_per_app: int = Field(default=100, ge=0)
    require: list[NonEmpty] = Field(default_factory=list)
    isolation: bool = True
    worker_cpu_seconds: int = Field(default=600, ge=1)
    recycle_rss_mb: int = Field(default=192, ge=1)

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> EngineConfig:
        """Validate settings, or raise ConfigError naming each bad one."""
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise ConfigError("\n".join(_problems(exc, "config", {0: cls.model_fields}))
                              ) from None


# -- results -------------------------------------------------------------------------------

class ErrorInfo(_EdgeModel):
    """What went wrong: the exception type, its message, the handler-only traceback."""

    type: str
    message: str
    traceback: str = ""


class InvocationResult(_EdgeModel):
    """The one result of a dispatch. `value` is the handler's JSON value on `ok` and None
    otherwise; `timeout_s` is the limit that was in force."""

    outcome: Outcome
    app: str
    event: str
    handler: str | None = None
    value: Any = None
    error: ErrorInfo | None = None
    logs: str = ""
    duration_ms: float = Field(default=0.0, ge=0)
    cpu_ms: float | None = Field(default=None, ge=0)
    max_rss_kb: int | None = Field(default=None, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)
    worker_pid: int | None = None

    @model_validator(mode="after")
    def _one_of_value_or_error(self) -> Self:
        if self.outcome == "ok" and self.error is not None:
            raise ValueError("an ok result carries no error")
        if self.outcome != "ok" and self.value is not None:
            raise ValueError(f"a {self.outcome} result carries no value")
        return self

    @property
    def ok(self) -> bool:
        """True when the handler returned a value."""
        return self.outcome == "ok"


# -- helpers: JSON decoding and error messages ---------------------------------------------

def _load_json(text: str | bytes, where: str) -> Any:
    """json.loads that refuses NaN/Infinity and duplicate keys; ValueError names `where`."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in items:
            if key in found:
                raise ValueError(f"{where}: duplicate key {_short(key)}")
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


def _problems(exc: ValidationError, root: str,
              known: Mapping[int, Iterable[str]]) -> list[str]:
    """One `path: problem` line per error; `known` lists the keys allowed at each depth."""
    lines = []
    for err in exc.errors(include_url=False)[:_MAX_PROBLEMS]:
        loc, text = tuple(err["loc"]), _describe(err)
        if err["type"] == "extra_forbidden":
            key, loc = loc[-1], loc[:-1]
            allowed = ", ".join(known.get(len(loc), ()))
            text = f"unknown key {_short(key)}" + (f" (allowed: {allowed})" if allowed else "")
        elif loc and loc[-1] == "[key]":
            loc, text = loc[:-2], f"key {_short(loc[-2])} {text}"
        path = _path(root, loc)
        lines.append(f"{path}: {text}" if path else text)
    if exc.error_count() > _MAX_PROBLEMS:
        lines.append(f"... and {exc.error_count() - _MAX_PROBLEMS} more problems")
    return lines


def _describe(err: Mapping[str, Any]) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]} (got {_json_type(value)})"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return f"must be one of {choices} (got {_short(value)})"
    if kind in ("string_too_short", "too_short"):
        return "must not be empty"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')} (got {_short(value)})"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')} (got {_short(value)})"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    msg = str(err.get("msg", kind))
    return msg[:1].lower() + msg[1:]


def _path(root: str, loc: Iterable[Any]) -> str:
    path = root
    for part in loc:
        if isinstance(part, str) and part.isidentifier():
            path = f"{path}.{part}" if path else part
        else:
            path += f"[{_short(part)}]"
    return path


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    names = {int: "integer", float: "number", str: "string", list: "array", tuple: "array",
             dict: "object", type(None): "null"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    """repr() cut to `limit` characters: messages quote untrusted input."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not escape
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
